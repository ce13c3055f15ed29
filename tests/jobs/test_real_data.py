"""``aion-fast encode`` end to end on files laid out as the MMU build scripts, HF builders, cross-match utility and
AION tutorials write them (:mod:`tests.data_tests.mmu_writers`): issue 13's "what it must show".

Small files (3-8 objects, 112x112 stamps), batches of 4 objects, the bundled demo model (``model=None``) or the
untrained ``demo_checkpoint``; tokens are compared exactly, embeddings with ``assert_close_rel`` (see each test).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file, save_file

import aion_fast
from aion_fast import modalities as m
from aion_fast.cli import main
from aion_fast.codecs import CodecManager
from aion_fast.data.formats import open_source
from aion_fast.data.mmu import prepare_rows
from aion_fast.hub import default_model
from aion_fast.jobs.encode import EncodeOptions, run_encode
from aion_fast.jobs.encoder import BatchEncoder
from aion_fast.jobs.plan import shard_name
from tests.data_tests import mmu_writers as w
from tests.utils import assert_close_rel, assert_tokens_equal

DES = ["DES-G", "DES-R", "DES-I", "DES-Z"]
#: Where the codecs' central 96x96 window starts in the fixtures' 112x112 stamps.
EDGE = (112 - 96) // 2


def _encode(inputs, output, **options):
    defaults = dict(batch_size=4, workers=0, progress=False)
    return run_encode([str(p) for p in inputs], output, EncodeOptions(**{**defaults, **options}))


def _rows(output, path) -> dict[str, dict]:
    """The output rows of one input, by object id."""
    table = pq.read_table(Path(output) / f"{shard_name(path)}.parquet").to_pylist()
    return {row["object_id"]: row for row in table}


def _ledger(output) -> list[dict]:
    return pq.read_table(Path(output) / "errors.parquet").to_pylist()


def _manifest(output) -> dict:
    return json.loads((Path(output) / "manifest.json").read_text())


def _copy_checkpoint(source, target) -> Path:
    shutil.copytree(source, target)
    return Path(target)


# ------------------------------------------------------------------------------------------ 1. the AION tutorial


@pytest.mark.parametrize("fmt", ["fits", "hdf5"])
def test_aion_tutorial_file_keeps_its_image_and_provabgs_ids(tmp_path, fmt):
    ls = w.write_legacysurvey(tmp_path / "mmu", n=4)
    desi = w.write_desi(tmp_path / "mmu", n=3)
    tutorial = w.write_aion_tutorial(tmp_path / "tutorial" / f"provabgs_legacysurvey_eval_v2.{fmt}", ls.columns,
                                     desi.columns, fmt=fmt)  # fmt: skip
    summary = _encode([tutorial.path], tmp_path / "out")
    assert summary["objects_encoded"] == 3 and summary["objects_failed"] == 0
    rows = _rows(tmp_path / "out", tutorial.path)
    ids = [str(v) for v in tutorial.columns["provabgs_TARGETID"]]
    assert sorted(rows) == sorted(ids)
    for i, object_id in enumerate(ids):
        row = rows[object_id]
        assert {"LegacySurveyImage", "DESISpectrum"} <= set(row["modalities"]), row["modalities"]
        assert row["ra"] == tutorial.columns["provabgs_RA"][i] and row["dec"] == tutorial.columns["provabgs_DEC"][i]
    assert _manifest(tmp_path / "out")["shards"][0]["id_column"] == "provabgs/TARGETID"

    # The image is the file's, cropped as the codec crops it: the embedding equals one built from the columns.
    model_dir, _ = default_model()
    model = aion_fast.AION.from_pretrained(model_dir)
    codecs = CodecManager(repo=model_dir)
    window = slice(EDGE, EDGE + 96)
    flux = torch.from_numpy(np.ascontiguousarray(tutorial.columns["legacysurvey_image_flux"][:, :, window, window]))
    spectrum = m.DESISpectrum(
        flux=torch.from_numpy(tutorial.columns["desi_spectrum_flux"]),
        ivar=torch.from_numpy(tutorial.columns["desi_spectrum_ivar"]),
        mask=torch.from_numpy(tutorial.columns["desi_spectrum_mask"]),
        wavelength=torch.from_numpy(tutorial.columns["desi_spectrum_lambda"]),
    )
    fluxes = [cls(value=torch.from_numpy(tutorial.columns[f"legacysurvey_{name}"]))
              for name, cls in (("FLUX_G", m.LegacySurveyFluxG), ("FLUX_R", m.LegacySurveyFluxR),
                                ("FLUX_I", m.LegacySurveyFluxI), ("FLUX_Z", m.LegacySurveyFluxZ))]  # fmt: skip
    assert sorted(rows[ids[0]]["modalities"]) == sorted(
        ["LegacySurveyImage", "DESISpectrum", *(type(f).__name__ for f in fluxes)]
    )
    expected = aion_fast.embed(model, codecs.encode(m.LegacySurveyImage(flux=flux, bands=DES), spectrum, *fluxes))
    got = torch.tensor([rows[i]["embedding"] for i in ids])
    assert_close_rel(got, expected, rtol=1e-5, what="tutorial embeddings")


def test_tutorial_image_without_bands_must_have_the_survey_bands(tmp_path):
    """No ``image_band`` column: a Legacy Survey image is read as DES-G/R/I/Z, so 3 channels are an error."""
    ls = w.write_legacysurvey(tmp_path / "mmu", n=4)
    desi = w.write_desi(tmp_path / "mmu", n=3)
    columns = {**ls.columns, "image_array": ls.columns["image_array"][:, :3]}
    tutorial = w.write_aion_tutorial(tmp_path / "tutorial" / "three.hdf5", columns, desi.columns, fmt="hdf5")
    with open_source(tutorial.path) as source, pytest.raises(ValueError, match="3 channels and no image_band"):
        prepare_rows(source, 0, 3, ["image"])


# ------------------------------------------------------------------------------------------------- 2. Gaia ids


def test_gaia_ids_are_source_ids_unique_across_healpix_files(tmp_path):
    files = [w.write_gaia(tmp_path / "mmu", n=6, healpix=hp, seed=seed) for hp, seed in ((11, 4), (12, 5))]
    summary = _encode([f.path for f in files], tmp_path / "out")
    assert summary["objects_encoded"] == 12
    seen: list[str] = []
    for written in files:
        rows = _rows(tmp_path / "out", written.path)
        assert sorted(rows) == sorted(str(v) for v in written.columns["source_id"])
        seen += list(rows)
    assert len(set(seen)) == 12, "Gaia ids repeat across healpix files"
    shards = _manifest(tmp_path / "out")["shards"]
    assert [s["id_column"] for s in shards] == ["source_id", "source_id"]
    assert [s["shard"] for s in shards] == ["gaia__healpix=11__001-of-001", "gaia__healpix=12__001-of-001"]


# ------------------------------------------------------------------------------------- 3. DESI -99 photometry


def test_desi_placeholder_flux_in_ledger_and_photometry_only_on_request(tmp_path):
    desi = w.write_desi(tmp_path / "mmu", n=3)
    ids = [str(v) for v in desi.columns["TARGETID"]]
    assert desi.columns["FLUX_G"][1] == -99.0  # object 1: a target without Legacy Survey photometry

    _encode([desi.path], tmp_path / "default")
    rows = _rows(tmp_path / "default", desi.path)
    assert all(rows[i]["modalities"] == ["DESISpectrum"] for i in ids), "DESI targeting photometry used by default"
    assert not [e for e in _ledger(tmp_path / "default") if e["modality"].startswith("LegacySurvey")]

    _encode([desi.path], tmp_path / "asked", modalities=("spectrum", "photometry"))
    rows = _rows(tmp_path / "asked", desi.path)
    assert {"LegacySurveyFluxG", "LegacySurveyFluxR", "LegacySurveyFluxZ"} <= set(rows[ids[0]]["modalities"])
    assert not {"LegacySurveyFluxG", "LegacySurveyFluxR", "LegacySurveyFluxZ"} & set(rows[ids[1]]["modalities"])
    assert "DESISpectrum" in rows[ids[1]]["modalities"]
    ledger = {(e["object_id"], e["modality"]): e for e in _ledger(tmp_path / "asked")}
    for name in ("LegacySurveyFluxG", "LegacySurveyFluxR", "LegacySurveyFluxZ"):
        entry = ledger[(ids[1], name)]
        assert "-99" in entry["reason"] and "placeholder" in entry["reason"], entry["reason"]
        assert entry["object_encoded"] is True and entry["row"] == 1
    assert not [key for key in ledger if key[0] != ids[1]], "only object 1 has a placeholder"


# ------------------------------------------------------------------------------------ 4. two-survey collision


def _two_survey_file(path, n=3) -> dict[str, np.ndarray]:
    """A cross-matched HDF5 (prefixed columns) where Legacy Survey and DESI both give FLUX_G (DESI's = targeting
    photometry, here deliberately different)."""
    rng = np.random.default_rng(7)
    columns = {
        "object_id": np.arange(100, 100 + n, dtype=np.int64),
        "legacysurvey_ra": rng.uniform(150, 151, n),
        "legacysurvey_dec": rng.uniform(2, 3, n),
        "legacysurvey_FLUX_G": rng.uniform(1, 30, n).astype(">f4"),
        "desi_FLUX_G": rng.uniform(100, 300, n).astype(">f4"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        for key, value in columns.items():
            handle.create_dataset(key, data=value)
    return columns


def test_two_surveys_for_one_modality_error_then_source_picks(tmp_path, capsys):
    path = tmp_path / "xmatch" / "ls_desi.hdf5"
    columns = _two_survey_file(path)
    with pytest.raises(ValueError) as error:
        _encode([path], tmp_path / "out", modalities=("photometry",))
    message = str(error.value)
    assert "legacysurvey" in message and "desi" in message and "--source" in message, message
    assert not (tmp_path / "out" / f"{shard_name(path)}.parquet").exists()

    _encode([path], tmp_path / "out", modalities=("photometry",), sources=(("photometry", "legacysurvey"),))
    rows = _rows(tmp_path / "out", path)
    assert sorted(rows) == ["100", "101", "102"]
    model_dir, _ = default_model()
    model = aion_fast.AION.from_pretrained(model_dir)
    tokens = CodecManager(repo=model_dir).encode(m.LegacySurveyFluxG(value=torch.from_numpy(
        columns["legacysurvey_FLUX_G"].astype(np.float32))))  # fmt: skip
    got = torch.tensor([rows[str(100 + i)]["embedding"] for i in range(3)])
    assert_close_rel(got, aion_fast.embed(model, tokens), rtol=1e-5, what="legacysurvey FLUX_G embeddings")

    capsys.readouterr()
    status = main(["encode", str(path), "--output", str(tmp_path / "cli"), "--modalities", "photometry", "--quiet"])
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "legacysurvey" in err and "desi" in err and "--source" in err
    status = main(["encode", str(path), "--output", str(tmp_path / "cli"), "--modalities", "photometry", "--quiet",
                   "--source", "photometry=legacysurvey", "--batch-size", "4"])  # fmt: skip
    assert status == 0 and sorted(_rows(tmp_path / "cli", path)) == ["100", "101", "102"]


# ---------------------------------------------------------------------------- 5. one file per invocation, resume


def test_one_file_per_invocation_keeps_every_result_and_refuses_another_model(tmp_path, demo_checkpoint):
    checkpoint = _copy_checkpoint(demo_checkpoint, tmp_path / "ckpt")
    files = [w.write_desi(tmp_path / "mmu", n=2, healpix=hp, seed=hp) for hp in (21, 22)]
    assert files[0].path.name == files[1].path.name == "001-of-001.hdf5"
    out = tmp_path / "out"
    for written in files:
        summary = _encode([written.path], out, model=str(checkpoint))
        assert summary["shards_encoded"] == 1
    manifest = _manifest(out)
    assert [s["shard"] for s in manifest["shards"]] == [shard_name(f.path) for f in files]
    assert [Path(i["input"]) for i in manifest["inputs"]] == [f.path.resolve() for f in files]
    for written in files:
        assert sorted(_rows(out, written.path)) == sorted(str(v) for v in written.columns["TARGETID"])
    first = out / f"{shard_name(files[0].path)}.parquet"
    before = (first.stat().st_mtime_ns, first.read_bytes())

    again = _encode([files[0].path], out, model=str(checkpoint))
    assert again["shards_encoded"] == 0 and again["shards_skipped_complete"] == 1 and again["objects_encoded"] == 0
    assert (first.stat().st_mtime_ns, first.read_bytes()) == before
    assert len(_manifest(out)["shards"]) == 2

    with pytest.raises(ValueError, match="another job.*model") as error:  # the bundled trained demo model
        _encode([files[0].path], out)
    assert "new --output" in str(error.value)
    weights = load_file(checkpoint / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name] + 1e-3  # the same checkpoint path, one weight changed
    save_file(weights, checkpoint / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="model_weights_sha256") as error:
        _encode([files[1].path], out, model=str(checkpoint))
    assert "new --output" in str(error.value)
    assert (first.stat().st_mtime_ns, first.read_bytes()) == before and len(_manifest(out)["shards"]) == 2


# ----------------------------------------------------------------------------------- 6. a codec the model lacks


def test_checkpoint_without_a_codec_encodes_the_rest(tmp_path, demo_checkpoint):
    checkpoint = _copy_checkpoint(demo_checkpoint, tmp_path / "ckpt")
    shutil.rmtree(checkpoint / "codecs" / "phot_bp_mean_flux")
    files = [w.write_gaia(tmp_path / "mmu", n=4, healpix=hp, seed=hp) for hp in (31, 32)]
    summary = _encode([f.path for f in files], tmp_path / "out", model=str(checkpoint))
    assert summary["objects_encoded"] == 8 and summary["objects_failed"] == 0
    assert list(summary["modalities_not_in_model"]) == ["GaiaFluxBp"]
    assert "phot_bp_mean_flux" in summary["modalities_not_in_model"]["GaiaFluxBp"]
    for shard in _manifest(tmp_path / "out")["shards"]:
        assert list(shard["modalities_not_in_model"]) == ["GaiaFluxBp"]
        assert "GaiaFluxBp" not in shard["modalities_used"] and "GaiaFluxG" in shard["modalities_used"]
    for written in files:
        for row in _rows(tmp_path / "out", written.path).values():
            assert "GaiaFluxBp" not in row["modalities"]
            assert {"GaiaXpBp", "GaiaXpRp", "GaiaFluxG", "GaiaFluxRp"} <= set(row["modalities"])
    assert not [e for e in _ledger(tmp_path / "out") if e["modality"] == "GaiaFluxBp"], "per-object noise"


# --------------------------------------------------------------------------------------- 7. a 3-band image


def _job_tokens(checkpoint, path, groups=None):
    """The job's tokens (``BatchEncoder.tokens``) of every row of ``path``, read as the job reads them."""
    with open_source(path) as source:
        batch = prepare_rows(source, 0, source.num_rows, groups)
    tokens, present = BatchEncoder(checkpoint).tokens(batch)
    return batch, tokens, present


def test_three_band_ssl_legacysurvey_image_encodes(tmp_path):
    ssl = w.write_ssl_legacysurvey(tmp_path / "mmu", n=3)
    summary = _encode([ssl.path], tmp_path / "out")
    assert summary["objects_encoded"] == 3
    rows = _rows(tmp_path / "out", ssl.path)
    assert sorted(rows) == ["0", "1", "2"] and all(r["modalities"] == ["LegacySurveyImage"] for r in rows.values())

    model_dir, _ = default_model()
    batch, tokens, present = _job_tokens(model_dir, ssl.path)
    window = slice(EDGE, EDGE + 96)
    flux = torch.from_numpy(np.ascontiguousarray(ssl.columns["image_array"][:, :, window, window]))
    image = m.LegacySurveyImage(flux=flux, bands=["DES-G", "DES-R", "DES-Z"])
    expected = CodecManager(repo=model_dir).encode(image)["tok_image"]
    assert bool(present["tok_image"].all())
    assert_tokens_equal(tokens["tok_image"], expected.reshape(3, -1), "3-band image tokens")
    four = m.LegacySurveyImage(flux=torch.cat([flux[:, :2], torch.zeros_like(flux[:, :1]), flux[:, 2:]], 1), bands=DES)
    assert not torch.equal(CodecManager(repo=model_dir).encode(four)["tok_image"], expected), "bands not told apart"
    model = aion_fast.AION.from_pretrained(model_dir)
    got = torch.tensor([rows[str(i)]["embedding"] for i in range(3)])
    assert_close_rel(got, aion_fast.embed(model, {"tok_image": expected}), rtol=1e-5, what="3-band embeddings")


# ------------------------------------------------------------------------------- 8. catalog and segmentation map


@pytest.fixture(scope="module")
def catalog_segmap_checkpoint(tmp_path_factory):
    """The untrained demo checkpoint plus a CatalogCodec (shape quantizers fitted on plausible values) and a small
    ScalarFieldCodec made sensitive as in tests/codecs (the demo model has neither)."""
    from aion_fast.codecs.catalog import CatalogCodec
    from aion_fast.codecs.scalar_field import ScalarFieldCodec
    from aion_fast.demo import build_untrained_checkpoint
    from tests.codecs.conftest import SEGMAP_SMALL_CONFIG, segmap_randomize_reference

    root = build_untrained_checkpoint(tmp_path_factory.mktemp("catalog_segmap_ckpt"))
    generator = torch.Generator().manual_seed(5)
    catalog = CatalogCodec()
    draws = {"SHAPE_E1": torch.randn(20_000, generator=generator) * 0.2,
             "SHAPE_E2": torch.randn(20_000, generator=generator) * 0.2,
             "SHAPE_R": torch.rand(20_000, generator=generator) * 3}  # fmt: skip
    for name, values in draws.items():
        catalog.quantizer.quantizers[name].update(values, generator=generator)
    catalog.save_pretrained(root, modality=m.LegacySurveyCatalog)
    torch.manual_seed(6)
    segmap = segmap_randomize_reference(ScalarFieldCodec(**SEGMAP_SMALL_CONFIG), seed=6)
    segmap.save_pretrained(root, modality=m.LegacySurveySegmentationMap)
    return root


def test_catalog_and_segmentation_tokens_equal_their_codecs(tmp_path, catalog_segmap_checkpoint):
    ls = w.write_legacysurvey(tmp_path / "mmu", n=4)
    c = ls.columns
    batch, tokens, present = _job_tokens(catalog_segmap_checkpoint, ls.path, ["catalog", "segmentation"])
    codecs = CodecManager(repo=catalog_segmap_checkpoint)

    # Catalog, built by hand: positions in the central 96x96 window; padding and sources outside it are 9999.
    fields = ("X", "Y", "SHAPE_E1", "SHAPE_E2", "SHAPE_R")
    padding = np.all([c[k] == 0 for k in c if k.startswith("catalog_")], axis=0)
    x, y = c["catalog_X"] - EDGE, c["catalog_Y"] - EDGE
    inside = ~padding & (x >= 0) & (x < 96) & (y >= 0) & (y < 96)
    has = inside.any(axis=1)
    assert padding.any() and (~padding & ~inside).any() and has.any() and not has.all(), "fixture covers every case"
    values = {"X": x, "Y": y, **{f: c[f"catalog_{f}"].astype(np.float32) for f in fields[2:]}}
    hand = {f: torch.from_numpy(np.where(inside, v, 9999).astype(np.int64 if f in "XY" else np.float32)[has])
            for f, v in values.items()}  # fmt: skip
    expected = codecs.encode(m.LegacySurveyCatalog(**hand))["catalog"]
    assert present["catalog"].tolist() == has.tolist()
    assert_tokens_equal(tokens["catalog"][torch.from_numpy(has)], expected, "catalog tokens")
    assert (expected != 9999).any() and (expected == 9999).any()
    empty = [i.row for i in batch.issues if i.modality == "LegacySurveyCatalog"]
    assert empty == np.flatnonzero(~has).tolist()  # an object with no source in the window: in the ledger

    # Segmentation map: any object's pixels (type codes 1-6) are 1, the sky 0; the codec crops the 96x96 window.
    field = torch.from_numpy((c["object_mask"] > 0).astype(np.float32))
    expected = codecs.encode(m.LegacySurveySegmentationMap(field=field))["tok_segmap"]
    assert bool(present["tok_segmap"].all())
    assert_tokens_equal(tokens["tok_segmap"], expected.reshape(4, -1), "segmentation tokens")
    codes = codecs.encode(m.LegacySurveySegmentationMap(field=torch.from_numpy(c["object_mask"].astype(np.float32))))
    assert not torch.equal(codes["tok_segmap"], expected), "the codec cannot tell the rule from raw type codes"
    assert len({tuple(t.tolist()) for t in expected.reshape(4, -1)}) > 1


# ----------------------------------------------------------------------- 9. Parquet and Arrow equal to HDF5


def _prefixed_crossmatch(path, ls: dict, desi: dict) -> None:
    """The same Legacy Survey x DESI objects as MMU HDF5 columns prefixed with their survey, ids = TARGETID."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("object_id", data=desi["TARGETID"])
        for prefix, columns in (("legacysurvey", ls), ("desi", desi)):
            for key, value in columns.items():
                if key.startswith(("image_", "spectrum_")) and key != "spectrum_lsf":
                    handle.create_dataset(f"{prefix}_{key}", data=value)


def test_parquet_shard_and_arrow_crossmatch_equal_hdf5(tmp_path):
    """Same objects, same tokens, same model: the embeddings agree to 1e-5 relative (float32 reductions may group
    differently when a batch's row grouping differs; equal arrays give equal tokens, so nothing else may differ)."""
    ls = w.write_legacysurvey(tmp_path / "mmu", n=4)
    desi = w.write_desi(tmp_path / "mmu", n=4)
    ls_parquet = w.write_hf_parquet(tmp_path / "hub", "legacysurvey", ls.columns, row_group_rows=2)
    desi_parquet = w.write_hf_parquet(tmp_path / "hub", "desi", desi.columns, row_group_rows=2)
    _encode([ls.path, desi.path, ls_parquet.path, desi_parquet.path], tmp_path / "single")
    for hdf5, parquet in ((ls, ls_parquet), (desi, desi_parquet)):
        a, b = _rows(tmp_path / "single", hdf5.path), _rows(tmp_path / "single", parquet.path)
        assert sorted(a) == sorted(b) and len(a) == 4
        assert all(a[i]["modalities"] == b[i]["modalities"] for i in a)
        assert_close_rel(torch.tensor([b[i]["embedding"] for i in a]), torch.tensor([a[i]["embedding"] for i in a]),
                         rtol=1e-5, what=f"{hdf5.path.parts[-4]} Parquet vs HDF5")  # fmt: skip
    ls_rows, desi_rows = _rows(tmp_path / "single", ls.path), _rows(tmp_path / "single", desi.path)
    assert all({"LegacySurveyImage", "LegacySurveyFluxG"} <= set(r["modalities"]) for r in ls_rows.values())
    assert all(r["modalities"] == ["DESISpectrum"] for r in desi_rows.values())

    arrow = w.write_crossmatch_arrow(tmp_path / "crossmatch" / "ls_x_desi", ("legacysurvey", ls.columns),
                                     ("desi", desi.columns))  # fmt: skip
    hdf5 = tmp_path / "crossmatch" / "ls_x_desi_rows.hdf5"
    _prefixed_crossmatch(hdf5, ls.columns, desi.columns)
    # FLUX_G/R/Z and EBV are stored once for both surveys in the Arrow dir; photometry is not asked for, so no
    # --source is needed.
    _encode([arrow.path, hdf5], tmp_path / "crossmatched", modalities=("image", "spectrum"))
    a, b = _rows(tmp_path / "crossmatched", hdf5), _rows(tmp_path / "crossmatched", arrow.path)
    assert sorted(a) == sorted(b) == sorted(str(v) for v in desi.columns["TARGETID"])
    assert all(sorted(a[i]["modalities"]) == ["DESISpectrum", "LegacySurveyImage"] == sorted(b[i]["modalities"])
               for i in a)  # fmt: skip
    assert_close_rel(torch.tensor([b[i]["embedding"] for i in a]), torch.tensor([a[i]["embedding"] for i in a]),
                     rtol=1e-5, what="Arrow cross-match vs HDF5")  # fmt: skip


# ----------------------------------------------------------------------------- 10. SDSS spectra as the codec


def test_sdss_spectrum_tokens_equal_codec_on_unpadded_arrays(tmp_path, demo_checkpoint):
    sdss = w.write_sdss(tmp_path / "mmu", n=4)
    c = sdss.columns
    kept_ivar = c["spectrum_mask"] & (c["spectrum_ivar"] > 0) & (c["spectrum_lambda"] > 0)
    assert kept_ivar.any(axis=1).all(), "every row has masked pixels that keep ivar > 0 (SDSS and_mask)"
    batch, tokens, present = _job_tokens(demo_checkpoint, sdss.path, ["spectrum"])
    assert bool(present["tok_spectrum_sdss"].all()) and not batch.issues
    codecs = CodecManager(repo=demo_checkpoint)
    changed = 0
    for row, length in enumerate(c["native_length"].tolist()):
        arrays = {k: np.ascontiguousarray(c[f"spectrum_{k}"][row : row + 1, :length]) for k in
                  ("flux", "ivar", "mask", "lambda")}  # fmt: skip
        assert (arrays["lambda"] > 0).all()
        spectrum = {k: torch.from_numpy(arrays[k].astype(bool if k == "mask" else np.float32)) for k in arrays}
        expected = codecs.encode(m.SDSSSpectrum(flux=spectrum["flux"], ivar=spectrum["ivar"], mask=spectrum["mask"],
                                                wavelength=spectrum["lambda"]))["tok_spectrum_sdss"]  # fmt: skip
        assert_tokens_equal(tokens["tok_spectrum_sdss"][row : row + 1], expected, f"SDSS row {row}")
        zeroed = {k: v.clone() for k, v in spectrum.items()}
        zeroed["flux"][zeroed["mask"]] = 0
        zeroed["ivar"][zeroed["mask"]] = 0
        other = codecs.encode(m.SDSSSpectrum(flux=zeroed["flux"], ivar=zeroed["ivar"], mask=zeroed["mask"],
                                             wavelength=zeroed["lambda"]))["tok_spectrum_sdss"]  # fmt: skip
        changed += not torch.equal(other, expected)
    assert changed, "zeroing masked pixels first would give the same tokens: the test could not tell"


# ------------------------------------------------------------------------------------------ 11. CLI user errors


@pytest.mark.parametrize(
    "case", ["missing input", "unknown format", "bad --modalities", "bad --source", "unknown --source", "no model"]
)
def test_encode_user_errors_exit_2_with_one_line(tmp_path, capsys, case):
    gaia = w.write_gaia(tmp_path / "mmu", n=3)
    text = tmp_path / "notes.txt"
    text.write_text("ra,dec\n150.1,2.2\n")
    args = {
        "missing input": [str(tmp_path / "nope" / "001-of-001.hdf5")],
        "unknown format": [str(text)],
        "bad --modalities": [str(gaia.path), "--modalities", "gaia,images"],
        "bad --source": [str(gaia.path), "--source", "photometry"],
        "unknown --source": [str(gaia.path), "--source", "photometry=nosuchsurvey"],
        "no model": [str(gaia.path), "--model", str(tmp_path / "no_such_checkpoint")],
    }[case]
    expected = {
        "missing input": "nope",
        "unknown format": "notes.txt",
        "bad --modalities": "images",
        "bad --source": "GROUP=SURVEY",
        "unknown --source": "nosuchsurvey",
        "no model": "no_such_checkpoint: no such checkpoint directory",
    }[case]
    capsys.readouterr()
    status = main(["encode", *args, "--output", str(tmp_path / "out"), "--quiet"])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert status == 2, (status, captured.err)
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert lines[0].startswith("aion-fast encode: error:") and expected in lines[0], lines[0]
    assert not list((tmp_path / "out").glob("*.parquet"))
