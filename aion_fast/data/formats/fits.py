r"""``aion-tutorial-fits``: the AION tutorials' cross-matched tables, FITS binary tables read with astropy.

The tutorials download FITS files (``provabgs_legacysurvey_eval_v2.fits``: ``legacysurvey_image_flux`` (N, 4, H, W),
``legacysurvey_image_rgb``, ``desi_spectrum_{flux,ivar,mask,lambda}`` (N, 7781), ``legacysurvey_FLUX_*``, ``desi_Z``,
``Z_HP``; ``gaia_desi.fits``: ``gaia_bp_coefficients``, ``gaia_rp_coefficients`` (N, 55), ``desi_spectrum_*``;
``gaia_apogee.fits``: ``bp_coefficients``, ``rp_coefficients``) and read them with ``astropy.table.Table.read``.
Here the table is memory-mapped and rows ``[start, stop)`` are sliced before a column is converted, so only those
rows are read. Values come as FITS stores them (big-endian); logical columns as bool.
"""

from __future__ import annotations

import os

import numpy as np

from aion_fast.data.formats.base import Column, Source, locate, unique_keys
from aion_fast.data.formats.hdf5 import survey_from_columns

__all__ = ["FITSTableSource", "is_fits"]


def is_fits(path: str) -> bool:
    """True if ``path`` is a file starting with a FITS primary header (``SIMPLE  =``)."""
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as handle:
        return handle.read(9) == b"SIMPLE  ="


class FITSTableSource(Source):
    """The first binary-table HDU of a FITS file."""

    format = "aion-tutorial-fits"

    def __init__(self, path: str | os.PathLike):
        from astropy.io import fits

        self.path = str(path)
        self._hdul = fits.open(self.path, memmap=True)
        try:
            tables = [hdu for hdu in self._hdul if isinstance(hdu, fits.BinTableHDU)]
            if not tables:
                raise ValueError(
                    f"{self.path}: a FITS file without a binary table; expected the AION tutorial "
                    f"table of cross-matched columns."
                )
            self._hdu = tables[0]
            names = list(self._hdu.columns.names)
            self.num_rows = int(self._hdu.header["NAXIS2"])
            self.columns = unique_keys(names)
            survey, self.relative_name = locate(self.path)
            self.survey = survey or survey_from_columns([n for (s, n) in self.columns if s is None])
            self._data = self._hdu.data
        except BaseException:
            self._hdul.close()
            raise

    def close(self) -> None:
        self._data = None
        self._hdul.close()

    def read(self, column: Column, start: int, stop: int) -> np.ndarray:
        name = self._check_range(column, start, stop)
        values = self._data[start:stop].field(name)
        if values.dtype.kind == "U":
            values = np.char.encode(values, "utf-8")
        return np.array(values)

    def row_shape(self, column: Column) -> tuple[int, ...]:
        return tuple(self.read(column, 0, min(1, self.num_rows)).shape[1:])

    def chunk_rows(self) -> int:
        return 1
