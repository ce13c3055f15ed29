r"""HDF5 shards: the MMU native release and the AION tutorials' cross-matched columns written as HDF5.

* ``mmu-hdf5``: one survey's objects as parallel top-level datasets of N rows, as the MMU build scripts write them
  (``<survey>/<config>/healpix=N/001-of-001.hdf5``; big-endian FITS dtypes and fixed-length byte strings kept).
  Cross-matched files whose columns carry a survey prefix (``desi_spectrum_flux``) are read the same way.
* ``aion-tutorial-hdf5``: the column set of the AION tutorials (``legacysurvey_image_flux``, ``desi_spectrum_*``,
  ``legacysurvey_FLUX_*``, ``desi_Z``, ``provabgs_*``, ``gaia_bp_coefficients``), as HDF5 datasets.

Reads are h5py hyperslabs of rows ``[start, stop)``; one h5py Dataset object is kept per column.
"""

from __future__ import annotations

import os

import numpy as np

from aion_fast.data.formats.base import Column, Source, locate, unique_keys

__all__ = ["HDF5Source", "is_hdf5", "is_tutorial_columns"]

_SIGNATURE = b"\x89HDF\r\n\x1a\n"

#: Columns only the AION tutorial files have (an image called ``*_image_flux``, ProVABGS columns, Z_HP).
_TUTORIAL_MARKERS = ("_image_flux", "provabgs_", "Z_HP", "gaia_bp_coefficients", "gaia_rp_coefficients")


def is_hdf5(path: str) -> bool:
    """True if ``path`` is a file starting with the HDF5 signature (at 0 or after a 512·2^k-byte user block)."""
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as handle:
        offset = 0
        while True:
            handle.seek(offset)
            head = handle.read(8)
            if head == _SIGNATURE:
                return True
            if len(head) < 8:
                return False
            offset = 512 if offset == 0 else offset * 2


def is_tutorial_columns(names: list[str]) -> bool:
    """True if a column set is the AION tutorials' (survey-prefixed modality columns, ProVABGS, Z_HP)."""
    return any(marker in name for name in names for marker in _TUTORIAL_MARKERS)


# Column names only one survey's build script writes, for files outside a survey folder.
_SURVEY_MARKERS = [
    ("legacysurvey", ("object_mask", "catalog_FLUX_G", "BRICKNAME", "blobmodel")),
    ("ssl_legacysurvey", ("psfdepth_g", "fiberflux_g", "inds")),
    ("hsc", ("i_cmodel_mag", "a_g", "tract")),
    ("desi", ("TARGETID", "TARGET_RA")),
    ("sdss", ("SPECOBJID", "PLUG_RA")),
    ("gaia", ("source_id", "coeff", "bp_coefficients", "phot_g_mean_flux")),
]


def survey_from_columns(names: list[str]) -> str | None:
    """The survey whose build script writes one of these column names (None if none matches)."""
    present = set(names)
    for survey, markers in _SURVEY_MARKERS:
        if present.intersection(markers):
            return survey
    return None


class HDF5Source(Source):
    """An HDF5 shard of parallel top-level datasets (``mmu-hdf5`` or ``aion-tutorial-hdf5``)."""

    def __init__(self, path: str | os.PathLike, format_name: str | None = None):
        import h5py

        self.path = str(path)
        self._h5 = h5py.File(self.path, "r")
        try:
            # One Dataset object per column, kept: each `file[name]` lookup costs tens of microseconds.
            self._datasets = {
                name: obj for name, obj in self._h5.items() if isinstance(obj, h5py.Dataset) and obj.ndim > 0
            }
            #: 0-d datasets (one value for the whole file): not columns; the job refuses one named like a column.
            self.single_values = sorted(n for n, o in self._h5.items() if isinstance(o, h5py.Dataset) and o.ndim == 0)
            names = sorted(self._datasets)
            self.format = format_name or ("aion-tutorial-hdf5" if is_tutorial_columns(names) else "mmu-hdf5")
            lengths = {self._datasets[name].shape[0] for name in names}
            if len(lengths) > 1:
                raise ValueError(
                    f"{self.path}: columns have different numbers of rows {sorted(lengths)}; an MMU file holds "
                    f"parallel datasets of one length N (re-export the file, or cross-match it first)."
                )
            self.num_rows = lengths.pop() if lengths else 0
            self.columns = unique_keys(names)
            survey, self.relative_name = locate(self.path)
            unprefixed = [name for (s, name) in self.columns if s is None]
            self.survey = survey or survey_from_columns(unprefixed)
        except BaseException:
            self._h5.close()
            raise

    def close(self) -> None:
        self._h5.close()

    def dataset(self, column: Column):
        """The h5py Dataset of a column (no data read)."""
        return self._datasets[self.columns[column]]

    def read(self, column: Column, start: int, stop: int) -> np.ndarray:
        name = self._check_range(column, start, stop)
        return self._datasets[name][start:stop]

    def row_shape(self, column: Column) -> tuple[int, ...]:
        return tuple(self._datasets[self.columns[column]].shape[1:])

    def chunk_rows(self) -> int:
        if not self.columns:
            return 1
        widest = max(self.columns.values(), key=lambda n: int(np.prod(self._datasets[n].shape[1:], dtype=np.int64)))
        chunks = self._datasets[widest].chunks
        return int(chunks[0]) if chunks else 1
