"""Writes the bundled Multimodal Universe (MMU)-layout sample under ``aion_fast/data/sample/mmu/``.

* ``desi/healpix=0/001-of-001.hdf5``: 3 real DESI EDR spectra (CC BY 4.0, DESI Collaboration, Early Data Release;
  provenance in ``sample/mmu/ATTRIBUTION.md``), in MMU's DESI columns; committed, and read back by
  :func:`desi_columns`.
* ``legacysurvey/healpix=0/001-of-001.hdf5``: 8 SYNTHETIC Legacy Survey objects (see :func:`legacysurvey_columns`).
* ``gaia/healpix=0/001-of-001.hdf5``: 16 SYNTHETIC Gaia sources (see :func:`gaia_columns`).

Run ``python -m aion_fast.data.make_sample [OUTPUT_DIR] [--scale K]``; the same numpy seed gives the same arrays.
``--scale K`` writes K times as many objects with the same recipe (8K Legacy Survey objects, 16K Gaia sources, and
the 3 real DESI spectra plus K - 1 noise resamplings of each; see :func:`desi_columns`): the benchmark's larger
input (``bench/bench_encode_job.py``). The tests use :func:`write_mmu` and the column builders to write
deliberately broken files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SAMPLE_SEED", "desi_columns", "gaia_columns", "legacysurvey_columns", "write_mmu", "write_sample"]

SAMPLE_SEED = 2025
LEGACY_BANDS = ("des-g", "des-r", "des-i", "des-z")


def write_mmu(path: str | os.PathLike, columns: dict[str, Any], chunk_rows: int = 4) -> Path:
    """Writes parallel columns (first axis = objects) as an HDF5 file in the MMU layout, gzip-compressed and
    chunked along the object axis.

    Args:
        path: output ``.hdf5`` (parent folders created).
        columns: name -> array of N rows (strings are stored as fixed-length bytes, as MMU does).
        chunk_rows: rows per HDF5 chunk.
    """
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        for name, values in columns.items():
            array = np.asarray(values)
            if array.dtype.kind == "U":
                array = array.astype("S")
            chunks = (min(chunk_rows, array.shape[0]), *array.shape[1:]) if array.ndim else None
            handle.create_dataset(name, data=array, chunks=chunks, compression="gzip", shuffle=True)
    return path


def legacysurvey_columns(n: int = 8, seed: int = SAMPLE_SEED) -> dict[str, np.ndarray]:
    """Synthetic Legacy Survey cut-outs and catalogue columns, in MMU's legacysurvey schema.

    Each object is an elliptical exponential disc (half-light radius 0.5-3 arcsec at 0.262 arcsec/pixel, random
    axis ratio and angle, g-r-i-z colours of a red or blue galaxy) plus a faint neighbour, convolved with nothing,
    plus Gaussian sky noise of 0.003-0.008 nanomaggies/pixel; values are rounded to 2**-12 so the file compresses.
    ``FLUX_*`` are the noiseless model fluxes, ``SHAPE_R/E1/E2`` the model shape; ``image_mask`` is True (good)
    except a random 4-pixel-wide bad column in some objects. These are not real observations.
    """
    rng = np.random.default_rng(seed)
    size, pixel = 160, 0.262
    y, x = np.mgrid[:size, :size].astype(np.float64) - (size - 1) / 2
    images = np.zeros((n, 4, size, size), dtype=np.float32)
    masks = np.ones((n, size, size), dtype=bool)
    flux = np.zeros((n, 8))
    shape = np.zeros((n, 3))
    for i in range(n):
        r_half = rng.uniform(0.5, 3.0) / pixel
        q, angle = rng.uniform(0.3, 1.0), rng.uniform(0, np.pi)
        e = (1 - q) / (1 + q)
        u = x * np.cos(angle) + y * np.sin(angle)
        v = (-x * np.sin(angle) + y * np.cos(angle)) / q
        profile = np.exp(-1.678 * np.hypot(u, v) / r_half)
        profile /= profile.sum()
        total_r = 10 ** rng.uniform(0.3, 1.8)
        colours = np.array([0.45, 1.0, 1.5, 1.9]) if rng.random() < 0.5 else np.array([0.8, 1.0, 1.1, 1.2])
        neighbour = np.exp(-np.hypot(x - rng.uniform(-60, 60), y - rng.uniform(-60, 60)) / 3.0)
        neighbour *= rng.uniform(0.5, 3.0) / neighbour.sum()
        for band in range(4):
            noise = rng.normal(0, rng.uniform(0.003, 0.008), (size, size))
            images[i, band] = total_r * colours[band] * profile + neighbour + noise
        if rng.random() < 0.4:
            column = rng.integers(10, size - 14)
            masks[i, :, column : column + 4] = False
        flux[i, :4] = total_r * colours
        flux[i, 4:] = total_r * np.array([2.0, 1.6, 3.0, 4.0]) * rng.uniform(0.5, 1.5)
        shape[i] = (r_half * pixel, e * np.cos(2 * angle), e * np.sin(2 * angle))
    images = np.round(images * 4096) / 4096
    ivar = np.broadcast_to(np.array([1 / 0.005**2] * 4, dtype=np.float32)[None, :, None, None], images.shape)
    columns: dict[str, Any] = {
        "image_array": images,
        "image_ivar": np.ascontiguousarray(ivar),
        "image_mask": masks,
        "image_band": np.array([LEGACY_BANDS] * n),
        "object_id": np.array([f"ls-synthetic-{i:04d}" for i in range(n)]),
        "RA": rng.uniform(150.0, 151.0, n),
        "DEC": rng.uniform(2.0, 3.0, n),
        "EBV": rng.uniform(0.01, 0.08, n).astype(np.float32),
    }
    for k, name in enumerate(("FLUX_G", "FLUX_R", "FLUX_I", "FLUX_Z", "FLUX_W1", "FLUX_W2", "FLUX_W3", "FLUX_W4")):
        columns[name] = flux[:, k].astype(np.float32)
    for k, name in enumerate(("SHAPE_R", "SHAPE_E1", "SHAPE_E2")):
        columns[name] = shape[:, k].astype(np.float32)
    return columns


def gaia_columns(n: int = 16, seed: int = SAMPLE_SEED) -> dict[str, np.ndarray]:
    """Synthetic Gaia sources in MMU's gaia schema: ``coeff`` (N, 110) = 55 BP then 55 RP XP coefficients with
    amplitudes falling off as 10**(-k/20) and signs alternating, G/BP/RP fluxes of a star of magnitude 12-18 and
    colour BP-RP 0.5-2.5, parallax 0.1-5 mas, and positions. These are not real observations."""
    rng = np.random.default_rng(seed + 1)
    g_mag = rng.uniform(12, 18, n)
    colour = rng.uniform(0.5, 2.5, n)
    g_flux = 10 ** (-0.4 * (g_mag - 25.69))
    decay = 10 ** (-np.arange(55) / 20) * (-1.0) ** np.arange(55)
    bp = g_flux[:, None] * 0.4 * (1 + 0.1 * rng.normal(size=(n, 55))) * decay / (1 + colour[:, None] / 3)
    rp = g_flux[:, None] * 0.6 * (1 + 0.1 * rng.normal(size=(n, 55))) * decay * (1 + colour[:, None] / 3)
    return {
        "coeff": np.concatenate([bp, rp], axis=1).astype(np.float32),
        "phot_g_mean_flux": g_flux.astype(np.float32),
        "phot_bp_mean_flux": (g_flux * 10 ** (-0.4 * (colour / 2 - 0.3))).astype(np.float32),
        "phot_rp_mean_flux": (g_flux * 10 ** (0.4 * (colour / 2 + 0.3))).astype(np.float32),
        "parallax": rng.uniform(0.1, 5.0, n).astype(np.float32),
        "ra": rng.uniform(150.0, 151.0, n),
        "dec": rng.uniform(2.0, 3.0, n),
        "object_id": np.arange(4_000_000_000_000_000, 4_000_000_000_000_000 + n, dtype=np.int64),
    }


#: The committed real DESI spectra (made from ``tests/data/desi_edr``'s coadds; see ``sample/mmu/ATTRIBUTION.md``).
BUNDLED_DESI_FILE = Path(__file__).parent / "sample" / "mmu" / "desi" / "healpix=0" / "001-of-001.hdf5"

#: Object-id offset of the c-th noise resampling of a real DESI spectrum (TARGETID + c * offset, c < 92).
DESI_RESAMPLE_ID_OFFSET = 10**17


def desi_columns(copies: int = 1, seed: int = SAMPLE_SEED) -> dict[str, np.ndarray]:
    """The bundled real DESI EDR spectra (the committed ``desi`` sample file) in MMU's desi schema (mask True = bad).

    Args:
        copies: ``1`` gives the 3 real spectra. ``c > 1`` appends, for ``k = 1 .. c - 1``, a SYNTHETIC resampling
            of each: the real flux plus Gaussian noise of standard deviation ``1 / sqrt(ivar)`` (pixels with
            ivar 0 unchanged), same ivar, mask, wavelengths and position, ``object_id = TARGETID + k * 1e17``.
        seed: numpy seed of the resampling noise.

    Returns:
        Columns of ``3 * copies`` rows.
    """
    import h5py

    if not 1 <= copies < 92:
        raise ValueError(f"copies must be in [1, 92) so resampled object ids fit in int64, got {copies}.")
    with h5py.File(BUNDLED_DESI_FILE, "r") as handle:
        real = {name: handle[name][:] for name in ("spectrum_flux", "spectrum_ivar", "spectrum_lambda",
                                                   "spectrum_mask", "object_id", "ra", "dec")}  # fmt: skip
    flux, ivar = real["spectrum_flux"], real["spectrum_ivar"]
    rng = np.random.default_rng(seed + 2)
    sigma = np.where(ivar > 0, 1 / np.sqrt(np.where(ivar > 0, ivar, 1)), 0).astype(np.float32)
    resampled = [flux] + [(flux + sigma * rng.standard_normal(flux.shape)).astype(np.float32) for _ in range(1, copies)]
    ids = real["object_id"].astype(np.int64)
    return {
        "spectrum_flux": np.concatenate(resampled),
        "spectrum_ivar": np.tile(ivar, (copies, 1)),
        "spectrum_lambda": np.tile(real["spectrum_lambda"], (copies, 1)),
        "spectrum_mask": np.tile(real["spectrum_mask"], (copies, 1)),
        "object_id": np.concatenate([ids + k * DESI_RESAMPLE_ID_OFFSET for k in range(copies)]),
        "ra": np.tile(real["ra"].astype(np.float64), copies),
        "dec": np.tile(real["dec"].astype(np.float64), copies),
    }


def write_sample(output: str | os.PathLike, scale: int = 1) -> list[Path]:
    """Writes the three sample files under ``output`` (see the module docstring).

    Args:
        output: root folder; files go to ``<survey>/healpix=0/001-of-001.hdf5``.
        scale: ``1`` writes the bundled sample (27 objects); ``K`` writes ``27 K`` objects with the same recipe
            (the Legacy Survey and Gaia files are then the same seed's longer draws, not the bundled rows).
    """
    output = Path(output)
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}.")
    return [
        write_mmu(output / "desi" / "healpix=0" / "001-of-001.hdf5", desi_columns(copies=scale), chunk_rows=2),
        write_mmu(output / "legacysurvey" / "healpix=0" / "001-of-001.hdf5", legacysurvey_columns(n=8 * scale)),
        write_mmu(output / "gaia" / "healpix=0" / "001-of-001.hdf5", gaia_columns(n=16 * scale)),
    ]


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Write the MMU-layout sample (see the module docstring).")
    parser.add_argument("output", nargs="?", default=str(Path(__file__).parent / "sample" / "mmu"))
    parser.add_argument("--scale", type=int, default=1, help="K times the bundled sample's 27 objects")
    arguments = parser.parse_args()
    for written in write_sample(arguments.output, arguments.scale):
        print(written, written.stat().st_size)
