"""``aion-fast encode`` and the other commands under concurrency, torn writes, changed inputs and hostile files.

One test (or more) per defect of the fault campaign (issue 19, items 1-20), each written as the failure it prevents;
items 10 and 20 are also tested where their code lives (tests/model/test_config_bounds.py,
tests/ops/test_op_preconditions.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from aion_fast.cli import main
from aion_fast.data.columns import SourceConflictError
from aion_fast.data.make_sample import desi_columns, legacysurvey_columns, write_mmu
from aion_fast.jobs.encode import EncodeOptions, run_encode
from aion_fast.jobs.lock import LOCK_NAME, OutputLock, OutputLockedError
from aion_fast.jobs.manifest import atomic_write_text, merge_manifest
from aion_fast.jobs.plan import OutputConflictError, shard_name, shard_names

ROOT = Path(__file__).resolve().parents[2]


def _options(checkpoint, **overrides):
    """Small batches and row groups; photometry only unless a test needs images or spectra (the fast codecs)."""
    values = {"model": str(checkpoint), "batch_size": 2, "workers": 0, "progress": False, "row_group_rows": 2,
              "modalities": ("photometry",)}  # fmt: skip
    return EncodeOptions(**{**values, **overrides})


def _contents(folder):
    return {p.name: pq.read_table(p).to_pydict() for p in sorted(Path(folder).glob("*.parquet"))}


def _ledger(folder):
    return pq.read_table(Path(folder) / "errors.parquet").to_pylist()


def _cli(capsys, *args):
    """``aion-fast ARGS`` in this process: (exit status, stdout, stderr)."""
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _one_line_error(status, err, *words):
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for word in words:
        assert str(word) in lines[0], (word, lines[0])
    return lines[0]


def _subprocess(args, **kwargs):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return [sys.executable, "-m", "aion_fast.cli", *map(str, args)], env


# 1, 11 ----------------------------------------------------------------------------------------------------------------


def test_second_job_on_a_running_output_refuses_and_the_first_equals_an_uninterrupted_run(
    tmp_path, demo_checkpoint, capsys
):
    """Two processes on one output (item 1: another --row-group-rows; item 11: the same command): both late jobs
    stop with one line naming the running one, the first finishes, and its output equals a clean run's; no .tmp is
    left behind."""
    path = write_mmu(tmp_path / "in" / "s0" / "001-of-001.hdf5", legacysurvey_columns(n=8, seed=1))
    common = ["encode", path, "--model", demo_checkpoint, "--batch-size", "2", "--workers", "0", "--quiet",
              "--modalities", "image,photometry"]  # fmt: skip
    command, env = _subprocess([*common, "--row-group-rows", "2", "--output", tmp_path / "out"])
    first = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    progress = tmp_path / "out" / "_parts" / "s0__001-of-001.progress.json"
    deadline = time.monotonic() + 90
    while not progress.exists() and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.005)
    first.send_signal(signal.SIGSTOP)  # holds the lock, mid-shard, while this process tries (twice)
    try:
        assert first.poll() is None, "the first job ended before the test could stop it mid-shard"
        for rows in ("3", "2"):
            status, _, err = _cli(capsys, *common, "--row-group-rows", rows, "--output", tmp_path / "out")
            _one_line_error(status, err, "in use by another aion-fast encode", f"pid {first.pid}", "another --output")
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err[-2000:]
    run_encode([path], tmp_path / "clean", _options(demo_checkpoint, modalities=("image", "photometry")))
    assert _contents(tmp_path / "out") == _contents(tmp_path / "clean")
    assert pq.ParquetFile(tmp_path / "out" / "s0__001-of-001.parquet").metadata.num_row_groups == 4
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_lock_is_released_on_exit_and_a_stale_pid_file_is_taken_over(tmp_path, monkeypatch):
    """Item 1: in-process view of the lock: held -> refused naming pid and host; released -> free. Where flock is
    unsupported, a .pid file naming a dead process of this host is stale and taken over; a live one refuses."""
    import socket

    held = OutputLock(tmp_path / "out")
    with pytest.raises(OutputLockedError, match=rf"pid {os.getpid()} on host {socket.gethostname()}"):
        OutputLock(tmp_path / "out")
    held.release()
    OutputLock(tmp_path / "out").release()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()

    def no_flock(fd, operation):
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr("fcntl.flock", no_flock)
    marker = tmp_path / "out" / f"{LOCK_NAME}.pid"
    marker.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": 0}))
    lock = OutputLock(tmp_path / "out")  # stale: taken over
    assert json.loads(marker.read_text())["pid"] == os.getpid()
    with pytest.raises(OutputLockedError, match=rf"pid {os.getpid()}"):
        OutputLock(tmp_path / "out")
    lock.release()
    assert not marker.exists()


def test_concurrent_merges_take_turns_and_leftover_tmp_files_are_removed(tmp_path, demo_checkpoint):
    """Item 11: SLURM ranks finishing together merge the manifest at once (one used to die on the other's .tmp);
    a .tmp file a killed run left is removed by the next run."""
    paths = [write_mmu(tmp_path / "in" / f"s{i}" / "001-of-001.hdf5", legacysurvey_columns(n=3, seed=i))
             for i in range(2)]  # fmt: skip
    run_encode(paths, tmp_path / "out", _options(demo_checkpoint))
    expected = json.loads((tmp_path / "out" / "manifest.json").read_text())
    with ThreadPoolExecutor(6) as pool:
        manifests = list(pool.map(lambda _: merge_manifest(tmp_path / "out"), range(12)))
    assert all(m == expected for m in manifests)
    leftover = tmp_path / "out" / "_parts" / "s0__001-of-001.json.12345.tmp"
    leftover.write_text("{")
    run_encode(paths, tmp_path / "out", _options(demo_checkpoint))
    assert not leftover.exists() and not list((tmp_path / "out").rglob("*.tmp"))


# 2, 8, 16 -------------------------------------------------------------------------------------------------------------


def test_wrong_column_shapes_stop_the_job_naming_file_and_column(tmp_path, demo_checkpoint, capsys):
    """Item 2: an (N, 2) object_id used to leave the shard unwritten while the job reported success; item 8:
    spectrum columns of different shapes gave IndexError tracebacks; item 16: a wrong-size image_mask and a 0-d ra
    gave messages naming neither file nor column. Each now stops the job at start-up with one line naming both."""
    ls = legacysurvey_columns(n=4)
    cases = {
        "object_id": ({**ls, "object_id": np.arange(8).reshape(4, 2)}, "(2,) per row"),
        "image_mask": ({**ls, "image_mask": np.ones((4, 50, 50), bool)}, "pixel mask"),
        "ra": ({k: v for k, v in ls.items() if k != "ra"}, "0-d"),
    }
    desi = desi_columns()
    cases["spectrum_ivar"] = ({**desi, "spectrum_ivar": desi["spectrum_ivar"][:, :-3]}, "like spectrum_flux")
    for column, (columns, words) in cases.items():
        survey = "desi" if column.startswith("spectrum") else "legacysurvey"
        path = write_mmu(tmp_path / column / survey / "001-of-001.hdf5", columns)
        if column == "ra":
            with h5py.File(path, "r+") as handle:
                handle["ra"] = np.float64(1.0)  # one value for the whole file
        status, _, err = _cli(capsys, "encode", path, "--model", demo_checkpoint, "--output", tmp_path / f"o{column}",
                              "--quiet", "--workers", "0")  # fmt: skip
        _one_line_error(status, err, path, column, words)
        assert not list((tmp_path / f"o{column}").glob("*.parquet"))


# 3, 4 -----------------------------------------------------------------------------------------------------------------


def _copy_checkpoint(source, target):
    shutil.copytree(source, target)
    return target


def test_output_of_another_model_or_codec_config_refuses(tmp_path, demo_checkpoint):
    """Item 3: an output re-used with another model kept both models' shards (search then ranked across them);
    item 4: a changed codec config.json was not part of the job's identity. Both now refuse, naming what differs;
    the earlier shards are untouched."""
    from safetensors.torch import load_file, save_file

    first = write_mmu(tmp_path / "in" / "s0" / "001-of-001.hdf5", legacysurvey_columns(n=3, seed=0))
    second = write_mmu(tmp_path / "in" / "s1" / "001-of-001.hdf5", legacysurvey_columns(n=3, seed=1))
    run_encode([first], tmp_path / "out", _options(demo_checkpoint))
    before = _contents(tmp_path / "out")
    other = _copy_checkpoint(demo_checkpoint, tmp_path / "other_model")
    weights = load_file(other / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name] + 1
    save_file(weights, other / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(OutputConflictError, match="model_weights_sha256_16"):
        run_encode([second], tmp_path / "out", _options(other))
    codec = _copy_checkpoint(demo_checkpoint, tmp_path / "other_codec")
    config_path = codec / "codecs" / "FLUX_G" / "config.json"
    config = json.loads(config_path.read_text())
    config["min_log_value"] = -2
    config_path.write_text(json.dumps(config))
    with pytest.raises(OutputConflictError, match="codec_configs_sha256_16"):
        run_encode([second], tmp_path / "out", _options(codec))
    with pytest.raises(OutputConflictError, match="row_group_rows"):  # an option that changes the bytes
        run_encode([second], tmp_path / "out", _options(demo_checkpoint, row_group_rows=3))
    assert _contents(tmp_path / "out") == before
    run_encode([second], tmp_path / "out", _options(demo_checkpoint))  # the same job goes on
    assert len(json.loads((tmp_path / "out" / "manifest.json").read_text())["shards"]) == 2


def test_search_refuses_files_of_two_models(tmp_path, demo_checkpoint, capsys):
    """Item 3, downstream: embedding files of two models copied into one folder are not ranked together."""
    path = write_mmu(tmp_path / "in" / "s0" / "001-of-001.hdf5", legacysurvey_columns(n=3, seed=0))
    run_encode([path], tmp_path / "a", _options(demo_checkpoint))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(tmp_path / "a" / "s0__001-of-001.parquet", mixed / "a.parquet")
    table = pq.read_table(tmp_path / "a" / "s0__001-of-001.parquet")
    job = json.loads(table.schema.metadata[b"aion_fast.job"])
    job["model_weights_sha256_16"] = "0" * 16  # as another model's output would say
    pq.write_table(table.replace_schema_metadata({b"aion_fast.job": json.dumps(job)}), mixed / "b.parquet")
    status, _, err = _cli(capsys, "search", mixed, "--query", table["object_id"][0].as_py())
    _one_line_error(status, err, "different models", "a.parquet", "b.parquet")


# 5, 17 ----------------------------------------------------------------------------------------------------------------


def test_one_objects_bad_spectrum_or_a_survey_the_model_lacks_goes_to_the_ledger(tmp_path, demo_checkpoint):
    """Item 5: one object with wavelengths off the codec's grid (nm instead of Angstrom), an SDSS-length spectrum
    or an HSC image (the demo model takes neither) used to abort the whole job, naming a batch row. Now each is a
    ledger row with the FILE row, and every other object is encoded."""
    desi = desi_columns()  # 3 objects; batches of 2: file row 2 is row 0 of the second batch
    desi["spectrum_lambda"][2] /= 10  # nm: 360-982 "Angstrom", below the grid
    sdss_like = desi_columns()
    sdss_like["spectrum_lambda"][2, 4000:] = -1  # padding: a 4000-pixel spectrum from 3600 A reads as SDSS
    sdss_like["spectrum_ivar"][2, 4000:] = 0
    ls = legacysurvey_columns(n=3)
    ls["image_band"][2] = ["hsc-g", "hsc-r", "hsc-i", "hsc-z"]
    paths = [write_mmu(tmp_path / "in" / "desi" / "001-of-001.hdf5", desi),
             write_mmu(tmp_path / "in" / "mixed" / "spectra.hdf5", sdss_like),
             write_mmu(tmp_path / "in" / "legacysurvey" / "001-of-001.hdf5", ls)]  # fmt: skip
    options = _options(demo_checkpoint, modalities=("image", "spectrum"))
    summary = run_encode(paths, tmp_path / "out", options)
    assert summary["objects_encoded"] == 3 * 3 - 3 and summary["objects_failed"] == 3
    ledger = {(Path(r["file"]).parent.name, r["row"], r["modality"]): r["reason"] for r in _ledger(tmp_path / "out")}
    assert "does not overlap the codec's wavelength grid" in ledger[("desi", 2, "spectrum")]
    assert "SDSSSpectrum, which the model does not take" in ledger[("mixed", 2, "spectrum")]
    assert "HSCImage, which the model does not take" in ledger[("legacysurvey", 2, "image")]
    assert _contents(tmp_path / "out")["desi__001-of-001.parquet"]["row"] == [0, 1]


def test_dropped_modalities_get_a_ledger_row_or_a_clear_error(tmp_path, demo_checkpoint):
    """Item 17: an image without image_band was dropped silently; a file with two surveys' images for one token
    was read for one of them. Now: a ledger row per object naming the missing column; a conflict naming --source."""
    ls = legacysurvey_columns(n=3)
    no_band = {k: v for k, v in ls.items() if k != "image_band"}
    path = write_mmu(tmp_path / "in" / "legacysurvey" / "001-of-001.hdf5", no_band)
    summary = run_encode([path], tmp_path / "out", _options(demo_checkpoint, modalities=("image", "photometry")))
    assert summary["objects_encoded"] == 3  # photometry still encodes them
    rows = [r for r in _ledger(tmp_path / "out") if r["modality"] == "image"]
    assert [r["row"] for r in rows] == [0, 1, 2] and all("no image_band" in r["reason"] for r in rows)
    two = {**{f"legacysurvey_{k}": v for k, v in ls.items()}, **{k: v for k, v in ls.items() if k.startswith("image")}}
    two["object_id"] = ls["object_id"]
    path = write_mmu(tmp_path / "in" / "xmatch" / "two.hdf5", two)
    with pytest.raises(SourceConflictError, match="--source image="):
        run_encode([path], tmp_path / "out2", _options(demo_checkpoint, modalities=("image",)))


# 6 --------------------------------------------------------------------------------------------------------------------


def test_one_file_has_one_shard_name_whatever_it_is_passed_with(tmp_path, demo_checkpoint):
    """Item 6: shard names depended on the files passed together, so one file could be encoded twice under two names
    and counted twice. Now the name is the file's own; passed alone and then with another file, it is encoded once."""
    a = write_mmu(tmp_path / "in" / "legacysurvey" / "healpix=1" / "001-of-001.hdf5", legacysurvey_columns(n=3))
    b = write_mmu(tmp_path / "in" / "legacysurvey" / "healpix=2" / "001-of-001.hdf5", legacysurvey_columns(n=2))
    assert shard_names([a]) == [shard_name(a)] and shard_names([b, a])[1] == shard_name(a)
    run_encode([a], tmp_path / "out", _options(demo_checkpoint))
    summary = run_encode([a, b], tmp_path / "out", _options(demo_checkpoint))
    assert summary["shards_skipped_complete"] == 1 and summary["objects_encoded"] == 2
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["rows_written"] == 5 and sorted(s["shard"] for s in manifest["shards"]) == sorted(
        [shard_name(a), shard_name(b)]
    )


# 7, 9, 13, 14, 15 -----------------------------------------------------------------------------------------------------


def test_unreadable_inputs_are_one_line_naming_the_file(tmp_path, demo_checkpoint, capsys):
    """Item 7: a truncated HDF5 file or a non-HDF5 file gave a raw traceback naming no file."""
    good = write_mmu(tmp_path / "good" / "legacysurvey" / "001-of-001.hdf5", legacysurvey_columns(n=3))
    truncated = tmp_path / "bad" / "legacysurvey" / "truncated.hdf5"
    truncated.parent.mkdir(parents=True)
    truncated.write_bytes(good.read_bytes()[:2048])
    text = tmp_path / "bad" / "legacysurvey" / "text.hdf5"
    text.write_text("object_id,ra\n1,2\n")
    for path in (truncated, text):
        status, _, err = _cli(capsys, "encode", path, "--model", demo_checkpoint, "--output", tmp_path / "o", "--quiet")
        _one_line_error(status, err, path.name)


def test_model_problems_are_one_line(tmp_path, demo_checkpoint, capsys):
    """Item 9: a typo'd --model, an offline hub id, a truncated model.safetensors and a --modalities group the model
    lacks gave raw tracebacks."""
    path = write_mmu(tmp_path / "in" / "legacysurvey" / "001-of-001.hdf5", legacysurvey_columns(n=3))
    common = ["encode", path, "--quiet", "--workers", "0"]
    status, _, err = _cli(capsys, *common, "--model", tmp_path / "no_such_dir", "--output", tmp_path / "o1")
    _one_line_error(status, err, "no_such_dir", "local checkpoint directory")
    status, _, err = _cli(capsys, *common, "--model", "someone/no-such-model", "--output", tmp_path / "o2")
    _one_line_error(status, err, "someone/no-such-model")
    torn = _copy_checkpoint(demo_checkpoint, tmp_path / "torn")
    weights = (torn / "model.safetensors").read_bytes()
    (torn / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    status, _, err = _cli(capsys, *common, "--model", torn, "--output", tmp_path / "o3")
    _one_line_error(status, err, "model.safetensors", "download")
    gaia_less = write_mmu(tmp_path / "in" / "desi" / "001-of-001.hdf5", desi_columns())
    status, out, err = _cli(capsys, "encode", gaia_less, "--quiet", "--workers", "0", "--model", demo_checkpoint,
                            "--modalities", "gaia", "--output", tmp_path / "o4")  # fmt: skip
    assert status == 0 and "failed 3" in out and "Traceback" not in err  # the FILE lacks gaia: ledger rows
    status, _, err = _cli(capsys, *common, "--model", demo_checkpoint, "--modalities", "photometry,catalog",
                          "--output", tmp_path / "o5")  # fmt: skip
    _one_line_error(status, err, "--modalities catalog", "the model takes none", "does not take")


def test_device_and_output_path_problems_are_one_line(tmp_path, demo_checkpoint, capsys):
    """Items 14 and 15: --device cuda without a GPU, a bogus device, an output path that is a file or read-only gave
    raw tracebacks; AION.from_pretrained(device='cuda') failed with a misleading pin_memory error."""
    from aion_fast.model import AION

    path = write_mmu(tmp_path / "in" / "legacysurvey" / "001-of-001.hdf5", legacysurvey_columns(n=3))
    common = ["encode", path, "--model", demo_checkpoint, "--quiet"]
    status, _, err = _cli(capsys, *common, "--device", "tpu9", "--output", tmp_path / "o")
    _one_line_error(status, err, "--device", "tpu9", "cpu")
    if not torch.cuda.is_available():
        status, _, err = _cli(capsys, *common, "--device", "cuda", "--output", tmp_path / "o")
        _one_line_error(status, err, "no CUDA GPU", "--device cpu")
        with pytest.raises(ValueError, match="no CUDA GPU"):
            AION.from_pretrained(demo_checkpoint, device="cuda")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    status, _, err = _cli(capsys, *common, "--output", a_file)
    _one_line_error(status, err, str(a_file), "is a file")
    real_fsync = os.fsync

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    os.fsync = disk_full
    try:
        status, _, err = _cli(capsys, *common, "--modalities", "photometry", "--output", tmp_path / "full")
    finally:
        os.fsync = real_fsync
    _one_line_error(status, err, "No space left on device", "free some space", "finished work is kept")
    if os.geteuid() != 0:  # root writes anywhere
        read_only = tmp_path / "read_only"
        read_only.mkdir(mode=0o555)
        status, _, err = _cli(capsys, *common, "--output", read_only / "out")
        _one_line_error(status, err, "read_only", "cannot be written")


def test_search_probe_and_merge_user_errors_are_one_line(tmp_path, demo_checkpoint, capsys):
    """Item 13: raw tracebacks for user errors; merge-manifest on an empty directory wrote a manifest; probe
    --epochs 0 reported an untrained probe's scores."""
    (tmp_path / "empty").mkdir()
    status, _, err = _cli(capsys, "merge-manifest", tmp_path / "empty")
    _one_line_error(status, err, "no shard records")
    assert not (tmp_path / "empty" / "manifest.json").exists()
    (tmp_path / "empty" / "_parts").mkdir()
    status, _, err = _cli(capsys, "merge-manifest", tmp_path / "empty")
    _one_line_error(status, err, "no shard records")
    assert not (tmp_path / "empty" / "manifest.json").exists()
    path = write_mmu(tmp_path / "in" / "legacysurvey" / "001-of-001.hdf5", legacysurvey_columns(n=10))
    run_encode([path], tmp_path / "out", _options(demo_checkpoint))
    labels = tmp_path / "labels.csv"
    ids = legacysurvey_columns(n=10)["object_id"]
    labels.write_text("object_id,z\n" + "".join(f"{i},{k / 10}\n" for k, i in enumerate(ids)))
    status, _, err = _cli(capsys, "probe", tmp_path / "out", "--labels", labels, "--target", "z", "--epochs", "0")
    _one_line_error(status, err, "--epochs", ">= 1")
    status, _, err = _cli(capsys, "probe", tmp_path / "out", "--labels", tmp_path / "nope.csv", "--target", "z")
    _one_line_error(status, err, "nope.csv")
    status, _, err = _cli(capsys, "search", tmp_path / "nowhere", "--query", "1")
    _one_line_error(status, err, "nowhere")
    status, _, err = _cli(capsys, "search", tmp_path / "out", "--query", "1", "--k", "0")
    _one_line_error(status, err, "--k")
    status, _, err = _cli(capsys, "search", tmp_path / "out", "--query", "no-such-object", "--k", "3")
    _one_line_error(status, err, "no-such-object")
    (tmp_path / "out" / "_parts" / "legacysurvey__001-of-001.json").write_text('{"shard": ')
    status, _, err = _cli(capsys, "merge-manifest", tmp_path / "out")
    _one_line_error(status, err, "legacysurvey__001-of-001.json", "torn")


# 12 -------------------------------------------------------------------------------------------------------------------


def test_torn_or_empty_files_are_detected_named_and_redone(tmp_path, demo_checkpoint, capsys):
    """Item 12: after an OS crash a torn record or a 0-byte output either blocked the job with an error naming no
    file or was taken as complete. Each is now named on stderr and its shard encoded again; the result equals an
    uninterrupted run."""
    paths = [write_mmu(tmp_path / "in" / f"s{i}" / "001-of-001.hdf5", legacysurvey_columns(n=4, seed=i))
             for i in range(3)]  # fmt: skip
    run_encode(paths, tmp_path / "clean", _options(demo_checkpoint))
    clean = _contents(tmp_path / "clean")
    out = tmp_path / "out"
    shutil.copytree(tmp_path / "clean", out)
    capsys.readouterr()
    record = out / "_parts" / "s0__001-of-001.json"
    record.write_text(record.read_text()[:40])  # torn record
    (out / "s1__001-of-001.parquet").write_bytes(b"")  # 0-byte shard file
    final = out / "s2__001-of-001.parquet"
    final.write_bytes(final.read_bytes()[:-100])  # torn footer
    summary = run_encode(paths, out, _options(demo_checkpoint))
    err = capsys.readouterr().err
    assert "s0__001-of-001.json is torn or empty" in err
    assert "s1__001-of-001.parquet is torn or empty" in err and "s2__001-of-001.parquet is torn or empty" in err
    assert summary["shards_encoded"] == 3 and _contents(out) == clean

    # A torn part file and a torn progress record of a shard in progress: the shard starts afresh.
    from aion_fast.jobs import writer as writer_module

    killed = tmp_path / "killed"
    original = writer_module.ShardWriter.close

    def crash(self):
        raise KeyboardInterrupt  # the process stops after its parts and progress records are written

    writer_module.ShardWriter.close = crash
    try:
        with pytest.raises(KeyboardInterrupt):
            run_encode(paths[:1], killed, _options(demo_checkpoint))
    finally:
        writer_module.ShardWriter.close = original
    part = killed / "_parts" / "s0__001-of-001.part00001.parquet"
    part.write_bytes(part.read_bytes()[:50])
    (killed / "job.json").write_text('{"model": ')
    capsys.readouterr()
    run_encode(paths[:1], killed, _options(demo_checkpoint))
    err = capsys.readouterr().err
    assert "part00001.parquet is torn or empty; shard s0__001-of-001 is encoded again" in err
    assert "job.json is torn or empty" in err
    assert _contents(killed)["s0__001-of-001.parquet"] == clean["s0__001-of-001.parquet"]
    writer_module.ShardWriter.close = crash
    try:
        with pytest.raises(KeyboardInterrupt):
            run_encode(paths[1:2], killed, _options(demo_checkpoint))
    finally:
        writer_module.ShardWriter.close = original
    (killed / "_parts" / "s1__001-of-001.progress.json").write_bytes(b"")
    run_encode(paths[1:2], killed, _options(demo_checkpoint))
    assert "s1__001-of-001.progress.json is torn or empty" in capsys.readouterr().err
    assert _contents(killed)["s1__001-of-001.parquet"] == clean["s1__001-of-001.parquet"]


def test_every_rename_is_fsynced_file_then_directory(tmp_path, monkeypatch):
    """Item 12: nothing was fsynced before a rename, so an OS crash could keep the name and lose the bytes."""
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))))
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append(("replace", str(b))), real_replace(a, b)))
    atomic_write_text(tmp_path / "record.json", "{}")
    assert [c[0] for c in calls] == ["fsync", "replace", "fsync"]
    assert calls[0][1].endswith(".tmp") and calls[2][1] == str(tmp_path)
    del real_fsync


# 18, 19 ---------------------------------------------------------------------------------------------------------------


def test_duplicate_ids_are_reported_once_per_shard(tmp_path, demo_checkpoint, capsys):
    """Item 18: duplicate object_ids were written without a word (search rejected them later)."""
    ls = legacysurvey_columns(n=6)
    ls["object_id"] = np.array([1, 2, 2, 3, 3, 3])
    path = write_mmu(tmp_path / "in" / "legacysurvey" / "001-of-001.hdf5", ls)
    status, out, err = _cli(capsys, "encode", path, "--model", demo_checkpoint, "--output", tmp_path / "out",
                            "--quiet", "--workers", "0", "--batch-size", "2", "--row-group-rows", "2",
                            "--modalities", "photometry")  # fmt: skip
    assert status == 0
    assert err.count("repeat an object_id") == 1 and "3 rows repeat" in err
    assert '"duplicate_object_ids": 3' in out
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["duplicate_object_ids"] == 3
    assert manifest["shards"][0]["duplicate_object_id_examples"] == ["2", "3"]


def test_an_input_edited_with_size_and_mtime_restored_is_noticed(tmp_path, demo_checkpoint):
    """Item 19: the recorded SHA-256 was never compared, so an input changed with its size and mtime restored was
    skipped as done."""
    path = write_mmu(tmp_path / "in" / "legacysurvey" / "001-of-001.hdf5", legacysurvey_columns(n=3))
    run_encode([path], tmp_path / "out", _options(demo_checkpoint))
    stat = path.stat()
    with h5py.File(path, "r+") as handle:
        handle["FLUX_G"][0] = handle["FLUX_G"][0] * 2
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    with pytest.raises(OutputConflictError, match="other content"):
        run_encode([path], tmp_path / "out", _options(demo_checkpoint))
    summary = run_encode([path], tmp_path / "out", _options(demo_checkpoint, verify_inputs=False))  # --trust-mtime
    assert summary["shards_skipped_complete"] == 1


# 16 -------------------------------------------------------------------------------------------------------------------


def test_non_utf8_ids_and_same_named_files_are_named(tmp_path, demo_checkpoint):
    """Item 16: a non-UTF-8 id raised a UnicodeDecodeError naming nothing; two different files were reported as
    'the same file passed twice'."""
    ls = legacysurvey_columns(n=3)
    ids = np.array([b"a", b"b\xff\xfe", b"c"], dtype="S4")
    path = write_mmu(tmp_path / "in" / "legacysurvey" / "001-of-001.hdf5", {**ls, "object_id": ids})
    summary = run_encode([path], tmp_path / "out", _options(demo_checkpoint))
    assert summary["objects_encoded"] == 3
    table = _contents(tmp_path / "out")["legacysurvey__001-of-001.parquet"]
    assert table["object_id"] == ["a", "b\\xff\\xfe", "c"]
    (issue,) = [r for r in _ledger(tmp_path / "out") if r["modality"] == "object_id"]
    assert issue["row"] == 1 and "not UTF-8" in issue["reason"] and "'object_id'" in issue["reason"]
    one = write_mmu(tmp_path / "a" / "legacysurvey" / "x.hdf5", ls)
    two = write_mmu(tmp_path / "b" / "legacysurvey" / "x.hdf5", ls)
    with pytest.raises(ValueError, match="would both be written as") as error:
        shard_names([one, two])
    assert str(one) in str(error.value) and str(two) in str(error.value)
    with pytest.raises(ValueError, match="is given twice"):
        shard_names([one, tmp_path / "a" / ".." / "a" / "legacysurvey" / "x.hdf5"])


def test_identity_written_by_an_earlier_version_still_resumes(tmp_path):
    """A job.json with the retired untrained-demo flag is the same job; any other difference is refused."""
    import json

    from aion_fast.jobs.lock import check_identity
    from aion_fast.jobs.plan import OutputConflictError

    job = {"model": "digest-a", "precision": "fp32"}
    (tmp_path / "job.json").write_text(json.dumps({**job, "untrained_demo_checkpoint": False}))
    check_identity(tmp_path, job)
    assert json.loads((tmp_path / "job.json").read_text()) == job
    with pytest.raises(OutputConflictError, match="another job"):
        check_identity(tmp_path, {**job, "precision": "bf16"})
