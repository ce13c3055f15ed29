"""``aion-fast encode`` end to end: Parquet + manifest + errors ledger, equality with aion_fast.embed, resume after
SIGKILL, 2-process torchrun, deterministic shard assignment, and the DALI loader's CPU mode."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import aion_fast
from aion_fast import modalities as m
from aion_fast.data.make_sample import desi_columns, gaia_columns, legacysurvey_columns, write_mmu
from aion_fast.jobs.dali import dali_available
from aion_fast.jobs.encode import EncodeOptions, run_encode
from aion_fast.jobs.manifest import distributed_rank, shards_of_rank
from aion_fast.jobs.plan import shard_name, shard_names
from tests.utils import assert_close_rel

ROOT = Path(__file__).resolve().parents[2]


def _crossmatched(path, n_ls=4):
    """LS x DESI file: object 0 has NaN FLUX_G, object 1 an all-masked spectrum, object 2 a wrong band list,
    object 3 NaN everywhere (nothing usable)."""
    ls, desi = legacysurvey_columns(n=n_ls), desi_columns()
    desi = {k: np.concatenate([v, v[:1]])[:n_ls] for k, v in desi.items()}
    ls["FLUX_G"][0] = np.nan
    desi["spectrum_mask"][1] = True
    ls["image_band"][2] = ["des-g", "des-r", "des-g", "des-z"]
    ls["image_mask"][3] = False
    desi["spectrum_ivar"][3] = 0
    for name in ("FLUX_G", "FLUX_R", "FLUX_I", "FLUX_Z", "FLUX_W1", "FLUX_W2", "FLUX_W3", "FLUX_W4", "EBV",
                 "SHAPE_R", "SHAPE_E1", "SHAPE_E2"):  # fmt: skip
        ls[name][3] = np.nan
    columns = {f"legacysurvey_{k}": v for k, v in ls.items()} | {f"desi_{k}": v for k, v in desi.items()}
    columns["object_id"] = np.array([f"obj{i}" for i in range(n_ls)])
    return write_mmu(path, columns, chunk_rows=2), ls, desi


def _table(path):
    return pq.read_table(path).to_pydict()


def test_errors_ledger_and_embeddings_equal_embed(tmp_path, demo_checkpoint):
    path, ls, desi = _crossmatched(tmp_path / "in" / "x.hdf5")
    options = EncodeOptions(model=str(demo_checkpoint), modalities=("image", "spectrum", "photometry"), batch_size=4,
                            workers=0, progress=False)  # fmt: skip
    summary = run_encode([path], tmp_path / "out", options)
    assert summary["objects_encoded"] == 3 and summary["objects_failed"] == 1
    rows = _table(tmp_path / "out" / f"{shard_name(path)}.parquet")
    assert rows["object_id"] == ["obj0", "obj1", "obj2"] and rows["row"] == [0, 1, 2]
    errors = _table(tmp_path / "out" / "errors.parquet")
    ledger = {(o, mod): (reason, ok) for o, mod, reason, ok in
              zip(errors["object_id"], errors["modality"], errors["reason"], errors["object_encoded"])}  # fmt: skip
    assert ledger[("obj0", "LegacySurveyFluxG")][1] is True
    assert "empty spectrum" in ledger[("obj1", "spectrum")][0]
    assert "band" in ledger[("obj2", "image")][0]
    assert ledger[("obj3", "*")][1] is False and "no usable modality" in ledger[("obj3", "*")][0]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["rows_written"] == 3 and manifest["objects_failed"] == 1
    assert manifest["inputs"][0]["size"] == os.path.getsize(path) and len(manifest["inputs"][0]["sha256"]) == 64
    assert manifest["job"]["model_config_sha256"] and manifest["job"]["aion_fast_version"] == aion_fast.__version__

    # Each object alone through CodecManager + aion_fast.embed, built straight from the columns.
    model = aion_fast.AION.from_pretrained(demo_checkpoint)
    codecs = aion_fast.CodecManager(repo=demo_checkpoint)
    bands = ["DES-G", "DES-R", "DES-I", "DES-Z"]
    scalars = {c: cls for c, (cls, g) in __import__("aion_fast.data.mmu").data.mmu.SCALAR_COLUMNS.items()
               if g == "photometry" and c in ls}  # fmt: skip
    for row in range(3):
        given = []
        if row != 2:
            given.append(m.LegacySurveyImage(flux=torch.from_numpy(ls["image_array"][row : row + 1, :, 32:128, 32:128]),
                                             bands=bands))  # fmt: skip
        if row != 1:
            spec = {k: torch.from_numpy(desi[f"spectrum_{k}"][row : row + 1]) for k in ("flux", "ivar", "mask")}
            given.append(m.DESISpectrum(wavelength=torch.from_numpy(desi["spectrum_lambda"][row : row + 1]), **spec))
        given += [cls(value=torch.from_numpy(ls[c][row : row + 1])) for c, cls in scalars.items()
                  if np.isfinite(ls[c][row])]  # fmt: skip
        expected = aion_fast.embed(model, codecs.encode(*given))[0]
        assert_close_rel(torch.tensor(rows["embedding"][row]), expected, rtol=1e-5, what=f"object {row}")
        assert sorted(rows["modalities"][row]) == sorted(type(g).__name__ for g in given)


def test_float16_and_bad_options(tmp_path, demo_checkpoint):
    path = write_mmu(tmp_path / "g.hdf5", gaia_columns(n=5))
    base = dict(model=str(demo_checkpoint), workers=0, progress=False)
    run_encode([path], tmp_path / "a", EncodeOptions(modalities=("gaia",), **base))
    run_encode([path], tmp_path / "b", EncodeOptions(modalities=("gaia",), dtype="float16", **base))
    a = np.array(_table(tmp_path / "a" / f"{shard_name(path)}.parquet")["embedding"])
    b = np.array(_table(tmp_path / "b" / f"{shard_name(path)}.parquet")["embedding"])
    schema = pq.read_schema(tmp_path / "b" / f"{shard_name(path)}.parquet")
    assert schema.field("embedding").type.value_type == "halffloat"
    np.testing.assert_allclose(b, a.astype(np.float16).astype(np.float64), rtol=0, atol=0)
    with pytest.raises(ValueError, match="--modalities"):
        run_encode([path], tmp_path / "c", EncodeOptions(modalities=("images",), **base))
    with pytest.raises(FileNotFoundError, match="no such file"):
        run_encode([tmp_path / "nope.hdf5"], tmp_path / "c", EncodeOptions(**base))


def test_checkpoint_digest_cache_follows_the_weight_files(tmp_path, demo_checkpoint, monkeypatch):
    import shutil

    from aion_fast.jobs.manifest import cached_checkpoint_digest
    from aion_fast.model.checkpoint import checkpoint_digest

    monkeypatch.setenv("AION_FAST_CACHE_DIR", str(tmp_path / "cache"))
    checkpoint = Path(shutil.copytree(demo_checkpoint, tmp_path / "ckpt"))
    first = cached_checkpoint_digest(checkpoint)
    assert first == checkpoint_digest(checkpoint) and (tmp_path / "cache" / "checkpoint_digests.json").is_file()
    assert cached_checkpoint_digest(checkpoint) == first
    weights = checkpoint / "model.safetensors"
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1
    stat = weights.stat()
    save_file(tensors, weights)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # a rewrite changes the mtime: recomputed
    assert cached_checkpoint_digest(checkpoint) == checkpoint_digest(checkpoint) != first


def test_auto_workers():
    from aion_fast.jobs.loader import AUTO_WORKERS_MIN_BATCHES, auto_workers

    assert auto_workers(None, "cpu", AUTO_WORKERS_MIN_BATCHES) == 0
    assert auto_workers(None, "cpu", AUTO_WORKERS_MIN_BATCHES + 1) == 1
    assert auto_workers(3, "cpu", 1) == 3


def test_shard_assignment_is_disjoint_and_deterministic():
    names = shard_names([f"/d/s{i}/healpix={h}/001-of-001.hdf5" for i in range(2) for h in (3, 1, 2)])
    assert names[0] == "s0__healpix=3__001-of-001"
    for world in (1, 2, 3, 7):
        assigned = [shards_of_rank(names, r, world) for r in range(world)]
        assert sorted(sum(assigned, [])) == list(range(len(names)))
        assert assigned == [shards_of_rank(list(reversed(names))[::-1], r, world) for r in range(world)]
    assert distributed_rank({"RANK": "1", "WORLD_SIZE": "2"}) == (1, 2, "torchrun")
    slurm = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "4", "SLURM_ARRAY_TASK_COUNT": "3"}
    assert distributed_rank(slurm) == (1, 3, "slurm-array")
    assert distributed_rank({}) == (0, 1, "single")


def _many_shards(folder, count=5):
    return [write_mmu(folder / f"s{i}" / "001-of-001.hdf5", legacysurvey_columns(n=3, seed=i)) for i in range(count)]


def _cli(args, env=None, **kwargs):
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return [sys.executable, "-m", "aion_fast.cli", "encode", *map(str, args)], full_env


def _contents(folder):
    return {p.name: pq.read_table(p).to_pydict() for p in sorted(Path(folder).glob("*.parquet"))}


def test_sigkill_then_rerun_equals_uninterrupted(tmp_path, demo_checkpoint):
    """Killed after two complete shards and inside the third (row groups of 2 rows = one part per batch of 2): the
    re-run skips the complete shards, resumes the third after its last recorded part, and the output equals an
    uninterrupted run's, row groups included."""
    inputs = [write_mmu(tmp_path / "in" / f"s{i}" / "001-of-001.hdf5", legacysurvey_columns(n=n, seed=i))
              for i, n in enumerate((3, 3, 24))]  # fmt: skip
    common = [*inputs, "--model", demo_checkpoint, "--batch-size", "2", "--workers", "0", "--row-group-rows", "2"]
    command, env = _cli([*common, "--quiet", "--output", tmp_path / "killed"])
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = tmp_path / "killed" / "_parts"
    progress = parts / "s2__001-of-001.progress.json"
    deadline = time.monotonic() + 90
    while not progress.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    records = sorted(p.name for p in parts.glob("*.json") if not p.name.endswith("progress.json"))
    assert records == ["s0__001-of-001.json", "s1__001-of-001.json"]
    rows_done = json.loads(progress.read_text())["rows_done"]
    assert 2 <= rows_done < 24, f"kill landed at row {rows_done} of the last shard; the test needs mid-shard"
    assert not (tmp_path / "killed" / "manifest.json").exists()

    rerun = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = json.loads(rerun.stdout[rerun.stdout.index("{") : rerun.stdout.rindex("}") + 1])
    assert summary["shards_skipped_complete"] == 2 and summary["objects_skipped_done_before"] == 6 + rows_done
    assert summary["objects_encoded"] == 24 - rows_done
    command, env = _cli([*common, "--output", tmp_path / "clean"])  # with the progress bar: objects/s and ETA
    clean = subprocess.run(command, env=env, cwd=ROOT, check=True, capture_output=True, text=True, timeout=120)
    bar = clean.stderr.replace(" ", "")  # tqdm redraws at its own pace: only the final count is certain
    assert "obj/s" in bar and "30/30" in bar and "<00:00" in bar  # rate and ETA
    assert _contents(tmp_path / "killed") == _contents(tmp_path / "clean")
    for folder in ("killed", "clean"):
        assert pq.ParquetFile(tmp_path / folder / "s2__001-of-001.parquet").metadata.num_row_groups == 12
        assert sorted(p.name for p in (tmp_path / folder / "_parts").iterdir()) == sorted(
            f"s{i}__001-of-001.{kind}" for i in range(3) for kind in ("json", "errors.parquet")
        )
    assert not list((tmp_path / "killed").glob("*.tmp"))


def test_torchrun_two_processes_same_rows_as_one(tmp_path, demo_checkpoint):
    inputs = _many_shards(tmp_path / "in", count=3)
    common = [*inputs, "--model", demo_checkpoint, "--batch-size", "4", "--workers", "0", "--quiet"]
    command, env = _cli([*common, "--output", tmp_path / "one"])
    subprocess.run(command, env=env, cwd=ROOT, check=True, capture_output=True, timeout=120)
    command, env = _cli([*common, "--output", tmp_path / "two"], env={"AION_FAST_DIST_TIMEOUT_S": "60"})
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *command[1:]]
    result = subprocess.run(torchrun, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert '"rank": 1' in result.stdout and '"world_size": 2' in result.stdout
    one, two = _contents(tmp_path / "one"), _contents(tmp_path / "two")
    assert one.keys() == two.keys()
    for name in one:  # same rows; torchrun runs each rank with OMP_NUM_THREADS=1, so sums round differently
        if "embedding" in one[name]:
            vectors = [torch.tensor(t.pop("embedding")) for t in (one[name], two[name])]
            assert_close_rel(vectors[1], vectors[0], rtol=1e-5, what=name)
        assert one[name] == two[name], name
    two = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert two["rows_written"] == 9 and len(two["shards"]) == 3


@pytest.mark.skipif(not dali_available(), reason="nvidia-dali is not installed (pip install nvidia-dali-cuda130)")
def test_dali_cpu_loader_equals_default_loader(tmp_path, demo_checkpoint):
    """DALI's CPU mode: same cropped flux, preprocessed input equal to image_preprocess bit for bit (Legacy Survey and
    HSC, with a NaN at a masked pixel and a shuffled band order), same tokens and the same Parquet output."""
    from aion_fast.codecs import CodecManager
    from aion_fast.data.formats import open_source
    from aion_fast.data.mmu import prepare_rows
    from aion_fast.jobs.dali import DaliImagePipeline
    from aion_fast.modalities import BAND_CLAMP_MAX, BAND_TO_INDEX
    from aion_fast.ops.image_preprocess import image_preprocess

    ls = legacysurvey_columns(n=5)
    ls["image_array"][1, 2, 70, 70] = np.nan
    ls["image_mask"][1, 70, 70] = False
    ls["image_band"][3] = ["des-z", "des-g", "des-r", "des-i"]
    rng = np.random.default_rng(3)
    hsc = {
        "image_array": (rng.normal(size=(3, 5, 160, 160)) * 30).astype(np.float32),
        "image_band": np.array([["hsc-g", "hsc-r", "hsc-i", "hsc-z", "hsc-y"]] * 3),
        "object_id": np.arange(3),
    }
    codecs = CodecManager(repo=demo_checkpoint)
    for name, columns, n in (("ls", ls, 5), ("hsc", hsc, 3)):
        with open_source(write_mmu(tmp_path / f"{name}.hdf5", columns)) as source:
            default = prepare_rows(source, 0, n, ["image"]).parts[0]
            dali = prepare_rows(source, 0, n, ["image"], image_pipeline=DaliImagePipeline(batch_size=2)).parts[0]
        image = default.modality
        assert default.preprocessed is None and np.array_equal(default.rows, dali.rows)
        assert torch.equal(image.flux, dali.modality.flux), name
        bands = image.bands
        expected = image_preprocess(image.flux, [BAND_TO_INDEX[b] for b in bands], [BAND_CLAMP_MAX[b] for b in bands],
                                    10.0 ** (4.5 / 2.5) if name == "hsc" else 1.0)  # fmt: skip
        assert torch.equal(dali.preprocessed, expected), name
        codec = codecs.codec(type(image))
        assert torch.equal(codec.encode_preprocessed(dali.preprocessed, len(bands)), codec.encode(image)), name

    base = dict(model=str(demo_checkpoint), workers=0, progress=False, batch_size=4)
    path = tmp_path / "ls.hdf5"
    run_encode([path], tmp_path / "torch", EncodeOptions(**base))
    summary = run_encode([path], tmp_path / "dali", EncodeOptions(loader="dali", **base))
    assert summary["loader"] == "dali" and summary["objects_encoded"] == 5
    assert _contents(tmp_path / "torch") == _contents(tmp_path / "dali")


def test_a_spectrum_the_codec_refuses_goes_to_the_ledger_alone(tmp_path, demo_checkpoint):
    """One object whose wavelengths miss the codec's grid (nm instead of Angstrom) costs only that object."""
    desi = desi_columns()
    desi["spectrum_lambda"][1] = desi["spectrum_lambda"][1] * 10.0  # 36000-98000: off the latent grid
    path = write_mmu(tmp_path / "desi" / "healpix=1" / "001-of-001.hdf5", desi)
    options = EncodeOptions(model=str(demo_checkpoint), batch_size=8, workers=0, progress=False)
    summary = run_encode([path], tmp_path / "out", options)
    assert summary["objects_encoded"] == len(desi["object_id"]) - 1 and summary["objects_failed"] == 1
    rows = _table(tmp_path / "out" / f"{shard_name(path)}.parquet")
    assert 1 not in rows["row"] and rows["row"] == sorted(rows["row"])
    errors = _table(tmp_path / "out" / "errors.parquet")
    ledger = {(r, mod): reason for r, mod, reason in zip(errors["row"], errors["modality"], errors["reason"])}
    assert set(ledger) == {(1, "spectrum"), (1, "*")} and "wavelength grid" in ledger[(1, "spectrum")]


def test_rows_a_codec_refuses_cost_only_those_rows():
    """The encoder's fallback: a batch the codec refuses is retried part by part, then row by row."""
    from aion_fast.data.mmu import ObjectBatch, Part
    from aion_fast.jobs.encoder import batch_tokens

    class Codecs:  # refuses any batch holding a negative value, as a codec's own input check would
        def encode_batches(self, batches, preprocessed):
            for batch in batches:
                if (batch.value < 0).any():
                    raise ValueError(f"value < 0 in rows {torch.nonzero(batch.value < 0).flatten().tolist()}")
            return [(batch.value * 10).long() for batch in batches]

    values = torch.tensor([1.0, -2.0, 3.0, 4.0, -5.0])
    batch = ObjectBatch("f", 0, [str(i) for i in range(5)], np.zeros(5), np.zeros(5))
    batch.parts = [Part(m.Z(value=values[:3]), np.arange(3)), Part(m.Z(value=values[3:]), np.arange(3, 5))]
    tokens, present = batch_tokens(Codecs(), batch, "cpu")
    assert present["tok_z"].tolist() == [True, False, True, True, False]
    assert tokens["tok_z"][:, 0].tolist() == [10, 0, 30, 40, 0]
    assert [(i.row, i.modality) for i in batch.issues] == [(1, "Z"), (4, "Z")]
    assert "value < 0" in batch.issues[0].reason


def test_catalog_and_segmentation_reach_a_model_that_takes_them(tmp_path, demo_checkpoint):
    """A Legacy Survey file as MMU writes it (catalog_* zero-padded to 20, object_mask type codes) through a checkpoint
    that takes the catalog: embeddings equal aion_fast.embed on the codecs' tokens with empty slots masked out."""
    import shutil

    from aion_fast.codecs import CatalogCodec, CodecManager
    from aion_fast.data.formats import open_source
    from aion_fast.data.mmu import prepare_rows
    from aion_fast.demo import DEMO_TRANSFORMER
    from aion_fast.model import AION, architecture
    from tests.data_tests.mmu_writers import write_legacysurvey

    checkpoint = tmp_path / "ckpt"
    shutil.copytree(demo_checkpoint, checkpoint)
    catalog = CatalogCodec()
    generator = torch.Generator().manual_seed(0)
    for name in ("SHAPE_E1", "SHAPE_E2", "SHAPE_R"):
        draws = torch.rand(20_000, generator=generator) * 2 - 0.5
        catalog.quantizer.quantizers[name].update(draws, generator=generator)
    catalog.save_pretrained(checkpoint, modality=m.LegacySurveyCatalog)
    config = json.loads((checkpoint / "config.json").read_text())
    domains = sorted({*config["domains_in"], "catalog"})
    torch.manual_seed(0)
    AION(architecture(domains, domains, **DEMO_TRANSFORMER)).save_pretrained(checkpoint)

    written = write_legacysurvey(tmp_path / "mmu", n=4)
    options = EncodeOptions(model=str(checkpoint), batch_size=8, workers=0, progress=False)
    summary = run_encode([written.path], tmp_path / "out", options)
    assert summary["modalities_not_in_model"] == {"LegacySurveySegmentationMap": "the model does not take tok_segmap"}
    rows = _table(tmp_path / "out" / f"{shard_name(written.path)}.parquet")

    with open_source(written.path) as source:
        batch = prepare_rows(source, 0, 4, ["image", "photometry", "catalog"])
    codecs = CodecManager(repo=checkpoint)
    tokens, absent = {}, {}
    for part in batch.parts:
        key = part.modality.token_key
        encoded = codecs.encode(part.modality)[key].reshape(len(part.rows), -1)
        tokens[key] = torch.zeros(4, encoded.shape[1], dtype=torch.long)
        tokens[key][part.rows] = encoded
        absent[key] = torch.ones(4, encoded.shape[1], dtype=torch.bool)
        absent[key][part.rows] = False
    with_catalog = [i for i in range(4) if not absent["catalog"][i].all()]
    assert [i for i, used in zip(rows["row"], rows["modalities"]) if "LegacySurveyCatalog" in used] == with_catalog
    assert 0 < len(with_catalog) < 4  # the fixture's object 3 has no source inside the 96x96 window
    empty = tokens["catalog"] == catalog.mask_value
    assert empty[with_catalog].any() and (~empty[with_catalog]).any()
    tokens["catalog"] = tokens["catalog"].masked_fill(empty, 0)
    absent["catalog"] |= empty
    model = AION.from_pretrained(checkpoint).eval()
    expected = aion_fast.embed(model, tokens, pooling="mean", input_mask=absent)
    assert_close_rel(torch.tensor(np.array(rows["embedding"])), expected[rows["row"]], rtol=1e-5)


def test_bf16_precision_reports_its_agreement_with_fp32(tmp_path):
    """--precision bf16: codec networks and transformer under bf16 autocast (CPU here), agreement with fp32 measured on
    the first batch and recorded in the summary and the manifest; an fp32 output refuses a bf16 run."""
    sample = ROOT / "aion_fast" / "data" / "sample" / "mmu" / "legacysurvey"
    base = dict(batch_size=16, workers=0, progress=False)
    fp32 = run_encode([sample], tmp_path / "fp32", EncodeOptions(**base))
    bf16 = run_encode([sample], tmp_path / "bf16", EncodeOptions(precision="bf16", **base))
    assert fp32["precision"] == "fp32" and fp32["precision_check"] is None
    check = bf16["precision_check"]
    assert bf16["precision"] == "bf16" and check["objects"] == 8
    assert check["token_agreement"]["tok_image"] >= 0.95 and check["token_agreement"]["tok_flux_g"] == 1.0
    assert check["embedding_cosine"]["min"] >= 0.999
    manifest = json.loads((tmp_path / "bf16" / "manifest.json").read_text())
    assert manifest["job"]["precision"] == "bf16"
    assert manifest["shards"][0]["precision_check"]["token_agreement"] == check["token_agreement"]
    a = np.array(_table(next((tmp_path / "fp32").glob("legacysurvey*.parquet")))["embedding"])
    b = np.array(_table(next((tmp_path / "bf16").glob("legacysurvey*.parquet")))["embedding"])
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() >= 0.999
    with pytest.raises(ValueError, match="precision"):
        run_encode([sample], tmp_path / "fp32", EncodeOptions(precision="bf16", **base))
    with pytest.raises(ValueError, match="--precision"):
        run_encode([sample], tmp_path / "x", EncodeOptions(precision="fp8", **base))
