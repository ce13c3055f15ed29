r"""Test fixtures: small files written exactly as the Multimodal Universe (MMU) build scripts, its Hugging Face (HF)
builders, its cross-match utility and the AION tutorials write them (layouts read from github
MultimodalUniverse/MultimodalUniverse ``scripts/<survey>/`` and ``mmu/utils.py``, and AION's ``notebooks/``; the
facts are listed in each writer). The values are synthetic but physical: image fluxes in nanomaggies (Legacy
Survey) or HSC coadd counts (zero point 27), spectra in 1e-17 erg/s/cm2/A on DESI's and SDSS's wavelength grids,
Gaia fluxes in e-/s. Each writer takes a seed and returns what it wrote.

* HDF5 (one per survey): ``<root>/<survey>/<config>/healpix=N/001-of-001.hdf5`` (Gaia: ``<root>/gaia/healpix=N/``),
  every column the script writes with its dtype (FITS columns big-endian, strings fixed-length bytes), chunking and
  compression as the script sets them.
* :func:`write_hf_parquet`: a hub shard ``<root>/<config>/train-000NN-of-000MM.parquet`` of a survey's HF builder
  features, written with pyarrow in the Arrow types ``datasets`` gives them (checked against ``datasets`` 5.2's own
  output: ``Sequence`` of a dict = struct of lists, fixed-size lists for a ``length``, ``Array2D`` = nested lists
  with the extension name as field metadata, ``Image()`` = ``struct<bytes, path>`` PNG), several row groups.
* :func:`write_crossmatch_arrow`: the ``save_to_disk`` directory of ``cross_match_datasets`` (pyarrow, same on-disk
  layout as ``datasets``: IPC stream ``data-00000-of-00001.arrow``, ``dataset_info.json``, ``state.json``).
* :func:`write_aion_tutorial`: the tutorials' cross-matched table as FITS (astropy, as downloaded) or HDF5.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DESI_PIXELS",
    "Written",
    "desi_wavelength",
    "mmu_path",
    "write_aion_stellar_tutorial",
    "write_aion_tutorial",
    "write_crossmatch_arrow",
    "write_desi",
    "write_gaia",
    "write_hf_parquet",
    "write_hsc",
    "write_legacysurvey",
    "write_sdss",
    "write_ssl_legacysurvey",
]

DESI_PIXELS = 7781  # DESI coadd brz grid: 3600 + 0.8 k A
_TYPE_CODES = {"PSF": 1, "REX": 2, "EXP": 3, "DEV": 4, "SER": 5, "DUP": 6}


@dataclass
class Written:
    """A file written by a fixture writer: its path and the arrays of every column, as written."""

    path: Path
    columns: dict[str, np.ndarray]


def mmu_path(root: str | Path, survey: str, config: str | None, healpix: int) -> Path:
    """``<root>/<survey>/<config>/healpix=<N>/001-of-001.hdf5`` (no config folder when ``config`` is None)."""
    parts = [survey] + ([config] if config else []) + [f"healpix={healpix}", "001-of-001.hdf5"]
    return Path(root).joinpath(*parts)


def _write_h5(path: Path, columns: dict[str, np.ndarray], compression: str | None) -> None:
    """As the build scripts: ``compression=..., chunks=True, maxshape=(None, ...)`` (legacysurvey lzf, hsc gzip) or
    plain ``create_dataset(key, data=...)`` (desi, sdss, gaia, ssl_legacysurvey)."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        for key, value in columns.items():
            if compression is None:
                handle.create_dataset(key, data=value)
            else:
                handle.create_dataset(
                    key, data=value, compression=compression, chunks=True, maxshape=(None, *value.shape[1:])
                )


def _strings(values: list[str], width: int) -> np.ndarray:
    import h5py

    return np.array(
        [v.encode() if isinstance(v, str) else [b.encode() for b in v] for v in values],
        dtype=h5py.string_dtype("utf-8", width),
    )


def _galaxy(rng: np.random.Generator, size: int, total: np.ndarray, sky: np.ndarray) -> np.ndarray:
    """(C, size, size) elliptical exponential discs of total flux ``total`` (C,) plus Gaussian sky noise ``sky``."""
    y, x = np.mgrid[:size, :size] - (size - 1) / 2 + rng.uniform(-0.5, 0.5, 2)[:, None, None]
    r_e, q, angle = rng.uniform(2.0, 8.0), rng.uniform(0.3, 1.0), rng.uniform(0, np.pi)
    xr = x * np.cos(angle) + y * np.sin(angle)
    yr = (-x * np.sin(angle) + y * np.cos(angle)) / q
    profile = np.exp(-1.678 * np.hypot(xr, yr) / r_e)
    profile /= profile.sum()
    noise = rng.normal(size=(len(total), size, size)) * sky[:, None, None]
    return (total[:, None, None] * profile + noise).astype(np.float32)


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------------------- HDF5


def write_legacysurvey(
    root, n: int = 6, size: int = 112, healpix: int = 1234, config: str = "dr10_south_21", seed: int = 0
) -> Written:
    """``scripts/legacysurvey/build_parent_sample.py``: lzf, ``chunks=True``; ``object_id`` S16 b"<BRICK>-<OBJID>",
    ``image_array``/``image_ivar`` (N, 4, S, S) float32, ``image_band`` (N, 4) S5 b"des-g".., ``image_mask``
    (N, S, S) bool True = good, ``image_psf_fwhm`` (N, 4) >f4, ``image_scale`` 0.262, ``image_rgb``/``blobmodel``
    (N, S, S, 3) uint8, ``object_mask`` (N, S, S) uint8 type codes, ``catalog_*`` (N, 20) zero-padded, the sweep
    columns (big-endian; TYPE/BRICKNAME bytes), ``gid``, ``healpix``, ``ra``/``dec``."""
    rng = np.random.default_rng(seed)
    bands = ("des-g", "des-r", "des-i", "des-z")
    flux = rng.uniform(2.0, 40.0, (n, 1)) * np.array([0.45, 1.0, 1.4, 1.7])  # nanomaggies (r = 18.5-21.7 mag)
    sky = np.array([0.004, 0.006, 0.008, 0.012])
    images = np.stack([_galaxy(rng, size, flux[i], sky) for i in range(n)])
    ivar = (1.0 / sky**2)[None, :, None, None] * rng.uniform(0.8, 1.2, (n, 4, size, size))
    mask = np.ones((n, size, size), dtype=bool)
    mask[1, :, 5:9] = False  # a bad column (maskbits set) in object 1
    mask[3, size // 2 + 20 :, :] = False  # a bright-star halo in object 3
    brick = [f"{rng.integers(0, 3600):04d}{'mp'[rng.integers(0, 2)]}{rng.integers(0, 300):03d}" for _ in range(n)]
    objid = rng.integers(0, 8000, n).astype(">i4")
    types = rng.choice(["REX", "EXP", "DEV", "SER"], n)
    ra = rng.uniform(150.0, 150.5, n).astype(">f8")
    dec = rng.uniform(2.0, 2.5, n).astype(">f8")
    shape_r = rng.uniform(0.5, 3.0, n).astype(">f4")
    e1, e2 = (rng.uniform(-0.3, 0.3, n).astype(">f4") for _ in range(2))
    catalog: dict[str, np.ndarray] = {}
    counts = rng.integers(1, 21, n)
    counts[0] = 20
    for key, maker in (
        ("FLUX_G", lambda k: rng.uniform(0.1, 20, k)),
        ("FLUX_R", lambda k: rng.uniform(0.1, 30, k)),
        ("FLUX_I", lambda k: np.sort(rng.uniform(0.1, 40, k))),
        ("FLUX_Z", lambda k: rng.uniform(0.1, 50, k)),
        ("SHAPE_R", lambda k: rng.uniform(0, 3, k)),
        ("SHAPE_E1", lambda k: rng.uniform(-0.4, 0.4, k)),
        ("SHAPE_E2", lambda k: rng.uniform(-0.4, 0.4, k)),
        ("TYPE", lambda k: rng.integers(1, 7, k)),
        ("X", lambda k: rng.integers(0, size, k)),
        ("Y", lambda k: rng.integers(0, size, k)),
    ):
        dtype = np.int64 if key in ("TYPE", "X", "Y") else ">f4"
        table = np.zeros((n, 20), dtype=dtype)  # zero padding past the objects found in the cut-out
        for i in range(n):
            table[i, : counts[i]] = maker(counts[i])
        catalog[f"catalog_{key}"] = table
    object_mask = np.zeros((n, size, size), dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        radius = shape_r[i] / 0.262 * 2
        object_mask[i][(xx - size / 2) ** 2 + (yy - size / 2) ** 2 < radius**2] = _TYPE_CODES[types[i]]
    rgb = np.clip(images[:, [2, 1, 0]].transpose(0, 2, 3, 1) * 40 + 20, 0, 255).astype(np.uint8)
    sweep = {
        "RELEASE": np.full(n, 10000, ">i2"),
        "BRICKNAME": np.array(brick, dtype="S8"),
        "OBJID": objid,
        "TYPE": np.array(types, dtype="S3"),
        "RA": ra,
        "DEC": dec,
        "EBV": rng.uniform(0.01, 0.06, n).astype(">f4"),
        **{f"FLUX_{b}": flux[:, k].astype(">f4") for k, b in enumerate("GRIZ")},
        **{f"FLUX_W{k}": rng.uniform(1, 30, n).astype(">f4") for k in (1, 2, 3, 4)},
        **{f"MW_TRANSMISSION_{b}": rng.uniform(0.85, 0.99, n).astype(">f4") for b in "GRIZ"},
        **{f"NOBS_{b}": rng.integers(1, 9, n).astype(">i2") for b in "GRIZ"},
        **{f"PSFSIZE_{b}": rng.uniform(0.9, 1.6, n).astype(">f4") for b in "GRIZ"},
        "SHAPE_R": shape_r,
        "SHAPE_E1": e1,
        "SHAPE_E2": e2,
        "MASKBITS": np.zeros(n, ">i2"),
    }
    # The join puts the catalogue (group) columns first, then the cut-out table's (gid is the join key).
    columns = {
        **sweep,
        "healpix": np.full(n, healpix, dtype=np.int64),
        "ra": ra,
        "dec": dec,
        "gid": np.arange(n, dtype=np.int64),
        "object_id": _strings([f"{b}-{o}" for b, o in zip(brick, objid, strict=True)], 16),
        "image_band": _strings([bands] * n, 5),
        "image_ivar": ivar.astype(np.float32),
        "image_array": images,
        "image_mask": mask,
        "image_psf_fwhm": np.stack([sweep[f"PSFSIZE_{b}"] for b in "GRIZ"], axis=1),
        "image_scale": np.full((n, 4), 0.262, dtype=np.float32),
        "image_rgb": rgb,
        "blobmodel": rgb // 2,
        "object_mask": object_mask,
        **catalog,
    }
    path = mmu_path(root, "legacysurvey", config, healpix)
    _write_h5(path, columns, "lzf")
    return Written(path, columns)


def write_hsc(
    root, n: int = 5, size: int = 112, healpix: int = 1234, config: str = "pdr3_dud_22.5", seed: int = 1
) -> Written:
    """``scripts/hsc/build_parent_sample.py``: gzip, ``chunks=True``; ``object_id`` >i8, ``image_array`` (N, 5, S, S)
    >f4 (calexp FITS data), ``image_band`` S5 b"hsc-g".., ``image_ivar`` float32 = nan_to_num(1/var),
    ``image_mask`` (N, 5, S, S) bool per band, True = good, ``image_psf_fwhm``, ``image_scale`` 0.168, and the SQL
    catalogue columns (big-endian)."""
    rng = np.random.default_rng(seed)
    bands = ("hsc-g", "hsc-r", "hsc-i", "hsc-z", "hsc-y")
    mags = rng.uniform(19.0, 22.5, (n, 1)) + np.array([0.8, 0.3, 0.0, -0.2, -0.3])
    counts = 10 ** (-0.4 * (mags - 27.0))  # HSC coadd zero point 27
    sky = np.array([0.03, 0.04, 0.05, 0.08, 0.12])
    images = np.stack([_galaxy(rng, size, counts[i], sky) for i in range(n)]).astype(">f4")
    var = (sky**2)[None, :, None, None] * rng.uniform(0.8, 1.2, (n, 5, size, size))
    mask = np.ones((n, 5, size, size), dtype=bool)
    mask[2, 3, 40:44, :] = False  # saturated trail in z of object 2
    ids = (np.int64(36_411_448_540_000_000) + rng.integers(0, 10**6, n)).astype(">i8")
    ra, dec = rng.uniform(149.5, 150.5, n).astype(">f8"), rng.uniform(1.8, 2.6, n).astype(">f8")
    catalog: dict[str, np.ndarray] = {
        "object_id": ids,
        "ra": ra,
        "dec": dec,
        "tract": np.full(n, 9813, ">i4"),
        "patch": rng.integers(0, 99, n).astype(">i4"),
    }
    for k, b in enumerate("grizy"):
        catalog[f"a_{b}"] = (rng.uniform(0.02, 0.1, n) * (1 - 0.15 * k)).astype(">f4")
    for k, b in enumerate("grizy"):
        catalog[f"{b}_extendedness_value"] = np.ones(n, ">f4")
        catalog[f"{b}_cmodel_mag"] = mags[:, k].astype(">f4")
        catalog[f"{b}_cmodel_magerr"] = rng.uniform(0.01, 0.05, n).astype(">f4")
        catalog[f"{b}_cmodel_flux"] = (10 ** (-0.4 * (mags[:, k] - 31.4))).astype(">f8")  # nJy
    psf = {}
    for b in "grizy":
        for kind in ("psf_shape", "shape"):
            scale = 2.5 if kind == "psf_shape" else 6.0
            m11, m22 = rng.uniform(0.6, 1.0, n) * scale, rng.uniform(0.6, 1.0, n) * scale
            m12 = rng.uniform(-0.2, 0.2, n)
            for ij, v in (("11", m11), ("22", m22), ("12", m12)):
                catalog[f"{b}_sdssshape_{kind}{ij}"] = v.astype(">f4")
        psf[b] = (
            2.355
            * (
                catalog[f"{b}_sdssshape_psf_shape11"] * catalog[f"{b}_sdssshape_psf_shape22"]
                - catalog[f"{b}_sdssshape_psf_shape12"] ** 2
            )
            ** 0.25
            * 0.168
        )
    catalog["healpix"] = np.full(n, healpix, np.int64)
    columns = {
        **catalog,
        "image_band": _strings([bands] * n, 5),
        "image_ivar": np.nan_to_num(1.0 / var).astype(np.float32),
        "image_array": images,
        "image_mask": mask,
        "image_psf_fwhm": np.stack([psf[b] for b in "grizy"], axis=1).astype(np.float32),
        "image_scale": np.full((n, 5), 0.168, dtype=np.float32),
    }
    path = mmu_path(root, "hsc", config, healpix)
    _write_h5(path, columns, "gzip")
    return Written(path, columns)


def desi_wavelength() -> np.ndarray:
    """DESI's coadded brz grid: 3600 + 0.8 k A, k < 7781 (float32)."""
    return (3600.0 + 0.8 * np.arange(DESI_PIXELS)).astype(np.float32)


_LINES = (3727.1, 4862.7, 4960.3, 5008.2, 6564.6, 6585.3, 6718.3)  # [OII], Hb, [OIII], Ha, [NII], [SII] (vacuum)


def _spectrum(rng, wavelength: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray]:
    """A galaxy spectrum (1e-17 erg/s/cm2/A): power-law continuum with a 4000 A break and emission lines; returns
    (noisy flux, ivar)."""
    continuum = rng.uniform(0.5, 3.0) * (wavelength / 5000.0) ** rng.uniform(-1.5, 0.5)
    continuum = continuum * np.where(wavelength < 4000.0 * (1 + z), 0.6, 1.0)
    lines = sum(rng.uniform(1, 15) * np.exp(-0.5 * ((wavelength - w * (1 + z)) / 2.0) ** 2) for w in _LINES)
    sigma = rng.uniform(0.4, 1.2) * (1 + 0.5 * (wavelength < 4000))
    ivar = (1.0 / sigma**2) * rng.uniform(0.9, 1.1, wavelength.shape)
    flux = continuum + lines + rng.normal(size=wavelength.shape) * sigma
    return flux.astype(np.float32), ivar.astype(np.float32)


def write_desi(
    root, n: int = 5, healpix: int = 1234, config: str = "edr_sv3", seed: int = 2, lsf_resolution: bool = True
) -> Written:
    """``scripts/desi/build_parent_sample.py``: no chunking, no compression; ``TARGETID``/``object_id`` >i8,
    ``ra``/``dec`` = TARGET_RA/DEC >f8, ``spectrum_lambda``/``flux``/``ivar``/``lsf_sigma`` (N, 7781) float32,
    ``spectrum_mask`` bool True = bad ((mask > 0) | (ivar < 1e-6)), ``spectrum_lsf`` (N, 7781, 11), and zcatalog
    columns (big-endian; SURVEY/PROGRAM/SPECTYPE bytes). Object 1 is a target without Legacy Survey photometry:
    its ``FLUX_*`` and ``FIBERFLUX_*`` hold the ``-99`` placeholder (the issue's case)."""
    rng = np.random.default_rng(seed)
    wavelength = desi_wavelength()
    z = rng.uniform(0.05, 0.6, n)
    flux, ivar, mask = (np.empty((n, DESI_PIXELS), dtype=t) for t in (np.float32, np.float32, bool))
    for i in range(n):
        flux[i], ivar[i] = _spectrum(rng, wavelength, z[i])
        bits = np.zeros(DESI_PIXELS, dtype=np.uint32)
        bits[rng.integers(0, DESI_PIXELS, 12)] = 1 << 2  # cosmic rays flagged, ivar kept
        ivar[i, 2800:2812] = 0.0  # b/r camera overlap with no data
        mask[i] = (bits > 0) | (ivar[i] < 1e-6)
    targetid = (np.int64(39_627_000_000_000_000) + rng.integers(0, 10**9, n)).astype(">i8")
    ra, dec = rng.uniform(150.0, 150.5, n).astype(">f8"), rng.uniform(2.0, 2.5, n).astype(">f8")
    ls_flux = rng.uniform(2.0, 40.0, (n, 1)) * np.array([0.45, 1.0, 1.7])
    zcat = {
        "TARGETID": targetid,
        "SURVEY": np.array([b"sv3"] * n, dtype="S7"),
        "PROGRAM": np.array([b"bright"] * n, dtype="S6"),
        "HEALPIX": rng.integers(0, 50000, n).astype(">i4"),
        "SPECTYPE": np.array([b"GALAXY"] * n, dtype="S6"),
        "Z": z.astype(">f8"),
        "ZERR": rng.uniform(1e-5, 1e-4, n).astype(">f8"),
        "ZWARN": np.where(np.arange(n) == n - 1, 4, 0).astype(">i8"),
        "TARGET_RA": ra,
        "TARGET_DEC": dec,
        "EBV": rng.uniform(0.01, 0.06, n).astype(">f4"),
        **{f"FLUX_{b}": ls_flux[:, k].astype(">f4") for k, b in enumerate("GRZ")},
        **{f"FLUX_IVAR_{b}": rng.uniform(50, 500, n).astype(">f4") for b in "GRZ"},
        **{f"FIBERFLUX_{b}": (0.4 * ls_flux[:, k]).astype(">f4") for k, b in enumerate("GRZ")},
        **{f"FIBERTOTFLUX_{b}": (0.45 * ls_flux[:, k]).astype(">f4") for k, b in enumerate("GRZ")},
        "COADD_FIBERSTATUS": np.zeros(n, ">i4"),
        "SV_PRIMARY": np.ones(n, bool),
    }
    for key in ("FLUX_G", "FLUX_R", "FLUX_Z", "FIBERFLUX_G", "FIBERFLUX_R", "FIBERFLUX_Z"):
        zcat[key][1] = -99.0
    zcat["FLUX_IVAR_G"][1] = zcat["FLUX_IVAR_R"][1] = zcat["FLUX_IVAR_Z"][1] = 0.0
    columns = {
        **zcat,
        "healpix": np.full(n, healpix, dtype=np.int64),
        "ra": ra,
        "dec": dec,
        "object_id": targetid,
        "spectrum_lambda": np.repeat(wavelength[None], n, axis=0),
        "spectrum_flux": flux,
        "spectrum_ivar": ivar,
        "spectrum_mask": mask,
        "spectrum_lsf_sigma": np.repeat(rng.uniform(0.8, 1.1, (n, 1)), DESI_PIXELS, axis=1).astype(np.float32),
    }
    if lsf_resolution:
        kernel = np.exp(-0.5 * ((np.arange(11) - 5) / 1.0) ** 2)
        columns["spectrum_lsf"] = np.broadcast_to(
            (kernel / kernel.sum()).astype(np.float32), (n, DESI_PIXELS, 11)
        ).copy()
    path = mmu_path(root, "desi", config, healpix)
    _write_h5(path, columns, None)
    return Written(path, columns)


def write_sdss(root, n: int = 5, healpix: int = 1234, config: str = "boss", seed: int = 3) -> Written:
    """``scripts/sdss/build_parent_sample.py``: no chunking, no compression; ``object_id`` = SPECOBJID S19 bytes,
    ``ra``/``dec`` = PLUG_RA/DEC >f8; spectra of each plate's length on its log-lambda grid (10**(CRVAL1 + 1e-4 i)),
    padded to the file's longest: flux 'edge' (>f4), ivar 0 (>f4), lambda -1 (float32), lsf_sigma 'edge' (>f4),
    mask True; mask = and_mask != 0 | ivar <= 1e-6, True = bad (and_mask pixels keep ivar > 0).

    Returns columns plus ``native_length`` (N,) (not a column of the file)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4580, 4660, n)
    lengths[0] = lengths.max() + 7  # the longest sets the padded width
    crval = rng.uniform(3.5490, 3.5505, n)  # BOSS: first pixel near 3540-3550 A
    width = int(lengths.max())
    flux = np.empty((n, width), dtype=">f4")
    ivar = np.empty((n, width), dtype=">f4")
    lsf = np.empty((n, width), dtype=">f4")
    wavelength = np.empty((n, width), dtype=np.float32)
    mask = np.empty((n, width), dtype=bool)
    z = rng.uniform(0.1, 0.7, n)
    for i in range(n):
        L = int(lengths[i])
        lam = (10 ** (crval[i] + 1e-4 * np.arange(L))).astype(np.float32)
        f, iv = _spectrum(rng, lam, z[i])
        and_mask = np.zeros(L, dtype=np.int32)
        and_mask[rng.integers(0, L, 20)] = 1 << 16  # BRIGHTSKY-like bits; ivar stays > 0 there
        iv[:15] = 0.0  # no data at the blue edge
        m = and_mask.astype(bool) | (iv <= 1e-6)
        pad = width - L
        flux[i] = np.pad(f, (0, pad), mode="edge")
        ivar[i] = np.pad(iv, (0, pad), mode="constant")
        wavelength[i] = np.pad(lam, (0, pad), mode="constant", constant_values=-1)
        lsf[i] = np.pad(rng.uniform(0.9, 1.3, L).astype(np.float32), (0, pad), mode="edge")
        mask[i] = np.pad(m, (0, pad), mode="constant", constant_values=True)
    specobjid = np.array(
        [str(v).encode() for v in 4_000_000_000_000_000_000 // 2 + rng.integers(0, 10**12, n)], dtype="S19"
    )
    ra, dec = rng.uniform(150.0, 150.5, n).astype(">f8"), rng.uniform(2.0, 2.5, n).astype(">f8")
    catalog = {
        "SURVEY": np.array([b"boss  "] * n, dtype="S6"),
        "PLATE": rng.integers(3500, 7000, n).astype(">i4"),
        "MJD": rng.integers(55000, 57000, n).astype(">i4"),
        "FIBERID": rng.integers(1, 1001, n).astype(">i4"),
        "SPECOBJID": specobjid,
        "PLUG_RA": ra,
        "PLUG_DEC": dec,
        "Z": z.astype(">f4"),
        "Z_ERR": rng.uniform(1e-5, 1e-4, n).astype(">f4"),
        "ZWARNING": np.where(np.arange(n) == 2, 4, 0).astype(">i4"),
        "VDISP": rng.uniform(80, 300, n).astype(">f4"),
        "VDISP_ERR": rng.uniform(5, 30, n).astype(">f4"),
        "SPECTROFLUX": rng.uniform(1, 50, (n, 5)).astype(">f4"),
        "SPECTROFLUX_IVAR": rng.uniform(1, 50, (n, 5)).astype(">f4"),
        "SPECTROSYNFLUX": rng.uniform(1, 50, (n, 5)).astype(">f4"),
        "SPECTROSYNFLUX_IVAR": rng.uniform(1, 50, (n, 5)).astype(">f4"),
        "healpix": np.full(n, healpix, dtype=np.int64),
        "ra": ra,
        "dec": dec,
    }
    columns = {
        **catalog,
        "object_id": specobjid,
        "spectrum_lambda": wavelength,
        "spectrum_flux": flux,
        "spectrum_ivar": ivar,
        "spectrum_mask": mask,
        "spectrum_lsf_sigma": lsf,
    }
    path = mmu_path(root, "sdss", config, healpix)
    _write_h5(path, columns, None)
    columns["native_length"] = lengths.astype(np.int64)
    return Written(path, columns)


_GAIA_PHOTOMETRY = (
    "phot_g_mean_mag",
    "phot_g_mean_flux",
    "phot_g_mean_flux_error",
    "phot_bp_mean_mag",
    "phot_bp_mean_flux",
    "phot_bp_mean_flux_error",
    "phot_rp_mean_mag",
    "phot_rp_mean_flux",
    "phot_rp_mean_flux_error",
    "phot_bp_rp_excess_factor",
    "bp_rp",
    "bp_g",
    "g_rp",
)
_GAIA_ASTROMETRY = (
    "ra",
    "ra_error",
    "dec",
    "dec_error",
    "parallax",
    "parallax_error",
    "pmra",
    "pmra_error",
    "pmdec",
    "pmdec_error",
    "ra_dec_corr",
    "ra_parallax_corr",
    "ra_pmra_corr",
    "ra_pmdec_corr",
    "dec_parallax_corr",
    "dec_pmra_corr",
    "dec_pmdec_corr",
    "parallax_pmra_corr",
    "parallax_pmdec_corr",
    "pmra_pmdec_corr",
)
_GAIA_RV = ("radial_velocity", "radial_velocity_error", "rv_template_fe_h", "rv_template_logg", "rv_template_teff")
_GAIA_GSPPHOT = tuple(
    f"{p}{s}"
    for p in (
        "ag_gspphot",
        "azero_gspphot",
        "distance_gspphot",
        "ebpminrp_gspphot",
        "logg_gspphot",
        "mh_gspphot",
        "teff_gspphot",
    )
    for s in ("", "_lower", "_upper")
)
_GAIA_FLAGS = ("ruwe",)
_GAIA_CORRECTIONS = (
    "ecl_lat",
    "ecl_lon",
    "nu_eff_used_in_astrometry",
    "pseudocolour",
    "astrometric_params_solved",
    "rv_template_teff",
    "grvs_mag",
)


def write_gaia(
    root, n: int = 8, healpix: int = 1234, xp: str = "coeff", seed: int = 4, first_source_id: int | None = None
) -> Written:
    """``scripts/gaia/merge_parts.py`` + ``healpixify.py``: ``<root>/gaia/healpix=N/001-of-001.hdf5``, no chunking or
    compression, NO ``object_id``: ``source_id`` int64, the GaiaSource columns (lower-case archive names; NaN where
    Gaia has no value: object 2 has a 2-parameter solution, parallax NaN), ``healpix``, and the XP coefficients as
    ``coeff``/``coeff_error`` (N, 110) float32 = 55 BP then 55 RP (``xp="coeff"``, what merge_parts writes) or as the
    XpContinuousMeanSpectrum parts carry them, ``bp_coefficients``/``rp_coefficients`` (N, 55) and their errors
    (``xp="split"``)."""
    if xp not in ("coeff", "split"):
        raise ValueError(f"xp must be 'coeff' or 'split', got {xp!r}")
    rng = np.random.default_rng(seed)
    g = rng.uniform(11.0, 17.0, n)
    bp_rp = rng.uniform(0.5, 2.0, n)
    flux_g = 10 ** (-0.4 * (g - 25.6874))  # e-/s, Gaia DR3 G zero point
    flux_bp = 10 ** (-0.4 * (g + 0.3 * bp_rp - 25.3385))
    flux_rp = 10 ** (-0.4 * (g - 0.7 * bp_rp - 24.7479))
    k = np.arange(55)
    bp = (flux_bp[:, None] / 20) * np.exp(-k / 7.0) * rng.normal(1.0, 0.3, (n, 55)) * np.where(k % 2, -1, 1)
    rp = (flux_rp[:, None] / 20) * np.exp(-k / 7.0) * rng.normal(1.0, 0.3, (n, 55)) * np.where(k % 3, 1, -1)
    start = first_source_id if first_source_id is not None else 4_295_806_720 * (healpix * 64 + 1)
    columns: dict[str, np.ndarray] = {
        "source_id": (start + np.sort(rng.choice(10**6, n, replace=False))).astype(np.int64)
    }
    parallax = rng.uniform(0.2, 5.0, n)
    parallax[2] = np.nan  # 2-parameter astrometric solution
    values = {
        "ra": rng.uniform(150.0, 150.5, n),
        "dec": rng.uniform(2.0, 2.5, n),
        "parallax": parallax,
        "phot_g_mean_flux": flux_g,
        "phot_bp_mean_flux": flux_bp,
        "phot_rp_mean_flux": flux_rp,
        "phot_g_mean_mag": g,
        "phot_bp_mean_mag": g + 0.3 * bp_rp,
        "phot_rp_mean_mag": g - 0.7 * bp_rp,
        "bp_rp": bp_rp,
        "ruwe": rng.uniform(0.9, 1.3, n),
        "radial_velocity": np.where(g < 14, rng.normal(0, 40, n), np.nan),
        "astrometric_params_solved": np.where(np.isnan(parallax), 3, 31),
    }
    names = dict.fromkeys(
        _GAIA_PHOTOMETRY + _GAIA_ASTROMETRY + _GAIA_RV + _GAIA_GSPPHOT + _GAIA_FLAGS + _GAIA_CORRECTIONS
    )
    for name in names:
        if name in values:
            value = values[name]
        elif name.endswith("_error"):
            value = rng.uniform(0.01, 0.3, n)
        elif name.endswith("_corr"):
            value = rng.uniform(-0.5, 0.5, n)
        else:
            value = rng.uniform(0.0, 1.0, n)
        if name == "astrometric_params_solved":
            columns[name] = value.astype(np.int16)
        elif name in ("ra", "dec", "parallax", "pmra", "pmdec", "l", "b", "ecl_lat", "ecl_lon") or "_flux" in name:
            columns[name] = value.astype(np.float64)
        else:
            columns[name] = value.astype(np.float32)
    errors = np.abs(rng.normal(0.02, 0.005, (n, 110))) * np.concatenate([np.abs(bp), np.abs(rp)], axis=1) + 1e-3
    if xp == "coeff":
        columns["coeff"] = np.concatenate([bp, rp], axis=1).astype(np.float32)
        columns["coeff_error"] = errors.astype(np.float32)
    else:
        columns["bp_coefficients"] = bp.astype(np.float32)
        columns["rp_coefficients"] = rp.astype(np.float32)
        columns["bp_coefficient_errors"] = errors[:, :55].astype(np.float32)
        columns["rp_coefficient_errors"] = errors[:, 55:].astype(np.float32)
    columns["healpix"] = np.full(n, healpix, dtype=np.int64)
    path = mmu_path(root, "gaia", None, healpix)
    _write_h5(path, columns, None)
    return Written(path, columns)


def write_ssl_legacysurvey(
    root, n: int = 5, size: int = 112, healpix: int = 1234, config: str = "south", seed: int = 5
) -> Written:
    """``scripts/ssl_legacysurvey/build_parent_sample.py``: no chunking/compression; 3-band images ``image_array``
    (N, 3, S, S) float32 (DES-G, DES-R, DES-Z), ``image_band`` S5, NO image_mask / image_ivar, ``image_psf_fwhm``
    (N, 3), ``image_scale`` 0.262, ``object_id`` int64 and the Stein et al. catalogue (lower-case, big-endian)."""
    rng = np.random.default_rng(seed)
    flux = rng.uniform(2.0, 40.0, (n, 1)) * np.array([0.45, 1.0, 1.7])
    sky = np.array([0.004, 0.006, 0.012])
    images = np.stack([_galaxy(rng, size, flux[i], sky) for i in range(n)])
    inds = np.sort(rng.choice(10**6, n, replace=False)).astype(">i8")
    ra, dec = rng.uniform(150.0, 150.5, n).astype(">f8"), rng.uniform(2.0, 2.5, n).astype(">f8")
    psfsize = rng.uniform(0.9, 1.6, (n, 3)).astype(">f4")
    columns = {
        "inds": inds,
        "ra": ra,
        "dec": dec,
        "release": np.full(n, 9010, ">i2"),
        "brickid": rng.integers(0, 600000, n).astype(">i4"),
        "objid": rng.integers(0, 8000, n).astype(">i4"),
        "z_spec": rng.uniform(0.05, 0.5, n).astype(">f4"),
        "psfsize": psfsize,
        "ebv": rng.uniform(0.01, 0.06, n).astype(">f4"),
        "internal_inds": np.arange(n, dtype=">i8"),
        "healpix": np.full(n, healpix, np.int64),
        "object_id": np.arange(n, dtype=np.int64),
        "image_band": _strings([("des-g", "des-r", "des-z")] * n, 5),
        "image_array": images,
        "image_psf_fwhm": psfsize.astype(np.float32),
        "image_scale": np.full((n, 3), 0.262, np.float32),
        **{f"flux_{b}": flux[:, k].astype(">f4") for k, b in enumerate("grz")},
        **{f"fiberflux_{b}": (0.4 * flux[:, k]).astype(">f4") for k, b in enumerate("grz")},
        **{f"psfdepth_{b}": rng.uniform(500, 3000, n).astype(">f4") for b in "grz"},
    }
    path = mmu_path(root, "ssl_legacysurvey", config, healpix)
    _write_h5(path, columns, None)
    return Written(path, columns)


# ------------------------------------------------------------------------------------------- HF features (Arrow)

_ARRAY2D = b"datasets.features.features.Array2DExtensionType"
_HF_FLOATS = {
    "legacysurvey": (
        "EBV",
        "FLUX_G",
        "FLUX_R",
        "FLUX_I",
        "FLUX_Z",
        "FLUX_W1",
        "FLUX_W2",
        "FLUX_W3",
        "FLUX_W4",
        "SHAPE_R",
        "SHAPE_E1",
        "SHAPE_E2",
    ),
    "hsc": tuple(f"a_{b}" for b in "grizy")
    + tuple(f"{b}_extendedness_value" for b in "grizy")
    + tuple(f"{b}_{k}" for b in "grizy" for k in ("cmodel_mag", "cmodel_magerr"))
    + tuple(f"{b}_sdssshape_psf_shape{ij}" for b in "grizy" for ij in ("11", "22", "12"))
    + tuple(f"{b}_sdssshape_shape{ij}" for b in "grizy" for ij in ("11", "22", "12")),
    "desi": (
        "Z",
        "ZERR",
        "EBV",
        "FLUX_G",
        "FLUX_R",
        "FLUX_Z",
        "FLUX_IVAR_G",
        "FLUX_IVAR_R",
        "FLUX_IVAR_Z",
        "FIBERFLUX_G",
        "FIBERFLUX_R",
        "FIBERFLUX_Z",
        "FIBERTOTFLUX_G",
        "FIBERTOTFLUX_R",
        "FIBERTOTFLUX_Z",
    ),
    "sdss": ("VDISP", "VDISP_ERR", "Z", "Z_ERR"),
    "ssl_legacysurvey": (
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
    ),
}
#: HF builder config of each survey's fixture (the hub shard folder).
HF_CONFIGS = {
    "legacysurvey": "dr10_south_21",
    "hsc": "pdr3_dud_22.5",
    "desi": "edr_sv3",
    "sdss": "boss",
    "gaia": "gaia_dr3",
    "ssl_legacysurvey": "stein_et_al",
}


def _value_json(dtype: str) -> dict:
    return {"dtype": dtype, "_type": "Value"}


def _flat(values: np.ndarray):
    import pyarrow as pa

    values = np.ascontiguousarray(values)
    if values.dtype.byteorder == ">":
        values = values.astype(values.dtype.newbyteorder("="))
    return pa.array(values.reshape(-1))


def _lists(flat, counts: list[int]):
    """Nests a flat Arrow array into variable-size lists of the given sizes, innermost last."""
    import pyarrow as pa

    array = flat
    for count in reversed(counts):
        offsets = pa.array(np.arange(0, len(array) + 1, count, dtype=np.int32))
        array = pa.ListArray.from_arrays(offsets, array)
    return array


def _with_element_metadata(array, metadata: dict):
    """The same list array, its element field carrying ``metadata`` (how ``datasets`` tags an Array2D)."""
    import pyarrow as pa

    target = pa.list_(pa.field("item", array.type.value_type, metadata=metadata))
    return pa.ListArray.from_arrays(array.offsets, array.values, type=target)


def _image_struct(c: dict, children: tuple[str, ...], per_band_mask: bool):
    """HF ``image`` = Sequence({band, flux, mask, ivar, psf_fwhm, scale}) as ``datasets`` stores it: a struct of
    per-band lists; flux/mask/ivar elements are Array2D (H, W)."""
    import pyarrow as pa

    flux = np.asarray(c["image_array"])
    n, bands, h, w = flux.shape
    arrays, fields_json = [], {}
    for child in children:
        if child == "band":
            names = [b.decode() for b in np.asarray(c["image_band"]).reshape(-1)]
            arrays.append(_lists(pa.array(names, pa.string()), [bands]))
            fields_json[child] = _value_json("string")
        elif child in ("flux", "ivar", "mask"):
            source = {"flux": "image_array", "ivar": "image_ivar", "mask": "image_mask"}[child]
            values = np.asarray(c[source])
            if child == "mask" and not per_band_mask:  # legacysurvey: the one (H, W) mask repeated per band
                values = np.repeat(values[:, None], bands, axis=1)
            dtype = "bool" if child == "mask" else "float32"
            values = values.astype(bool if child == "mask" else np.float32)
            meta = {
                b"ARROW:extension:name": _ARRAY2D,
                b"ARROW:extension:metadata": json.dumps([[h, w], dtype]).encode(),
            }
            arrays.append(_with_element_metadata(_lists(_flat(values), [bands, h, w]), meta))
            fields_json[child] = {"shape": [h, w], "dtype": dtype, "_type": "Array2D"}
        else:
            source = {"psf_fwhm": "image_psf_fwhm", "scale": "image_scale"}[child]
            arrays.append(_lists(_flat(np.asarray(c[source]).astype(np.float32)), [bands]))
            fields_json[child] = _value_json("float32")
    struct = pa.StructArray.from_arrays(arrays, names=list(children))
    return struct, {"feature": fields_json, "_type": "Sequence"}


def _png_column(images: np.ndarray):
    import pyarrow as pa

    return pa.array(
        [{"bytes": _png(np.ascontiguousarray(im)), "path": None} for im in images],
        pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
    ), {"_type": "Image"}


def _spectrum_struct(c: dict, fixed: int | None):
    import pyarrow as pa

    arrays, fields_json = [], {}
    for child in ("flux", "ivar", "lsf_sigma", "lambda", "mask"):
        values = np.asarray(c[f"spectrum_{child}"])
        values = values.astype(bool if child == "mask" else np.float32)
        n, length = values.shape
        flat = _flat(values)
        if fixed is not None:
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, fixed))
        else:
            arrays.append(_lists(flat, [length]))
        fields_json[child] = _value_json("bool" if child == "mask" else "float32")
    struct = pa.StructArray.from_arrays(arrays, names=["flux", "ivar", "lsf_sigma", "lambda", "mask"])
    spec = {"feature": fields_json, "_type": "Sequence"}
    if fixed is not None:
        spec["length"] = fixed
    return struct, spec


def _id_strings(values: np.ndarray) -> list[str]:
    """``str(data["object_id"][i])`` as the builders write it: ``"b'...'"`` for byte ids, decimal for integers."""
    return [str(v) for v in np.asarray(values).tolist()]


def hf_columns(survey: str, c: dict) -> tuple[list[tuple[str, object]], dict]:
    """The Arrow columns (name, array) and features JSON the MMU HF builder of ``survey`` produces from the MMU
    HDF5 columns ``c`` (``scripts/<survey>/<survey>.py``)."""
    import pyarrow as pa

    cols: list[tuple[str, object]] = []
    features: dict = {}

    def add(name, array_and_json):
        array, spec = array_and_json
        cols.append((name, array))
        features[name] = spec

    def floats(names):
        for f in names:
            add(f, (pa.array(np.asarray(c[f]).astype(np.float32)), _value_json("float32")))

    if survey == "legacysurvey":
        add("image", _image_struct(c, ("band", "flux", "mask", "ivar", "psf_fwhm", "scale"), per_band_mask=False))
        add("blobmodel", _png_column(c["blobmodel"]))
        add("rgb", _png_column(c["image_rgb"]))
        add("object_mask", _png_column(c["object_mask"]))
        keys = ("FLUX_G", "FLUX_R", "FLUX_I", "FLUX_Z", "TYPE", "SHAPE_R", "SHAPE_E1", "SHAPE_E2", "X", "Y")
        arrays = [_lists(_flat(np.asarray(c[f"catalog_{k}"]).astype(np.float32)), [20]) for k in keys]
        add(
            "catalog",
            (
                pa.StructArray.from_arrays(arrays, names=list(keys)),
                {"feature": {k: _value_json("float32") for k in keys}, "_type": "Sequence"},
            ),
        )
        floats(_HF_FLOATS[survey])
    elif survey == "hsc":
        add("image", _image_struct(c, ("band", "flux", "ivar", "mask", "psf_fwhm", "scale"), per_band_mask=True))
        floats(_HF_FLOATS[survey])
    elif survey == "ssl_legacysurvey":
        add("image", _image_struct(c, ("band", "flux", "psf_fwhm", "scale"), per_band_mask=True))
        floats(_HF_FLOATS[survey])
    elif survey == "desi":
        add("spectrum", _spectrum_struct(c, fixed=DESI_PIXELS))
        floats(_HF_FLOATS[survey])
        add("ZWARN", (pa.array([not bool(v) for v in np.asarray(c["ZWARN"])]), _value_json("bool")))  # sic: inverted
    elif survey == "sdss":
        add("spectrum", _spectrum_struct(c, fixed=None))
        floats(_HF_FLOATS[survey])
        add("ZWARNING", (pa.array([bool(v) for v in np.asarray(c["ZWARNING"])]), _value_json("bool")))
        for f in ("SPECTROFLUX", "SPECTROFLUX_IVAR", "SPECTROSYNFLUX", "SPECTROSYNFLUX_IVAR"):
            for k, b in enumerate("UGRIZ"):
                add(f"{f}_{b}", (pa.array(np.asarray(c[f])[:, k].astype(np.float32)), _value_json("float32")))
    elif survey == "gaia":
        arrays = [_lists(_flat(np.asarray(c[k]).astype(np.float32)), [110]) for k in ("coeff", "coeff_error")]
        add(
            "spectral_coefficients",
            (
                pa.StructArray.from_arrays(arrays, names=["coeff", "coeff_error"]),
                {
                    "feature": {"coeff": _value_json("float32"), "coeff_error": _value_json("float32")},
                    "_type": "Sequence",
                },
            ),
        )
        for group, names in (
            ("photometry", _GAIA_PHOTOMETRY),
            ("astrometry", _GAIA_ASTROMETRY),
            ("radial_velocity", _GAIA_RV),
            ("gspphot", _GAIA_GSPPHOT),
            ("flags", _GAIA_FLAGS),
            ("corrections", _GAIA_CORRECTIONS),
        ):
            arrays = [pa.array(np.asarray(c[k]).astype(np.float32)) for k in names]
            add(
                group,
                (pa.StructArray.from_arrays(arrays, names=list(names)), {k: _value_json("float32") for k in names}),
            )
        add("object_id", (pa.array(np.asarray(c["source_id"]).astype(np.int64)), _value_json("int64")))
        add("healpix", (pa.array(np.asarray(c["healpix"]).astype(np.int64)), _value_json("int64")))
        floats(("ra", "dec"))
        return cols, features
    else:
        raise ValueError(f"no HF builder fixture for survey {survey!r}")
    add("object_id", (pa.array(_id_strings(c["object_id"]), pa.string()), _value_json("string")))
    return cols, features


def _table(cols: list[tuple[str, object]], features: dict):
    import pyarrow as pa

    table = pa.Table.from_arrays([a for _, a in cols], names=[n for n, _ in cols])
    return table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})


def _subset(columns: dict, rows) -> dict:
    if rows is None:
        return columns
    rows = np.asarray(rows)
    return {k: np.asarray(v)[rows] for k, v in columns.items() if np.ndim(v) >= 1 and len(v) == len(columns["healpix"])}


def write_hf_parquet(
    root,
    survey: str,
    columns: dict | list[dict],
    config: str | None = None,
    shard: int = 0,
    num_shards: int = 1,
    row_group_rows: int = 2,
    rows=None,
) -> Written:
    """A hub shard ``<root>/<config>/train-{shard:05d}-of-{num_shards:05d}.parquet`` of the objects ``rows`` (all by
    default) of MMU HDF5 ``columns`` (or of several files' columns, one after the other: SDSS spectra of files padded
    to different widths then differ in length, as on the hub), in the survey's HF builder features,
    ``row_group_rows`` rows per row group."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = [_subset(c, rows) for c in (columns if isinstance(columns, list) else [columns])]
    table = pa.concat_tables([_table(*hf_columns(survey, c)) for c in parts])
    path = Path(root) / (config or HF_CONFIGS[survey]) / f"train-{shard:05d}-of-{num_shards:05d}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_rows)
    return Written(path, parts[0] if len(parts) == 1 else {"parts": parts})


def write_crossmatch_arrow(directory, left: tuple[str, dict], right: tuple[str, dict], batch_rows: int = 2) -> Written:
    """The ``save_to_disk`` directory of MMU's ``cross_match_datasets(left, right)`` for row-matched objects:
    each row is ``example_left.update(example_right)`` of the two builders' examples and the features are
    ``left.features`` updated with ``right.features``, so the columns are UNPREFIXED and a shared name (object_id,
    EBV, FLUX_G/R/Z) holds the right dataset's value in the left one's position. Files: ``data-00000-of-00001.arrow``
    (IPC stream, ``batch_rows`` rows per record batch), ``dataset_info.json`` (``description`` is empty: the one
    ``cross_match_datasets`` passes does not reach the saved info), ``state.json``.

    Returns the merged columns as HF field name -> Arrow array (not numpy)."""
    import pyarrow as pa

    (left_survey, left_columns), (right_survey, right_columns) = left, right
    merged: dict[str, object] = {}
    features: dict = {}
    for survey, columns in ((left_survey, left_columns), (right_survey, right_columns)):
        cols, spec = hf_columns(survey, columns)
        for name, array in cols:
            merged[name] = array  # dict order: a name already there keeps its place, takes the new value
            features[name] = spec[name]
    table = _table(list(merged.items()), features)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = "data-00000-of-00001.arrow"
    with pa.OSFile(str(directory / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=batch_rows):
            writer.write_batch(batch)
    size = (directory / name).stat().st_size
    info = {
        "builder_name": "generator",
        "citation": "",
        "config_name": "default",
        "dataset_name": "generator",
        "dataset_size": size,
        "description": "",
        "download_size": 0,
        "features": features,
        "homepage": "",
        "license": "",
        "size_in_bytes": size,
        "splits": {
            "train": {"name": "train", "num_bytes": size, "num_examples": table.num_rows, "dataset_name": "generator"}
        },
        "version": {"version_str": "0.0.0", "major": 0, "minor": 0, "patch": 0},
    }
    state = {
        "_data_files": [{"filename": name}],
        "_fingerprint": "0123456789abcdef",
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": "train",
    }
    (directory / "dataset_info.json").write_text(json.dumps(info, indent=2))
    (directory / "state.json").write_text(json.dumps(state, indent=2))
    return Written(directory, dict(merged))


# ------------------------------------------------------------------------------------------- AION tutorial files


def _write_table(path: Path, columns: dict[str, np.ndarray], fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "fits":
        from astropy.table import Table

        Table({k: v for k, v in columns.items()}).write(path, format="fits", overwrite=True)
    elif fmt == "hdf5":
        _write_h5(path, columns, None)
    else:
        raise ValueError(f"fmt must be 'fits' or 'hdf5', got {fmt!r}")


def write_aion_tutorial(path, legacysurvey: dict, desi: dict, fmt: str = "fits") -> Written:
    """The AION Tutorial's ``provabgs_legacysurvey_eval_v2.fits`` layout (row-matched Legacy Survey x DESI x
    ProVABGS): ``legacysurvey_image_flux`` (N, 4, H, W) float32, ``legacysurvey_image_rgb`` (N, H, W, 3) uint8,
    ``legacysurvey_FLUX_G/R/I/Z``, ``desi_spectrum_flux/ivar/lambda`` (N, 7781) float32, ``desi_spectrum_mask`` bool
    True = bad, ``desi_Z``, ``Z_HP`` (the columns the notebook uses), plus ``provabgs_TARGETID``, ``provabgs_RA``,
    ``provabgs_DEC``, ``provabgs_Z_HP``, ``provabgs_LOG_MSTAR`` (``provabgs_*`` named in the issue; these names are
    this fixture's assumption). ``fmt="fits"`` as the tutorial downloads it, ``"hdf5"`` the same columns in HDF5."""
    ls, ds = legacysurvey, desi
    n = len(ds["TARGETID"])
    columns = {
        "legacysurvey_image_flux": np.asarray(ls["image_array"][:n], dtype=np.float32),
        "legacysurvey_image_rgb": np.asarray(ls["image_rgb"][:n]),
        **{f"legacysurvey_FLUX_{b}": np.asarray(ls[f"FLUX_{b}"][:n], dtype=np.float32) for b in "GRIZ"},
        **{f"desi_spectrum_{k}": np.asarray(ds[f"spectrum_{k}"]) for k in ("flux", "ivar", "lambda", "mask")},
        "desi_Z": np.asarray(ds["Z"], dtype=np.float64),
        "Z_HP": np.asarray(ds["Z"], dtype=np.float32) + np.float32(0.001),
        "provabgs_TARGETID": np.asarray(ds["TARGETID"], dtype=np.int64),
        "provabgs_RA": np.asarray(ds["ra"], dtype=np.float64),
        "provabgs_DEC": np.asarray(ds["dec"], dtype=np.float64),
        "provabgs_Z_HP": np.asarray(ds["Z"], dtype=np.float32) + np.float32(0.001),
        "provabgs_LOG_MSTAR": np.linspace(9.5, 11.5, n).astype(np.float32),
    }
    path = Path(path)
    _write_table(path, columns, fmt)
    return Written(path, columns)


def write_aion_stellar_tutorial(path, gaia: dict, desi: dict, fmt: str = "fits", prefixed: bool = True) -> Written:
    """The AION StellarTutorial's tables: ``gaia_desi.fits`` (``gaia_bp_coefficients``, ``gaia_rp_coefficients``
    (N, 55), ``desi_spectrum_*``; ``prefixed=True``) or ``gaia_apogee.fits`` (``bp_coefficients``,
    ``rp_coefficients``, ``teff50``/``logg50``/``met50``; ``prefixed=False``)."""
    n = min(len(gaia["source_id"]), len(desi["TARGETID"]) if prefixed else len(gaia["source_id"]))
    if "coeff" in gaia:
        bp, rp = np.asarray(gaia["coeff"][:n, :55]), np.asarray(gaia["coeff"][:n, 55:])
    else:
        bp, rp = np.asarray(gaia["bp_coefficients"][:n]), np.asarray(gaia["rp_coefficients"][:n])
    if prefixed:
        columns = {
            "gaia_source_id": np.asarray(gaia["source_id"][:n]),
            "gaia_bp_coefficients": bp.astype(np.float64),
            "gaia_rp_coefficients": rp.astype(np.float64),
            **{f"desi_spectrum_{k}": np.asarray(desi[f"spectrum_{k}"][:n]) for k in ("flux", "lambda", "mask")},
        }
    else:
        columns = {
            "source_id": np.asarray(gaia["source_id"][:n]),
            "bp_coefficients": bp.astype(np.float64),
            "rp_coefficients": rp.astype(np.float64),
            "teff50": np.linspace(4000, 6500, n),
            "logg50": np.linspace(1.5, 4.6, n),
            "met50": np.linspace(-1.5, 0.3, n),
        }
    path = Path(path)
    _write_table(path, columns, fmt)
    return Written(path, columns)
