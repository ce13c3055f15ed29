"""The DESI coadd reader (tests/data_tests/desi_coadd.py) on the two real EDR files in tests/data, the arm-joining
rule, and the bundled MMU sample's real spectra being exactly what it reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aion_fast.data.make_sample import BUNDLED_DESI_FILE, desi_columns
from tests.data_tests.desi_coadd import DESI_NUM_PIXELS, desi_wavelength, join_arms, read_desi_coadd

DATA = Path(__file__).resolve().parents[1] / "data" / "desi_edr"
FILES = ["coadd-5-169-thru20210419.fits", "coadd-sv3-dark-26065.fits"]  # the bundled sample's order


@pytest.fixture(scope="module")
def coadds() -> dict[str, dict]:
    return {name: read_desi_coadd(DATA / name) for name in FILES}


def test_shapes_dtypes_and_fibres_with_data(coadds):
    kept = {name: read["fibre"].tolist() for name, read in coadds.items()}
    assert kept == {"coadd-5-169-thru20210419.fits": [4], "coadd-sv3-dark-26065.fits": [2, 4]}
    assert sum(len(v) for v in kept.values()) == 3
    for read in coadds.values():
        n = read["fibre"].size
        for key, dtype in (("flux", np.float32), ("ivar", np.float32), ("mask", np.bool_), ("wavelength", np.float32)):
            assert read[key].shape == (n, DESI_NUM_PIXELS), key
            assert read[key].dtype == dtype, key
        assert read["skipped_fibres"].size + n == 5
        assert read["skipped_targetid"].shape == read["skipped_fibres"].shape
        for column in ("TARGETID", "TARGET_RA", "TARGET_DEC", "FLUX_G", "FLUX_W2", "SHAPE_R", "EBV"):
            assert read[column].shape == (n,), column
            assert read[column].dtype.isnative
    sv3 = coadds["coadd-sv3-dark-26065.fits"]
    assert sv3["TARGETID"].tolist() == [39627866878511337, 39627866878514741]


def test_grid_is_3600_plus_0p8_k(coadds):
    grid = desi_wavelength()
    assert grid[0] == 3600.0 and grid[-1] == pytest.approx(9824.0, abs=1e-9)
    np.testing.assert_allclose(np.diff(grid), 0.8, rtol=0, atol=1e-9)
    for read in coadds.values():
        assert np.array_equal(read["wavelength"], np.broadcast_to(grid.astype(np.float32), read["wavelength"].shape))


def test_no_nan_and_plausible_values(coadds):
    for read in coadds.values():
        for key in ("flux", "ivar", "wavelength"):
            assert np.isfinite(read[key]).all(), key
        assert (read["ivar"] >= 0).all()
        assert np.array_equal(read["mask"], read["ivar"] == 0)  # bad exactly where no arm had a good pixel
        assert read["mask"].mean() < 0.01


def test_overlap_is_inverse_variance_weighted_on_real_arms(coadds):
    """In the B/R overlap (5760-5800 A) the joined pixel combines both arms' values from the file."""
    from astropy.io import fits

    with fits.open(DATA / "coadd-5-169-thru20210419.fits") as hdus:
        fb, ib = hdus["B_FLUX"].data[4].astype(np.float64), hdus["B_IVAR"].data[4].astype(np.float64)
        fr, ir = hdus["R_FLUX"].data[4].astype(np.float64), hdus["R_IVAR"].data[4].astype(np.float64)
    read = coadds["coadd-5-169-thru20210419.fits"]
    k = 2700 + 10  # grid pixel 5768 A = B pixel 2710 = R pixel 10
    expected = (ib[2710] * fb[2710] + ir[10] * fr[10]) / (ib[2710] + ir[10])
    assert read["flux"][0, k] == pytest.approx(expected, rel=1e-6)
    assert read["ivar"][0, k] == pytest.approx(ib[2710] + ir[10], rel=1e-6)
    assert read["flux"][0, 0] == pytest.approx(fb[0], rel=1e-6)  # single-arm pixels are copied


def test_join_arms_synthetic_two_arm_overlap():
    grid = 100.0 + 0.5 * np.arange(10)
    blue_w, red_w = grid[:6], grid[4:]  # overlap: grid pixels 4 and 5
    blue_f = np.array([[1, 1, 1, 1, 2.0, 4.0]])
    blue_i = np.array([[1, 1, 1, 0, 1.0, 0.0]])  # pixel 3 has no data; pixel 5 only from red
    blue_bad = np.zeros((1, 6), dtype=bool)
    red_f = np.array([[5.0, 8.0, 3, 3, 3, 3]])
    red_i = np.array([[3.0, 2.0, 1, 1, 1, 1]])
    red_bad = np.array([[False, False, False, True, False, False]])  # grid pixel 7 flagged by its mask bits
    flux, ivar, mask = join_arms([(blue_w, blue_f, blue_i, blue_bad), (red_w, red_f, red_i, red_bad)], grid=grid)
    assert flux.shape == ivar.shape == mask.shape == (1, 10)
    assert flux[0, 4] == pytest.approx((1 * 2.0 + 3 * 5.0) / 4)
    assert ivar[0, 4] == pytest.approx(4.0)
    assert flux[0, 5] == pytest.approx(8.0) and ivar[0, 5] == pytest.approx(2.0)
    assert mask.tolist() == [[False, False, False, True, False, False, False, True, False, False]]
    assert flux[0, 3] == pytest.approx(1.0) and ivar[0, 3] == 0  # no good arm: mean of the fluxes, marked bad
    assert flux[0, 7] == pytest.approx(3.0) and ivar[0, 7] == 0


def test_join_arms_mean_fallback_and_nan_flux():
    grid = 10.0 + np.arange(4.0)
    a = (grid[:3], np.array([[1.0, 2.0, np.nan]]), np.zeros((1, 3)), np.zeros((1, 3), bool))
    b = (grid[1:], np.array([[4.0, 6.0, np.nan]]), np.array([[0.0, 1.0, 1.0]]), np.zeros((1, 3), bool))
    flux, ivar, mask = join_arms([a, b], grid=grid)
    assert flux.tolist() == [[1.0, 3.0, 6.0, 0.0]]  # (2 + 4) / 2 where no weight; NaN fluxes never propagate
    assert mask.tolist() == [[True, True, False, True]]
    assert np.isfinite(flux).all() and ivar.tolist() == [[0.0, 0.0, 1.0, 0.0]]


def test_join_arms_refuses_an_arm_off_the_grid():
    grid = 10.0 + np.arange(4.0)
    arm = (grid[:2] + 0.3, np.ones((1, 2)), np.ones((1, 2)), np.zeros((1, 2), bool))
    with pytest.raises(ValueError, match="not sampled"):
        join_arms([arm], grid=grid)


def test_bundled_sample_matches_the_reader(coadds):
    """The committed MMU ``desi`` file holds the reader's spectra of the two coadds, in order, bit for bit."""
    columns = desi_columns()
    expected = {key: np.concatenate([coadds[f][key] for f in FILES]) for key in ("flux", "ivar", "mask", "TARGETID")}
    for key in ("flux", "ivar", "mask"):
        assert columns[f"spectrum_{key}"].dtype == expected[key].dtype, key
        assert np.array_equal(columns[f"spectrum_{key}"], expected[key]), key
    assert np.array_equal(columns["spectrum_lambda"], np.repeat(desi_wavelength(np.float32)[None], 3, axis=0))
    assert np.array_equal(columns["object_id"], expected["TARGETID"])
    ra = np.concatenate([coadds[f]["TARGET_RA"] for f in FILES])
    assert np.array_equal(columns["ra"], ra.astype(np.float64))
    assert BUNDLED_DESI_FILE.stat().st_size <= 1_000_000
