"""The input-format registry (:mod:`aion_fast.data.formats`) on files written as MMU, its HF builders, its
cross-match and the AION tutorials write them (:mod:`tests.data_tests.mmu_writers`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from aion_fast.data.formats import FORMATS, describe, describe_text, detect, discover, open_source
from tests.data_tests import mmu_writers as w


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every layout, written once: MMU HDF5 per survey, hub Parquet shards, a cross-match dir, tutorial tables."""
    root = tmp_path_factory.mktemp("formats")
    mmu, hub = root / "mmu", root / "hub"
    out = {
        "legacysurvey": w.write_legacysurvey(mmu),
        "hsc": w.write_hsc(mmu),
        "desi": w.write_desi(mmu),
        "sdss": w.write_sdss(mmu),
        "gaia": w.write_gaia(mmu, healpix=1234),
        "gaia2": w.write_gaia(mmu, healpix=1235, seed=7),
        "gaia_split": w.write_gaia(root / "split", healpix=7, xp="split"),
        "ssl_legacysurvey": w.write_ssl_legacysurvey(mmu),
    }
    for survey in ("legacysurvey", "hsc", "desi", "sdss", "gaia", "ssl_legacysurvey"):
        out[f"{survey}.parquet"] = w.write_hf_parquet(hub / survey, survey, out[survey].columns, row_group_rows=2)
    matched = {k: v[:5] for k, v in out["legacysurvey"].columns.items()}  # row i of both is one object
    out["matched_ls"] = w.Written(out["legacysurvey"].path, matched)
    out["xmatch"] = w.write_crossmatch_arrow(
        root / "xmatch" / "ls_desi", ("legacysurvey", matched), ("desi", out["desi"].columns), batch_rows=2
    )
    out["tutorial.fits"] = w.write_aion_tutorial(
        root / "tut" / "provabgs_legacysurvey_eval_v2.fits", matched, out["desi"].columns
    )
    out["tutorial.hdf5"] = w.write_aion_tutorial(root / "tut" / "provabgs.hdf5", matched, out["desi"].columns, "hdf5")
    out["stellar"] = w.write_aion_stellar_tutorial(
        root / "tut" / "gaia_desi.fits", out["gaia"].columns, out["desi"].columns
    )
    out["root"] = w.Written(root, {})
    return out


def _strs(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values).reshape(-1).tolist()]


# ---------------------------------------------------------------------------------------------------- detection


def test_detects_every_format_by_content(files, tmp_path):
    assert detect(files["legacysurvey"].path) == "mmu-hdf5"
    assert detect(files["legacysurvey.parquet"].path) == "mmu-parquet"
    assert detect(files["xmatch"].path) == "mmu-arrow"
    assert detect(files["tutorial.hdf5"].path) == "aion-tutorial-hdf5"
    assert detect(files["tutorial.fits"].path) == "aion-tutorial-fits"
    assert set(FORMATS) == {"mmu-hdf5", "mmu-parquet", "mmu-arrow", "aion-tutorial-hdf5", "aion-tutorial-fits"}
    # the extension says nothing: a Parquet shard named .hdf5 is Parquet, an HDF5 file named .parquet is HDF5
    fake = tmp_path / "001-of-001.hdf5"
    shutil.copy(files["desi.parquet"].path, fake)
    assert detect(fake) == "mmu-parquet"
    with open_source(fake) as source:
        assert source.format == "mmu-parquet" and source.num_rows == 5
    other = tmp_path / "train-00000-of-00001.parquet"
    shutil.copy(files["desi"].path, other)
    assert detect(other) == "mmu-hdf5"


def test_unknown_file_is_one_line_naming_it_and_the_formats(tmp_path):
    text = tmp_path / "notes.hdf5"
    text.write_text("ra,dec\n150.1,2.2\n")
    with pytest.raises(ValueError) as error:
        open_source(text)
    message = str(error.value)
    assert "\n" not in message and str(text) in message
    assert all(name in message for name in FORMATS)
    with pytest.raises(FileNotFoundError, match="no such file"):
        open_source(tmp_path / "missing.hdf5")
    with pytest.raises(ValueError, match="dataset_info.json"):
        open_source(tmp_path)  # a directory that is not a saved dataset


# ------------------------------------------------------------------------------------------------------- MMU HDF5


def test_legacysurvey_hdf5(files):
    written = files["legacysurvey"].columns
    with open_source(files["legacysurvey"].path) as source:
        assert (source.format, source.survey, source.num_rows) == ("mmu-hdf5", "legacysurvey", 6)
        assert source.relative_name == "legacysurvey/dr10_south_21/healpix=1234/001-of-001.hdf5"
        image = source.read((None, "image_array"), 0, 6)
        assert image.shape == (6, 4, 112, 112) and image.dtype == np.float32
        np.testing.assert_array_equal(image, written["image_array"])
        assert _strs(source.read((None, "image_band"), 2, 3)) == ["des-g", "des-r", "des-i", "des-z"]
        mask = source.read((None, "image_mask"), 0, 6)
        assert mask.dtype == bool and mask.shape == (6, 112, 112)
        assert mask[0].all() and not mask[1, :, 5:9].any() and mask[1, :, 10:].all()  # True = good
        ids = source.read((None, "object_id"), 0, 6)
        assert ids.dtype.kind == "S" and ids.dtype.itemsize == 16 and ids[0] == written["object_id"][0]
        assert b"-" in ids[0]
        catalog = source.read((None, "catalog_FLUX_G"), 0, 6)
        assert catalog.shape == (6, 20) and catalog.dtype == np.dtype(">f4")  # sweep dtype, big-endian
        counts = (source.read((None, "catalog_TYPE"), 0, 6) > 0).sum(axis=1)
        assert counts[0] == 20 and (catalog[counts < 20][:, -1] == 0).all()  # zero padding
        segmentation = source.read((None, "object_mask"), 0, 6)
        assert segmentation.dtype == np.uint8 and set(np.unique(segmentation)) <= set(range(7))
        assert source.read((None, "FLUX_G"), 0, 6).dtype == np.dtype(">f4")
        np.testing.assert_array_equal(source.read((None, "ra"), 0, 6), source.read((None, "RA"), 0, 6))
        assert source.read((None, "TYPE"), 0, 6).dtype == np.dtype("S3")
        assert source.chunk_rows() == source.dataset((None, "image_array")).chunks[0]
        assert source.dataset((None, "image_array")).compression == "lzf"


def test_hsc_hdf5_big_endian_images_and_per_band_masks(files):
    written = files["hsc"].columns
    with open_source(files["hsc"].path) as source:
        assert source.survey == "hsc" and source.relative_name.startswith("hsc/pdr3_dud_22.5/healpix=1234/")
        image = source.read((None, "image_array"), 1, 4)
        assert image.dtype == np.dtype(">f4") and image.shape == (3, 5, 112, 112)
        np.testing.assert_array_equal(image, written["image_array"][1:4])
        mask = source.read((None, "image_mask"), 0, 5)
        assert mask.shape == (5, 5, 112, 112) and not mask[2, 3, 40:44].any() and mask[2, :3].all()
        assert _strs(source.read((None, "image_band"), 0, 1)) == ["hsc-g", "hsc-r", "hsc-i", "hsc-z", "hsc-y"]
        assert source.read((None, "object_id"), 0, 5).dtype == np.dtype(">i8")
        assert source.dataset((None, "image_array")).compression == "gzip"


def test_desi_hdf5_spectra_mask_and_placeholder(files):
    written = files["desi"].columns
    with open_source(files["desi"].path) as source:
        assert source.survey == "desi" and source.chunk_rows() == 1  # contiguous, as the script writes
        wavelength = source.read((None, "spectrum_lambda"), 0, 5)
        assert wavelength.shape == (5, 7781)
        np.testing.assert_allclose(wavelength[3, [0, -1]], [3600.0, 3600.0 + 0.8 * 7780])
        mask = source.read((None, "spectrum_mask"), 0, 5)
        ivar = source.read((None, "spectrum_ivar"), 0, 5)
        assert mask[ivar < 1e-6].all()  # True = bad
        assert (mask & (ivar > 0)).any()  # flagged pixels that keep their ivar
        np.testing.assert_array_equal(source.read((None, "spectrum_flux"), 2, 5), written["spectrum_flux"][2:5])
        flux_g = source.read((None, "FLUX_G"), 0, 5)
        assert flux_g[1] == -99.0 and (flux_g[[0, 2, 3, 4]] > 0).all()
        np.testing.assert_array_equal(source.read((None, "TARGETID"), 0, 5), source.read((None, "object_id"), 0, 5))


def test_sdss_hdf5_padding(files):
    written = files["sdss"].columns
    lengths = written["native_length"]
    with open_source(files["sdss"].path) as source:
        assert source.survey == "sdss" and source.relative_name.startswith("sdss/boss/healpix=1234/")
        width = int(lengths.max())
        assert source.row_shape((None, "spectrum_flux")) == (width,)
        flux = source.read((None, "spectrum_flux"), 0, 5)
        wavelength = source.read((None, "spectrum_lambda"), 0, 5)
        assert flux.dtype == np.dtype(">f4") and wavelength.dtype == np.dtype("<f4")
        for i, length in enumerate(lengths):
            assert (wavelength[i, :length] > 3500).all() and (wavelength[i, length:] == -1).all()
            assert (flux[i, length:] == flux[i, length - 1]).all()  # 'edge' padding
            np.testing.assert_allclose(np.diff(np.log10(wavelength[i, :length].astype(np.float64))), 1e-4, rtol=1e-3)
        ids = source.read((None, "object_id"), 0, 5)
        assert ids.dtype == np.dtype("S19")
        np.testing.assert_array_equal(ids, source.read((None, "SPECOBJID"), 0, 5))


def test_gaia_hdf5_source_ids_unique_across_healpix_files(files):
    names, ids = set(), []
    for key in ("gaia", "gaia2"):
        with open_source(files[key].path) as source:
            assert source.survey == "gaia" and (None, "object_id") not in source.columns
            assert source.row_shape((None, "coeff")) == (110,)
            names.add(source.relative_name)
            ids += source.read((None, "source_id"), 0, source.num_rows).tolist()
            assert source.relative_name == f"gaia/healpix={files[key].columns['healpix'][0]}/001-of-001.hdf5"
    assert len(names) == 2 and len(set(ids)) == len(ids) == 16
    with open_source(files["gaia"].path) as source:
        parallax = source.read((None, "parallax"), 0, 8)
        assert np.isnan(parallax[2]) and np.isfinite(np.delete(parallax, 2)).all()
    with open_source(files["gaia_split"].path) as source:
        assert (None, "coeff") not in source.columns
        bp, rp = source.read((None, "bp_coefficients"), 0, 8), source.read((None, "rp_coefficients"), 0, 8)
        assert bp.shape == rp.shape == (8, 55)
        np.testing.assert_array_equal(bp, files["gaia_split"].columns["bp_coefficients"])


def test_ssl_legacysurvey_three_band_images(files):
    with open_source(files["ssl_legacysurvey"].path) as source:
        assert source.survey == "ssl_legacysurvey" and source.row_shape((None, "image_array")) == (3, 112, 112)
        assert _strs(source.read((None, "image_band"), 0, 1)) == ["des-g", "des-r", "des-z"]
        assert (None, "image_mask") not in source.columns and (None, "image_ivar") not in source.columns


# --------------------------------------------------------------------------------------------------- HF Parquet


@pytest.mark.parametrize("survey", ["legacysurvey", "hsc", "desi", "sdss", "gaia", "ssl_legacysurvey"])
def test_parquet_shard_reads_like_the_hdf5_release(files, survey):
    """Every column the HF builder carries reads as the MMU HDF5 column, across row-group boundaries (2 rows each)."""
    parquet, hdf5 = files[f"{survey}.parquet"], files[survey]
    with open_source(parquet.path) as shard, open_source(hdf5.path) as release:
        assert shard.format == "mmu-parquet" and shard.survey == survey
        assert shard.relative_name.endswith("/train-00000-of-00001.parquet") and shard.chunk_rows() == 2
        assert shard.num_rows == release.num_rows
        compared = 0
        for key in shard.columns:
            if key not in release.columns or key[1] in ("object_id", "healpix", "ZWARN", "ZWARNING"):
                continue
            got = shard.read(key, 1, 4)  # rows of row groups 0 and 1
            want = release.read(key, 1, 4)
            if key[1] == "image_mask" and want.ndim == 3:  # legacysurvey: one mask, repeated per band by the builder
                want = np.repeat(want[:, None], got.shape[1], axis=1)
            if want.dtype.kind == "f" or got.dtype.kind == "f":
                np.testing.assert_array_equal(got, want.astype(np.float32), err_msg=str(key))
            else:
                np.testing.assert_array_equal(got, want, err_msg=str(key))
            compared += 1
        assert compared >= {"gaia": 40, "hsc": 40, "desi": 15, "sdss": 6}.get(survey, 10)
        if survey == "desi":  # the builder stores `not ZWARN`: True = no warning
            np.testing.assert_array_equal(shard.read((None, "ZWARN"), 0, 5), release.read((None, "ZWARN"), 0, 5) == 0)
        if survey == "sdss":  # stored as bool(ZWARNING): True = warning
            np.testing.assert_array_equal(
                shard.read((None, "ZWARNING"), 0, 5), release.read((None, "ZWARNING"), 0, 5) != 0
            )
        id_key = (None, "source_id") if survey == "gaia" else (None, "object_id")
        id_column = "source_id" if survey == "gaia" else "object_id"
        assert _strs(shard.read(id_key, 0, shard.num_rows)) == _strs(release.read((None, id_column), 0, shard.num_rows))


def test_parquet_string_ids_lose_the_bytes_literal(files):
    import pyarrow.parquet as pq

    raw = pq.read_table(files["legacysurvey.parquet"].path, columns=["object_id"]).column(0).to_pylist()
    assert raw[0].startswith("b'")  # the builders' str(bytes) quirk
    with open_source(files["legacysurvey.parquet"].path) as shard:
        ids = shard.read((None, "object_id"), 0, 6)
    np.testing.assert_array_equal(ids, files["legacysurvey"].columns["object_id"])


def test_parquet_png_columns_and_catalog(files):
    written = files["legacysurvey"].columns
    with open_source(files["legacysurvey.parquet"].path) as shard:
        np.testing.assert_array_equal(shard.read((None, "object_mask"), 0, 6), written["object_mask"])
        np.testing.assert_array_equal(shard.read((None, "image_rgb"), 3, 5), written["image_rgb"][3:5])
        catalog_x = shard.read((None, "catalog_X"), 0, 6)
        assert catalog_x.shape == (6, 20) and catalog_x.dtype == np.float32  # the builder's float32
        np.testing.assert_array_equal(catalog_x, written["catalog_X"].astype(np.float32))


def test_parquet_ragged_sdss_spectra_are_padded_like_the_release(files, tmp_path):
    """Rows from two healpix files padded to different widths share one shard (and one row group)."""
    first = files["sdss"]
    second = w.write_sdss(tmp_path / "mmu", n=3, healpix=77, seed=11)
    shard = w.write_hf_parquet(tmp_path / "hub" / "sdss", "sdss", [first.columns, second.columns], row_group_rows=3)
    with open_source(shard.path) as source:
        assert source.row_shape((None, "spectrum_flux")) == (-1,)
        got = {k: source.read((None, f"spectrum_{k}"), 4, 7) for k in ("flux", "ivar", "lambda", "mask")}
    rows = [(first.columns, 4), (second.columns, 0), (second.columns, 1)]
    width = max(c["spectrum_flux"].shape[1] for c, _ in rows)
    assert got["flux"].shape == (3, width)
    for i, (columns, row) in enumerate(rows):
        n = int(columns["native_length"][row])
        for k in ("flux", "ivar", "lambda", "mask"):
            np.testing.assert_array_equal(got[k][i, :n], columns[f"spectrum_{k}"][row, :n].astype(got[k].dtype))
        assert (got["lambda"][i, n:] == -1).all() and (got["ivar"][i, n:] == 0).all() and got["mask"][i, n:].all()
        assert (got["flux"][i, n:] == got["flux"][i, n - 1]).all()


def test_parquet_reads_one_row_group_at_a_time(files, monkeypatch):
    """No whole-shard read: each read_row_group asks for one row group and one leaf."""
    import pyarrow.parquet as pq

    calls = []
    original = pq.ParquetFile.read_row_group

    def spy(self, index, columns=None, **kwargs):
        calls.append((index, tuple(columns)))
        return original(self, index, columns=columns, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    monkeypatch.setattr(pq.ParquetFile, "read", lambda *a, **k: pytest.fail("whole-file read"))
    with open_source(files["hsc.parquet"].path) as shard:
        shard.read((None, "image_array"), 0, 2)
        shard.read((None, "image_array"), 1, 2)  # same row group: cached
        shard.read((None, "image_array"), 2, 5)
    assert calls == [(0, ("image.flux",)), (1, ("image.flux",)), (2, ("image.flux",))]


# -------------------------------------------------------------------------------------------- cross-match Arrow


def test_crossmatch_arrow_dir(files):
    ls, desi = files["matched_ls"].columns, files["desi"].columns
    with open_source(files["xmatch"].path) as source:
        assert (source.format, source.survey, source.num_rows, source.chunk_rows()) == ("mmu-arrow", None, 5, 2)
        assert source.relative_name == "ls_desi"
        np.testing.assert_array_equal(source.read(("legacysurvey", "image_array"), 1, 4), ls["image_array"][1:4])
        np.testing.assert_array_equal(source.read(("legacysurvey", "object_mask"), 0, 5), ls["object_mask"])
        np.testing.assert_array_equal(source.read(("desi", "spectrum_flux"), 0, 5), desi["spectrum_flux"])
        np.testing.assert_array_equal(source.read(("desi", "spectrum_mask"), 3, 5), desi["spectrum_mask"][3:5])
        np.testing.assert_array_equal(source.read(("legacysurvey", "FLUX_I"), 0, 5), ls["FLUX_I"].astype(np.float32))
        # names both builders declare hold the right dataset's value, and the files cannot say which that was
        assert source.shared[(None, "FLUX_G")] == ("legacysurvey", "desi")
        assert ("legacysurvey", "FLUX_G") not in source.columns and ("desi", "FLUX_G") not in source.columns
        np.testing.assert_array_equal(source.read((None, "FLUX_G"), 0, 5), desi["FLUX_G"].astype(np.float32))
        assert _strs(source.read((None, "object_id"), 0, 5)) == _strs(desi["object_id"])


def test_same_objects_read_identically_as_hdf5_parquet_and_arrow(files):
    """One modality layer serves all three: the same objects give the same arrays (masks broadcast per band)."""
    ls_h5, ds_h5 = open_source(files["legacysurvey"].path), open_source(files["desi"].path)
    ls_pq, ds_pq = open_source(files["legacysurvey.parquet"].path), open_source(files["desi.parquet"].path)
    arrow = open_source(files["xmatch"].path)
    try:
        for canonical in (
            "image_array",
            "image_band",
            "image_ivar",
            "image_mask",
            "image_psf_fwhm",
            "object_mask",
            "catalog_FLUX_R",
        ):
            h5 = ls_h5.read((None, canonical), 0, 5)
            pq = ls_pq.read((None, canonical), 0, 5)
            ar = arrow.read(("legacysurvey", canonical), 0, 5)
            if canonical == "image_mask":
                h5 = np.broadcast_to(h5[:, None], pq.shape)
            np.testing.assert_array_equal(pq, ar)
            np.testing.assert_array_equal(pq, h5.astype(pq.dtype))
        for canonical in ("spectrum_flux", "spectrum_ivar", "spectrum_lambda", "spectrum_mask", "Z"):
            h5 = ds_h5.read((None, canonical), 0, 5)
            np.testing.assert_array_equal(
                ds_pq.read((None, canonical), 0, 5), h5.astype(np.float32 if h5.dtype.kind == "f" else h5.dtype)
            )
            np.testing.assert_array_equal(arrow.read(("desi", canonical), 0, 5), ds_pq.read((None, canonical), 0, 5))
    finally:
        for source in (ls_h5, ds_h5, ls_pq, ds_pq, arrow):
            source.close()


# -------------------------------------------------------------------------------------------- AION tutorial files


@pytest.mark.parametrize("which", ["tutorial.fits", "tutorial.hdf5"])
def test_aion_tutorial_table_keeps_image_spectrum_and_provabgs(files, which):
    ls, desi = files["matched_ls"].columns, files["desi"].columns
    with open_source(files[which].path) as source:
        assert source.format == ("aion-tutorial-fits" if which.endswith("fits") else "aion-tutorial-hdf5")
        assert source.columns[("legacysurvey", "image_array")] == "legacysurvey_image_flux"
        np.testing.assert_array_equal(source.read(("legacysurvey", "image_array"), 1, 5), ls["image_array"][1:5])
        mask = source.read(("desi", "spectrum_mask"), 0, 5)
        assert mask.dtype == bool
        np.testing.assert_array_equal(mask, desi["spectrum_mask"])  # True = bad, as in the release
        np.testing.assert_array_equal(source.read(("desi", "spectrum_flux"), 2, 3), desi["spectrum_flux"][2:3])
        np.testing.assert_array_equal(source.read(("legacysurvey", "FLUX_R"), 0, 5), ls["FLUX_R"].astype(np.float32))
        np.testing.assert_array_equal(source.read(("provabgs", "TARGETID"), 0, 5), desi["TARGETID"])
        np.testing.assert_array_equal(source.read(("provabgs", "RA"), 0, 5), desi["ra"])
        assert (None, "Z_HP") in source.columns and ("desi", "Z") in source.columns
        assert source.row_shape(("desi", "spectrum_lambda")) == (7781,)


def test_aion_stellar_tutorial_split_xp(files):
    gaia = files["gaia"].columns
    with open_source(files["stellar"].path) as source:
        bp = source.read(("gaia", "bp_coefficients"), 0, 5)
        np.testing.assert_allclose(bp, gaia["coeff"][:5, :55].astype(np.float64))
        np.testing.assert_allclose(source.read(("gaia", "rp_coefficients"), 0, 5), gaia["coeff"][:5, 55:])
        np.testing.assert_array_equal(source.read(("gaia", "source_id"), 0, 5), gaia["source_id"][:5])


# ------------------------------------------------------------------------------------------ discover and describe


def test_discover_finds_shards_by_content(files, tmp_path):
    root = Path(files["root"].path)
    (root / "README.txt").write_text("not data")
    (root / "mmu" / "legacysurvey" / "dr10_south_21" / "healpix=1234" / "001-of-001.hdf5.lock").write_text("")
    found = discover([root])
    expected = sorted(
        os.path.normpath(str(files[k].path))
        for k in (
            "legacysurvey",
            "hsc",
            "desi",
            "sdss",
            "gaia",
            "gaia2",
            "gaia_split",
            "ssl_legacysurvey",
            "legacysurvey.parquet",
            "hsc.parquet",
            "desi.parquet",
            "sdss.parquet",
            "gaia.parquet",
            "ssl_legacysurvey.parquet",
            "xmatch",
            "tutorial.fits",
            "tutorial.hdf5",
            "stellar",
        )
    )
    assert found == expected  # the arrow directory is one shard; its .arrow files are not listed
    pattern = str(root / "mmu" / "gaia" / "healpix=*" / "*.hdf5")
    assert discover([pattern, files["gaia"].path]) == sorted([str(files["gaia"].path), str(files["gaia2"].path)])
    with pytest.raises(FileNotFoundError):
        discover([str(root / "nothing" / "*.hdf5")])
    with pytest.raises(ValueError, match="README.txt: not a known format"):
        discover([root / "README.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no input shard"):
        discover([tmp_path / "empty"])


def test_describe_lists_the_mapping(files):
    with open_source(files["legacysurvey.parquet"].path) as source:
        rows = {row["column"]: row for row in describe(source)}
        text = describe_text(source)
    assert rows["image.flux"]["canonical"] == "image_array" and rows["image.flux"]["shape"] == (4, 112, 112)
    assert rows["image.mask"]["dtype"] == "|b1" and "True = good" in rows["image.mask"]["note"]
    assert rows["object_mask"]["shape"] == (112, 112) and rows["catalog.TYPE"]["shape"] == (20,)
    assert text.splitlines()[0].endswith(
        "mmu-parquet, 6 rows, survey legacysurvey, name legacysurvey/dr10_south_21/train-00000-of-00001.parquet"
    )
    assert "image.flux" in text and "-:image_array" in text
    with open_source(files["tutorial.fits"].path) as source:
        rows = {row["column"]: row for row in describe(source)}
    assert rows["legacysurvey_image_flux"]["survey"] == "legacysurvey"
    assert rows["desi_spectrum_mask"]["note"].startswith("True = bad")


def test_relative_names_and_prefixes():
    from aion_fast.data.formats import locate, split_prefix

    assert locate("/d/mmu/gaia/healpix=5/001-of-001.hdf5") == ("gaia", "gaia/healpix=5/001-of-001.hdf5")
    hub = "/c/datasets--MultimodalUniverse--desi/snapshots/abc123/edr_sv3/train-00001-of-00004.parquet"
    assert locate(hub) == ("desi", "desi/edr_sv3/train-00001-of-00004.parquet")
    assert locate("/x/dr10_south_21/healpix=9/001-of-001.hdf5") == (
        "legacysurvey",
        "legacysurvey/dr10_south_21/healpix=9/001-of-001.hdf5",
    )
    assert locate("/x/y/healpix=9/001-of-001.hdf5") == (None, "y/healpix=9/001-of-001.hdf5")  # the config folder
    assert locate("/x/y/cat.fits") == (None, "y/cat.fits")
    assert split_prefix("legacysurvey_image_flux") == ("legacysurvey", "image_array")
    assert split_prefix("ssl_legacysurvey_image_array") == ("ssl_legacysurvey", "image_array")
    assert split_prefix("gaia_dr3_object_id") == ("gaia", "object_id")
    assert split_prefix("gaia_bp_coefficients") == ("gaia", "bp_coefficients")
    assert split_prefix("provabgs_Z_HP") == ("provabgs", "Z_HP")
    assert split_prefix("phot_g_mean_flux") == (None, "phot_g_mean_flux")
