r"""Reading DESI coadd spectra (B/R/Z arms) into joined 7781-pixel spectra: how the real DESI EDR spectra of the
tests (``tests/data/desi_edr``) and of the bundled MMU sample are made.

DESI's three spectrograph arms sample one linear grid :math:`\lambda_k = 3600 + 0.8\,k` Å: B covers
3600-5800 Å, R 5760-7620 Å and Z 7520-9824 Å, so the joined spectrum has :math:`k = 0, \dots, 7780` and the arms
overlap by 51 (B/R) and 126 (R/Z) pixels. In an overlap the arms are combined by inverse-variance weighting, using
only good pixels (DESI mask bits zero, ivar > 0, finite flux):

.. math::

    w_a = v_a\,[\text{good}_a], \qquad f = \frac{\sum_a w_a f_a}{\sum_a w_a}, \qquad v = \sum_a w_a .

A pixel with :math:`\sum_a w_a = 0` gets the mean of the finite arm fluxes (0 if none), ivar 0, and is marked bad;
so a single-arm pixel is bad exactly when its DESI mask is non-zero or its ivar is 0, and an overlap pixel is bad
only when no arm is good there (the rule of DESI's own camera coaddition).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "DESI_LAMBDA_MIN",
    "DESI_NUM_PIXELS",
    "DESI_RESOLUTION",
    "FIBERMAP_COLUMNS",
    "desi_wavelength",
    "join_arms",
    "read_desi_coadd",
]

logger = logging.getLogger(__name__)

#: First pixel of the joined DESI grid (Å).
DESI_LAMBDA_MIN = 3600.0
#: DESI pixel width (Å).
DESI_RESOLUTION = 0.8
#: Pixels of a joined DESI spectrum (3600-9824 Å).
DESI_NUM_PIXELS = 7781
#: Spectrograph arms, in wavelength order.
ARMS = ("B", "R", "Z")
#: FIBERMAP columns returned with the spectra (those present in the file).
FIBERMAP_COLUMNS = (
    "TARGETID",
    "TARGET_RA",
    "TARGET_DEC",
    "FLUX_G",
    "FLUX_R",
    "FLUX_Z",
    "FLUX_W1",
    "FLUX_W2",
    "SHAPE_R",
    "SHAPE_E1",
    "SHAPE_E2",
    "EBV",
)


def desi_wavelength(dtype: type | np.dtype = np.float64) -> np.ndarray:
    """The joined DESI grid :math:`3600 + 0.8\\,k` Å, :math:`k < 7781`, computed in float64.

    Returns:
        (7781,) array of ``dtype``.
    """
    return (DESI_LAMBDA_MIN + DESI_RESOLUTION * np.arange(DESI_NUM_PIXELS, dtype=np.float64)).astype(dtype)


def _grid_offset(arm_wavelength: np.ndarray, grid: np.ndarray, arm: str) -> int:
    """Index of the arm's first pixel on ``grid``; raises if the arm is not sampled on that grid."""
    offset = int(np.rint((arm_wavelength[0] - grid[0]) / (grid[1] - grid[0])))
    stop = offset + arm_wavelength.size
    if offset < 0 or stop > grid.size or not np.allclose(arm_wavelength, grid[offset:stop], rtol=0, atol=1e-3):
        raise ValueError(
            f"arm {arm} ({arm_wavelength[0]:.3f}-{arm_wavelength[-1]:.3f} A, {arm_wavelength.size} px) is not sampled "
            f"on the {grid.size}-pixel grid from {grid[0]:.1f} A with step {grid[1] - grid[0]:.3f} A."
        )
    return offset


def join_arms(
    arms: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], grid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Joins spectrograph arms sampled on sub-ranges of one grid (see the module docstring for the rule).

    Args:
        arms: per arm ``(wavelength (L_a,), flux (N, L_a), ivar (N, L_a), bad (N, L_a) bool)``; ``bad`` flags
            pixels to ignore (e.g. non-zero DESI mask bits). Each arm's wavelengths must lie on ``grid``.
        grid: (G,) common grid; default the joined DESI grid.

    Returns:
        float32 flux (N, G), float32 ivar (N, G) and bool mask (N, G), True = bad (also where no arm covers the
        pixel).
    """
    grid = desi_wavelength() if grid is None else np.asarray(grid, dtype=np.float64)
    n = np.asarray(arms[0][1]).shape[0]
    weighted = np.zeros((n, grid.size))
    weights = np.zeros((n, grid.size))
    flux_sum = np.zeros((n, grid.size))
    flux_count = np.zeros((n, grid.size))
    for arm_index, (wavelength, flux, ivar, bad) in enumerate(arms):
        flux = np.asarray(flux, dtype=np.float64)
        ivar = np.asarray(ivar, dtype=np.float64)
        bad = np.asarray(bad, dtype=bool)
        if not flux.shape == ivar.shape == bad.shape == (n, np.asarray(wavelength).size):
            raise ValueError(
                f"arm {arm_index}: flux {flux.shape}, ivar {ivar.shape} and bad {bad.shape} must all be "
                f"(N={n}, {np.asarray(wavelength).size})."
            )
        start = _grid_offset(np.asarray(wavelength, dtype=np.float64), grid, str(arm_index))
        window = slice(start, start + flux.shape[1])
        finite = np.isfinite(flux)
        good = finite & ~bad & np.isfinite(ivar) & (ivar > 0)
        w = np.where(good, ivar, 0.0)
        weighted[:, window] += w * np.where(good, flux, 0.0)
        weights[:, window] += w
        flux_sum[:, window] += np.where(finite, flux, 0.0)
        flux_count[:, window] += finite
    covered = weights > 0
    fallback = np.divide(flux_sum, flux_count, out=np.zeros_like(flux_sum), where=flux_count > 0)
    joined = np.where(covered, weighted / np.where(covered, weights, 1.0), fallback)
    return joined.astype(np.float32), weights.astype(np.float32), ~covered


def _native(values: Any) -> np.ndarray:
    """A FITS column or image (big-endian) as a native-endian numpy array."""
    array = np.asarray(values)
    return array.astype(array.dtype.newbyteorder("="), copy=False)


def read_desi_coadd(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a DESI coadd FITS file (``B_/R_/Z_`` WAVELENGTH, FLUX, IVAR, MASK HDUs and FIBERMAP) into joined spectra.

    Fibres without data (ivar 0 in every arm) are skipped; their row numbers and TARGETIDs are returned and logged.

    Args:
        path: a ``coadd-*.fits`` file.

    Returns:
        dict with
            ``flux``, ``ivar``: (N, 7781) float32 (the units of the file: 1e-17 erg/s/cm^2/Å and its inverse square),
            ``mask``: (N, 7781) bool, True = bad pixel,
            ``wavelength``: (N, 7781) float32, :math:`3600 + 0.8\\,k` Å,
            ``fibre``: (N,) int64 FIBERMAP row of each returned spectrum,
            ``skipped_fibres``: int64 FIBERMAP rows without data, ``skipped_targetid``: their TARGETIDs,
            and the FIBERMAP columns of ``FIBERMAP_COLUMNS`` present in the file, (N,) each.
    """
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdus:
        names = {hdu.name for hdu in hdus}
        missing = [f"{arm}_{kind}" for arm in ARMS for kind in ("WAVELENGTH", "FLUX", "IVAR", "MASK")]
        missing = [name for name in missing if name not in names]
        if missing:
            raise ValueError(f"{path} is not a DESI coadd file: HDUs {missing} are missing.")
        arms = []
        for arm in ARMS:
            arms.append(
                (
                    _native(hdus[f"{arm}_WAVELENGTH"].data),
                    _native(hdus[f"{arm}_FLUX"].data),
                    _native(hdus[f"{arm}_IVAR"].data),
                    _native(hdus[f"{arm}_MASK"].data) != 0,
                )
            )
        fibermap = hdus["FIBERMAP"].data if "FIBERMAP" in names else None
        columns = {}
        if fibermap is not None:
            columns = {name: _native(fibermap[name]) for name in FIBERMAP_COLUMNS if name in fibermap.columns.names}
    flux, ivar, mask = join_arms(arms)
    has_data = np.zeros(flux.shape[0], dtype=bool)
    for _, _, arm_ivar, _ in arms:
        has_data |= (np.nan_to_num(arm_ivar) > 0).any(axis=1)
    kept = np.flatnonzero(has_data)
    skipped = np.flatnonzero(~has_data)
    targetid = columns.get("TARGETID", np.full(flux.shape[0], -1, dtype=np.int64))
    if skipped.size:
        logger.info("%s: skipped fibres %s (TARGETID %s): ivar is 0 everywhere", path, skipped, targetid[skipped])
    result: dict[str, Any] = {
        "flux": flux[kept],
        "ivar": ivar[kept],
        "mask": mask[kept],
        "wavelength": np.repeat(desi_wavelength(np.float32)[None], kept.size, axis=0),
        "fibre": kept.astype(np.int64),
        "skipped_fibres": skipped.astype(np.int64),
        "skipped_targetid": np.asarray(targetid)[skipped],
    }
    result.update({name: values[kept] for name, values in columns.items()})
    return result
