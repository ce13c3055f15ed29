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
from aion_fast.jobs.manifest import distributed_rank, shard_names, shards_of_rank
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
    rows = _table(tmp_path / "out" / "x.parquet")
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
    a = np.array(_table(tmp_path / "a" / "g.parquet")["embedding"])
    b = np.array(_table(tmp_path / "b" / "g.parquet")["embedding"])
    assert pq.read_schema(tmp_path / "b" / "g.parquet").field("embedding").type.value_type == "halffloat"
    np.testing.assert_allclose(b, a.astype(np.float16).astype(np.float64), rtol=0, atol=0)
    with pytest.raises(ValueError, match="--modalities"):
        run_encode([path], tmp_path / "c", EncodeOptions(modalities=("images",), **base))
    with pytest.raises(ValueError, match="do not exist"):
        run_encode([tmp_path / "nope.hdf5"], tmp_path / "c", EncodeOptions(**base))


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
    inputs = _many_shards(tmp_path / "in")
    common = [*inputs, "--model", demo_checkpoint, "--batch-size", "2", "--workers", "0", "--quiet"]
    command, env = _cli([*common, "--output", tmp_path / "killed"])
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = tmp_path / "killed" / "_parts"
    deadline = time.monotonic() + 60
    while not list(parts.glob("*.json")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    done_at_kill = len(list(parts.glob("*.json")))
    assert 1 <= done_at_kill < len(inputs), f"kill landed after {done_at_kill} shards; the test needs mid-way"
    assert not (tmp_path / "killed" / "manifest.json").exists()

    command, env = _cli([*common, "--output", tmp_path / "killed"])
    rerun = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f'"shards_skipped_complete": {done_at_kill}' in rerun.stdout
    command, env = _cli([*common, "--output", tmp_path / "clean"])
    subprocess.run(command, env=env, cwd=ROOT, check=True, capture_output=True, timeout=120)
    assert _contents(tmp_path / "killed") == _contents(tmp_path / "clean")
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
    from aion_fast.data.mmu import MMUFile, prepare_rows
    from aion_fast.jobs.dali import DaliCropper

    path = write_mmu(tmp_path / "ls.hdf5", legacysurvey_columns(n=5))
    with MMUFile(path) as source:
        default = prepare_rows(source, 0, 5, ["image"])
        dali = prepare_rows(source, 0, 5, ["image"], crop=DaliCropper(batch_size=3))
    assert torch.equal(default.parts[0].modality.flux, dali.parts[0].modality.flux)
    base = dict(model=str(demo_checkpoint), workers=0, progress=False, batch_size=4)
    run_encode([path], tmp_path / "torch", EncodeOptions(**base))
    run_encode([path], tmp_path / "dali", EncodeOptions(loader="dali", **base))
    assert _contents(tmp_path / "torch") == _contents(tmp_path / "dali")
