r"""The :class:`Source` interface every input format implements, and the naming rules they share.

A source is one shard (a file, or an Arrow dataset directory) of N objects, read by row range. Its columns are keyed
``(survey, canonical)``: ``canonical`` is the column's name in the Multimodal Universe (MMU) native HDF5 release
(``image_array``, ``spectrum_flux``, ``object_id``, ``FLUX_G``, ``coeff``, ...), ``survey`` is the survey a
survey-prefixed column of a cross-matched file belongs to (``legacysurvey_FLUX_G`` -> ``("legacysurvey",
"FLUX_G")``) and None for an unprefixed column (whose survey, when known, is :attr:`Source.survey`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

__all__ = [
    "ALIASES",
    "COLUMN_NOTES",
    "CONFIG_SURVEYS",
    "SURVEYS",
    "Column",
    "Source",
    "locate",
    "note_for",
    "split_prefix",
]

#: Surveys of the MMU release (the folder names of its survey roots).
SURVEYS = ("legacysurvey", "hsc", "desi", "sdss", "gaia", "ssl_legacysurvey")

#: MMU builder config (sub-sample folder) name -> survey. ``sdss`` is both a survey and one of its configs.
CONFIG_SURVEYS = {
    "dr10_south_21": "legacysurvey",
    "pdr3_dud_22.5": "hsc",
    "pdr3_wide_21": "hsc",
    "edr_sv3": "desi",
    "dr1_main": "desi",
    "sdss": "sdss",
    "segue1": "sdss",
    "segue2": "sdss",
    "boss": "sdss",
    "eboss": "sdss",
    "gaia_dr3": "gaia",
    "stein_et_al": "ssl_legacysurvey",
    "stein_et_al_north": "ssl_legacysurvey",
}

#: Column prefixes of cross-matched files -> the survey (or catalogue) they name, longest first so that
#: ``ssl_legacysurvey_`` is not read as ``ssl_`` + ..., nor ``gaia_dr3_`` as ``gaia_``.
_PREFIXES = sorted(
    [(f"{s}_", s) for s in SURVEYS] + [(f"{c}_", s) for c, s in CONFIG_SURVEYS.items()] + [("provabgs_", "provabgs")],
    key=lambda item: -len(item[0]),
)

#: Other names of canonical columns: the AION tutorial files call the image ``<survey>_image_flux``, the HF builders
#: call the RGB cut-out ``rgb``.
ALIASES = {"image_flux": "image_array", "rgb": "image_rgb"}

#: What a canonical column holds, printed by :func:`~aion_fast.data.formats.describe` (units, polarity, sentinels,
#: as the MMU build scripts write them).
COLUMN_NOTES = {
    "image_array": "image cut-out (C, H, W); Legacy Survey in nanomaggies",
    "image_band": "band name per channel, bytes (b'des-g', b'hsc-g', ...)",
    "image_mask": "True = good pixel (MMU HDF5 and HF features alike); (H, W) shared or (C, H, W) per band",
    "image_ivar": "inverse variance per pixel",
    "image_psf_fwhm": "PSF FWHM per band, arcsec",
    "image_scale": "pixel scale per band, arcsec/pixel",
    "image_rgb": "RGB JPEG cut-out (H, W, 3) uint8",
    "blobmodel": "Tractor blob model RGB cut-out (H, W, 3) uint8",
    "object_mask": "segmentation map uint8: 0 sky, 1 PSF, 2 REX, 3 EXP, 4 DEV, 5 SER, 6 DUP",
    "spectrum_flux": "spectrum, 1e-17 erg/s/cm2/A",
    "spectrum_ivar": "inverse variance; 0 where there is no data (and in SDSS padding)",
    "spectrum_lambda": "wavelength, A; -1 = SDSS padding after the last pixel",
    "spectrum_mask": "True = bad pixel (and SDSS padding)",
    "spectrum_lsf_sigma": "line-spread-function sigma, pixels",
    "coeff": "Gaia XP coefficients: 55 BP then 55 RP",
    "bp_coefficients": "Gaia XP BP coefficients (55)",
    "rp_coefficients": "Gaia XP RP coefficients (55)",
    "object_id": "object id",
    "source_id": "Gaia DR3 source_id",
    "TARGETID": "DESI target id",
    "SPECOBJID": "SDSS spectrum id (bytes)",
    "ra": "right ascension, degrees",
    "dec": "declination, degrees",
    "RA": "right ascension, degrees",
    "DEC": "declination, degrees",
    "Z": "redshift",
    "ZWARN": "redshift warning bit mask, 0 = no warning",
    "ZWARNING": "redshift warning bit mask, 0 = no warning",
    "parallax": "parallax, mas",
}
_NOTE_PATTERNS = [
    (re.compile(r"^catalog_"), "20 brightest objects in the cut-out, zero-padded"),
    (re.compile(r"^FLUX_(G|R|I|Z|W\d)$"), "Legacy Survey flux, nanomaggies (DESI files: targeting photometry)"),
    (re.compile(r"^phot_(g|bp|rp)_mean_flux$"), "Gaia mean flux, e-/s"),
    (re.compile(r"^[grizy]_cmodel_mag$"), "HSC cmodel magnitude"),
]


def note_for(canonical: str, dtype: np.dtype | None = None) -> str:
    """The :data:`COLUMN_NOTES` entry of a canonical column ('' if none); ``dtype`` tells the HF builders' boolean
    redshift warnings from the release's bit masks."""
    if dtype is not None and np.dtype(dtype) == bool and canonical in ("ZWARN", "ZWARNING"):
        return (
            "HF builder bool: True = NO redshift warning (stores `not ZWARN`)"
            if canonical == "ZWARN"
            else "HF builder bool: True = redshift warning"
        )
    if canonical in COLUMN_NOTES:
        return COLUMN_NOTES[canonical]
    for pattern, note in _NOTE_PATTERNS:
        if pattern.match(canonical):
            return note
    return ""


def _strip_prefix(name: str) -> tuple[str | None, str]:
    for prefix, prefix_survey in _PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            return prefix_survey, name[len(prefix) :]
    return None, name


def split_prefix(name: str) -> tuple[str | None, str]:
    """``legacysurvey_image_flux`` -> ``("legacysurvey", "image_array")``; unprefixed names -> ``(None, name)``."""
    survey, rest = _strip_prefix(name)
    return survey, ALIASES.get(rest, rest)


Column = tuple[str | None, str]

_HUB_DIR = re.compile(r"^datasets--MultimodalUniverse--(?P<survey>[A-Za-z_]+)$")


def locate(path: str | os.PathLike) -> tuple[str | None, str]:
    """The survey a shard path belongs to and its name relative to the survey root.

    The survey root is the deepest path component named after a survey (``legacysurvey/...``), or a hub cache folder
    ``datasets--MultimodalUniverse--<survey>``; failing that, a builder config folder (``dr10_south_21/...``), named
    as ``<survey>/<config>/...``. Without either, the name starts at the folder above ``healpix=N`` when there is one
    (so files of two healpix or config folders never share a name), else at the file's own folder.

    Returns:
        ``(survey or None, relative name with "/" separators)``.
    """
    parts = Path(os.path.abspath(path)).parts
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] in SURVEYS:
            return parts[i], "/".join(parts[i:])
        hub = _HUB_DIR.match(parts[i])
        if hub and hub["survey"] in SURVEYS:
            # hub cache: datasets--MultimodalUniverse--<survey>/snapshots/<hash>/<config>/...
            rest = parts[i + 3 :] if len(parts) > i + 3 and parts[i + 1] == "snapshots" else parts[i + 1 :]
            return hub["survey"], "/".join((hub["survey"], *rest))
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] in CONFIG_SURVEYS:
            survey = CONFIG_SURVEYS[parts[i]]
            return survey, "/".join((survey, *parts[i:]))
    for i in range(len(parts) - 2, -1, -1):
        if parts[i].startswith("healpix="):
            return None, "/".join(parts[max(i - 1, 0) :])
    return None, "/".join(parts[-2:])


class Source:
    """One shard opened for row-range reads (a context manager).

    Attributes:
        path: the file or directory read.
        format: registry name (``"mmu-hdf5"``, ``"mmu-parquet"``, ``"mmu-arrow"``, ``"aion-tutorial-hdf5"``,
            ``"aion-tutorial-fits"``).
        num_rows: objects in the shard.
        survey: survey of the unprefixed columns, from the path or the content; None if unknown or mixed.
        relative_name: path relative to the survey root (see :func:`locate`).
        columns: ``(survey or None, canonical name)`` -> raw column name in the file (a dotted path for nested
            Parquet/Arrow fields, e.g. ``"image.flux"``).
        shared: columns whose survey the file cannot tell, with the surveys it may be (a cross-match stores a
            name both builders declare once: ``{(None, "FLUX_G"): ("legacysurvey", "desi")}``); empty elsewhere.
    """

    path: str
    format: str
    num_rows: int
    survey: str | None
    relative_name: str
    columns: dict[Column, str]
    shared: Mapping[Column, tuple[str, ...]] = MappingProxyType({})

    def read(self, column: Column, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` of one column: shape ``(stop - start, *row_shape)``; values and dtypes as stored
        (byte strings stay bytes, big-endian allowed); string columns of Parquet/Arrow come back as fixed-width
        bytes like MMU HDF5's, ``b'...'`` literals decoded."""
        raise NotImplementedError

    def row_shape(self, column: Column) -> tuple[int, ...]:
        """Shape of one row of a column; -1 on an axis whose length varies between rows (SDSS spectra in Parquet)."""
        raise NotImplementedError

    def chunk_rows(self) -> int:
        """Rows per HDF5 chunk / Parquet row group / Arrow record batch of the widest column (1 if unchunked)."""
        return 1

    def close(self) -> None:
        """Releases the file handles."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, format={self.format!r}, rows={self.num_rows})"

    def keys(self, canonical: str) -> list[Column]:
        """Every column key whose canonical name is ``canonical`` (one per survey carrying it)."""
        return [key for key in self.columns if key[1] == canonical]

    def _check_range(self, column: Column, start: int, stop: int) -> str:
        if column not in self.columns:
            raise KeyError(f"{self.path}: no column {column}; it has {sorted(self.columns, key=str)}")
        if not 0 <= start <= stop <= self.num_rows:
            raise ValueError(f"{self.path}: rows [{start}, {stop}) are outside [0, {self.num_rows}).")
        return self.columns[column]


def unique_keys(raw_names: Sequence[str]) -> dict[Column, str]:
    """Raw column names -> ``{(survey, canonical): raw}`` by prefix; when two raw names give one key, the one
    spelled as the canonical name wins over an alias (``image_array`` over ``image_flux``)."""
    columns: dict[Column, str] = {}
    for name in sorted(raw_names, key=lambda n: _strip_prefix(n)[1] in ALIASES):
        columns.setdefault(split_prefix(name), name)
    return columns
