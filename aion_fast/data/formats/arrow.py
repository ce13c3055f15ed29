r"""``mmu-arrow``: a ``datasets`` dataset saved with ``save_to_disk``, such as the output of MMU's
``cross_match_datasets`` (``experimental_benchmark/cross_match.py``).

On disk: a directory with ``dataset_info.json`` (features, description), ``state.json`` (``_data_files``: the
``data-0000K-of-0000N.arrow`` files, Arrow IPC *stream* format) and the data files. Read memory-mapped, one record
batch range at a time.

Columns of a cross-match are the two HF builders' features, UNPREFIXED (the generator merges the two examples with
``dict.update``, so on a name clash such as ``object_id``, ``EBV`` or ``FLUX_G`` the right-hand dataset's value is
the one stored). Each column is given to the survey whose builder declares it, the right-hand one first; the two
surveys come from the description ``"Cross-matched dataset between <builder>:<config> and <builder>:<config>"``.
Columns written with a survey or config prefix (``desi_Z``, ``dr10_south_21_object_id``) are read by prefix.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np

from aion_fast.data.formats.base import CONFIG_SURVEYS, SURVEYS, Column, locate, split_prefix
from aion_fast.data.formats.nested import Leaf, NestedSource, flatten_schema, leaf_to_numpy, select

__all__ = ["ArrowDirSource", "BUILDER_FEATURES", "is_arrow_dir"]

_FLUX = ("FLUX_G", "FLUX_R", "FLUX_Z")
#: Top-level features of each MMU HF builder (``scripts/<survey>/<survey>.py``).
BUILDER_FEATURES: dict[str, frozenset[str]] = {
    "legacysurvey": frozenset(
        (
            "image",
            "blobmodel",
            "rgb",
            "object_mask",
            "catalog",
            "EBV",
            *_FLUX,
            "FLUX_I",
            "FLUX_W1",
            "FLUX_W2",
            "FLUX_W3",
            "FLUX_W4",
            "SHAPE_R",
            "SHAPE_E1",
            "SHAPE_E2",
            "object_id",
        )
    ),
    "hsc": frozenset(
        ("image", "object_id")
        + tuple(f"a_{b}" for b in "grizy")
        + tuple(f"{b}_{k}" for b in "grizy" for k in ("extendedness_value", "cmodel_mag", "cmodel_magerr"))
        + tuple(f"{b}_sdssshape_{p}shape{ij}" for b in "grizy" for p in ("", "psf_") for ij in ("11", "22", "12"))
    ),
    "desi": frozenset(
        (
            "spectrum",
            "Z",
            "ZERR",
            "EBV",
            *_FLUX,
            *(f"FLUX_IVAR_{b}" for b in "GRZ"),
            *(f"FIBERFLUX_{b}" for b in "GRZ"),
            *(f"FIBERTOTFLUX_{b}" for b in "GRZ"),
            "ZWARN",
            "object_id",
        )
    ),
    "sdss": frozenset(
        (
            "spectrum",
            "VDISP",
            "VDISP_ERR",
            "Z",
            "Z_ERR",
            "ZWARNING",
            "object_id",
            *(
                f"{f}_{b}"
                for f in ("SPECTROFLUX", "SPECTROFLUX_IVAR", "SPECTROSYNFLUX", "SPECTROSYNFLUX_IVAR")
                for b in "UGRIZ"
            ),
        )
    ),
    "gaia": frozenset(
        (
            "spectral_coefficients",
            "photometry",
            "astrometry",
            "radial_velocity",
            "gspphot",
            "flags",
            "corrections",
            "object_id",
            "healpix",
            "ra",
            "dec",
        )
    ),
    "ssl_legacysurvey": frozenset(
        (
            "image",
            "ebv",
            "flux_g",
            "flux_r",
            "flux_z",
            "fiberflux_g",
            "fiberflux_r",
            "fiberflux_z",
            "psfdepth_g",
            "psfdepth_r",
            "psfdepth_z",
            "z_spec",
            "object_id",
        )
    ),
}

_CROSS = re.compile(r"Cross-matched dataset between (\S+?):(\S*) and (\S+?):(\S*?)\.?(\s|$)")


def is_arrow_dir(path: str) -> bool:
    """True if ``path`` is a ``save_to_disk`` dataset directory (``dataset_info.json`` and ``state.json``)."""
    return os.path.isfile(os.path.join(path, "state.json")) and os.path.isfile(os.path.join(path, "dataset_info.json"))


def _survey_of(builder: str, config: str) -> str | None:
    if builder in SURVEYS:
        return builder
    return CONFIG_SURVEYS.get(config)


#: Features only one builder declares: which surveys a dataset holds, when its description does not say.
_OWN_FEATURES = {
    survey: features - frozenset().union(*(other for s, other in BUILDER_FEATURES.items() if s != survey))
    for survey, features in BUILDER_FEATURES.items()
}


def _surveys_present(schema, description: str) -> list[str]:
    """The surveys whose builders wrote a dataset: from a cross-match description if there is one (left, right),
    else from the features only one builder declares (``image`` is told apart by the rest: Legacy Survey's
    ``catalog``, HSC's ``a_g``, ``ssl_legacysurvey``'s ``psfdepth_g``)."""
    match = _CROSS.search(description)
    if match:
        pair = [_survey_of(match[1], match[2]), _survey_of(match[3], match[4])]
        if all(pair) and pair[0] != pair[1]:
            return pair
    names = set(schema.names)
    return [survey for survey in SURVEYS if names & _OWN_FEATURES[survey]]


class ArrowDirSource(NestedSource):
    """One ``save_to_disk`` dataset directory."""

    format = "mmu-arrow"

    def __init__(self, path: str | os.PathLike):
        import pyarrow as pa

        self.path = str(path)
        with open(os.path.join(self.path, "state.json")) as handle:
            state = json.load(handle)
        with open(os.path.join(self.path, "dataset_info.json")) as handle:
            info = json.load(handle)
        files = [entry["filename"] for entry in state.get("_data_files", [])]
        if not files:
            raise ValueError(f"{self.path}: state.json lists no _data_files; not a saved dataset.")
        batches, schema = [], None
        # The maps stay open while the source is: the record batches point into them (zero copy).
        self._maps = [pa.memory_map(os.path.join(self.path, name)) for name in files]
        for source in self._maps:
            reader = pa.ipc.open_stream(source)
            schema = schema or reader.schema
            batches.extend(reader)
        # Memory-mapped record batches: slicing reads only the pages touched.
        self._table = pa.Table.from_batches(batches, schema=schema)
        self.num_rows = self._table.num_rows
        self._batch_rows = max((len(b) for b in batches), default=1)
        survey, name = locate(os.path.join(self.path, "x"))
        self.relative_name = name[: -len("/x")] if name.endswith("/x") else os.path.basename(os.path.abspath(self.path))
        self.shared: dict[Column, tuple[str, ...]] = {}
        self._leaves: dict[Column, Leaf] = {}
        present = _surveys_present(schema, info.get("description") or "")
        if len(present) == 2:
            # A cross-match: each column goes to the one builder declaring it; one declared by both holds the
            # right-hand dataset's value, and which dataset was on the right is in no file (the description
            # cross_match_datasets passes is not saved), so it is keyed (None, name) and listed in `shared`.
            self.survey = None
            for field in schema:
                prefixed, _ = split_prefix(field.name)
                owners = (prefixed,) if prefixed else tuple(s for s in present if field.name in BUILDER_FEATURES[s])
                owner = owners[0] if len(owners) == 1 else None
                for leaf in flatten_schema(pa.schema([field]), owner):
                    _, canonical = split_prefix(leaf.canonical)
                    key = (owner, canonical)
                    self._leaves.setdefault(key, leaf)
                    if len(owners) > 1:
                        self.shared[key] = owners
        else:
            self.survey = present[0] if present else survey
            for leaf in flatten_schema(schema, self.survey):
                prefix, canonical = split_prefix(leaf.canonical)
                self._leaves.setdefault((prefix, canonical), leaf)
        self.columns = {key: leaf.raw for key, leaf in self._leaves.items()}
        self._shapes: dict[Column, tuple[int, ...]] = {}

    def close(self) -> None:
        self._table = None
        for source in self._maps:
            source.close()

    def read(self, column: Column, start: int, stop: int) -> np.ndarray:
        self._check_range(column, start, stop)
        leaf = self._leaves[column]
        array = select(self._table.column(leaf.top).slice(start, stop - start), leaf)
        return leaf_to_numpy(array, leaf)

    def chunk_rows(self) -> int:
        return self._batch_rows
