"""``aion-fast predict`` and ``predict-check``: the exact one-token posterior against the reference model's logits on
identical weights, its summary columns against the PDF by hand, draws against the PDF (chi-square), multi-token draws
against aion_fast.generate, resume after SIGKILL and a 2-rank run against one uninterrupted rank, and the calibration
numbers on planted posteriors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import aion_fast
from aion_fast import modalities as m
from aion_fast.data.make_sample import legacysurvey_columns, write_mmu
from aion_fast.jobs.plan import shard_name
from aion_fast.jobs.predict import PredictOptions, object_keys, posterior_summary, run_predict
from aion_fast.jobs.predict_check import calibration_metrics, ks_uniform, pit_from_pdf, pit_from_samples, run_check
from tests.test_end_to_end import TINY_TRANSFORMER

ROOT = Path(__file__).resolve().parents[2]
FLUXES = {"FLUX_G": m.LegacySurveyFluxG, "FLUX_R": m.LegacySurveyFluxR, "FLUX_I": m.LegacySurveyFluxI,
          "FLUX_Z": m.LegacySurveyFluxZ}  # fmt: skip
DOMAINS = [cls.token_key for cls in FLUXES.values()] + ["tok_z"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(directory, reference AION): photometry + redshift, random weights, written by the reference itself."""
    from aion import AION as RefAION
    from aion import codecs as ref_codecs
    from aion import modalities as ref_m

    torch.manual_seed(5)
    root = tmp_path_factory.mktemp("predict_reference")
    for name in FLUXES:
        codec = ref_codecs.LogScalarCodec(name, 1024, 4000)
        codec._quantizer._update_reservoirs(torch.exp(torch.randn(6000) * 1.5 + 1.0))
        codec.save_pretrained(root, modality=getattr(ref_m, f"LegacySurveyFlux{name[-1]}"))
    ref_codecs.GridScalarCodec("Z", 1024).save_pretrained(root, modality=ref_m.Z)
    model = RefAION({"domains_in": DOMAINS, "domains_out": DOMAINS, **TINY_TRANSFORMER}).eval()
    with torch.no_grad():  # a posterior with structure rather than the init's near-uniform one
        model.decoder_embeddings["tok_z"].to_logits.weight.mul_(4.0)
    model.save_pretrained(root)
    return root, model


def _photometry_file(path, n, seed=0):
    """Legacy Survey columns plus a true redshift ``Z`` (object 1 has no usable photometry at all)."""
    columns = legacysurvey_columns(n=n, seed=seed)
    columns["Z"] = np.random.default_rng(seed).uniform(0.05, 0.9, n)
    for name in FLUXES:
        columns[name] = np.abs(columns[name]) + 0.5
    if n > 1:
        for name in FLUXES:
            columns[name][1] = np.nan
    return write_mmu(path, columns, chunk_rows=2), columns


def _table(path):
    return pq.read_table(path)


def _fixed(table, name):
    column = table.column(name).combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).reshape(len(table), -1).astype(np.float64)


def test_one_token_posterior_equals_reference_softmax_and_its_summaries(tmp_path, reference):
    root, ref_model = reference
    path, columns = _photometry_file(tmp_path / "in" / "s0" / "001-of-001.hdf5", n=6)
    options = PredictOptions(target="redshift", model=str(root), inputs=("photometry",), pdf="float32",
                             batch_size=4, workers=0, progress=False)  # fmt: skip
    summary = run_predict([path], tmp_path / "out", options)
    assert summary["objects_predicted"] == 5 and summary["objects_failed"] == 1
    table = _table(tmp_path / "out" / f"{shard_name(path)}.parquet")
    rows = table.column("row").to_pylist()
    assert rows == [0, 2, 3, 4, 5]
    bins = np.array(json.loads(table.schema.metadata[b"aion_fast.bin_values"]))
    assert bins.shape == (1024,) and np.array_equal(bins, torch.linspace(0.0, 1.0, 1024).double().numpy())
    pdf = _fixed(table, "pdf")

    codecs = aion_fast.CodecManager(repo=root)
    tokens = codecs.encode(*[cls(value=torch.from_numpy(columns[c][rows]).float()) for c, cls in FLUXES.items()])
    from aion import modalities as ref_m

    with torch.no_grad():
        logits = ref_model(tokens, [ref_m.Z])["tok_z"][:, 0].double()
    assert logits.shape[-1] == 1025  # the vocabulary has one entry more than the codec's 1024 codes
    expected = torch.softmax(logits[:, :1024], dim=-1).numpy()
    np.testing.assert_allclose(pdf, expected, rtol=2e-5, atol=1e-9)
    assert pdf.max() > 10 * pdf.min()  # not a flat posterior

    # The summary columns from the PDF by hand (bins are already in value order for redshift).
    for i in range(len(rows)):
        p = pdf[i] / pdf[i].sum()
        mean = float((p * bins).sum())
        assert table.column("mean")[i].as_py() == pytest.approx(mean, rel=1e-6)
        assert table.column("std")[i].as_py() == pytest.approx(float(np.sqrt((p * (bins - mean) ** 2).sum())), rel=1e-5)
        assert table.column("mode")[i].as_py() == bins[np.argmax(p)]
        cumulative = 0.0
        found = {}
        for k in range(1024):
            cumulative += p[k]
            for name, q in (("p2_5", 0.025), ("p16", 0.16), ("median", 0.5), ("p84", 0.84), ("p97_5", 0.975)):
                if name not in found and cumulative >= q:
                    found[name] = bins[k]
        for name, value in found.items():
            assert table.column(name)[i].as_py() == pytest.approx(value, abs=1.5 / 1023), name
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    job = manifest["job"]
    assert job["target"] == "Z" and job["inputs"] == ["photometry"] and job["seed"] == 0 and job["pdf"] == "float32"
    assert job["decoding"]["temperature"] == 1.0 and manifest["shards"][0]["modalities_used"] == sorted(
        cls.__name__ for cls in FLUXES.values()
    )
    errors = pq.read_table(tmp_path / "out" / "errors.parquet").to_pydict()
    assert ("ls-synthetic-0001", "*") in set(zip(errors["object_id"], errors["modality"]))


def test_posterior_summary_percentile_rule():
    values = torch.tensor([0.3, 0.1, 0.2, 0.4], dtype=torch.float64)  # unsorted bins
    probs = torch.tensor([[0.1, 0.55, 0.15, 0.2]], dtype=torch.float64)  # CDF in value order: .55, .70, .80, 1
    out = posterior_summary(probs, values)
    assert out["median"][0] == 0.1 and out["p16"][0] == 0.1 and out["p2_5"][0] == 0.1
    assert out["p84"][0] == 0.4 and out["p97_5"][0] == 0.4 and out["mode"][0] == 0.1
    assert out["mean"][0] == pytest.approx(0.03 + 0.055 + 0.03 + 0.08)
    assert out["std"][0] == pytest.approx(np.sqrt(0.1 * 0.105**2 + 0.55 * 0.095**2 + 0.15 * 0.005**2 + 0.2 * 0.205**2))


def test_draws_follow_the_posterior(tmp_path, reference):
    from scipy.stats import chisquare

    root, _ = reference
    path, _ = _photometry_file(tmp_path / "in" / "s0" / "001-of-001.hdf5", n=3, seed=1)
    options = PredictOptions(target="Z", model=str(root), inputs=("photometry",), pdf="float32", num_samples=4000,
                             workers=0, progress=False, seed=3, batch_size=1)  # fmt: skip
    run_predict([path], tmp_path / "out", options)  # batch size 1: the batch of object 1 has nobody to predict
    table = _table(tmp_path / "out" / f"{shard_name(path)}.parquet")
    assert table.column("row").to_pylist() == [0, 2]
    bins = np.array(json.loads(table.schema.metadata[b"aion_fast.bin_values"]))
    pdf, samples = _fixed(table, "pdf"), _fixed(table, "samples")
    for i in range(len(table)):
        counts = np.bincount(np.searchsorted(bins, samples[i]), minlength=1024)
        assert np.array_equal(bins[np.searchsorted(bins, samples[i])], samples[i])  # every draw is a bin value
        expected = 4000 * pdf[i] / pdf[i].sum()
        big = expected >= 5
        observed = np.append(counts[big], counts[~big].sum())
        wanted = np.append(expected[big], expected[~big].sum())
        assert big.sum() >= 10
        assert chisquare(observed, wanted).pvalue > 1e-3
    assert not np.array_equal(samples[0], samples[1])


def test_multi_token_draws_equal_generate(tmp_path, demo_checkpoint):
    """Spectra from photometry; object 1 lacks g/r/i/z (its other photometry is used, the rest masked)."""
    from aion_fast.data.columns import SCALAR_COLUMNS

    path, columns = _photometry_file(tmp_path / "in" / "s0" / "001-of-001.hdf5", n=3, seed=2)
    options = PredictOptions(target="spectrum", model=str(demo_checkpoint), inputs=("photometry",), num_samples=2,
                             max_steps=2, workers=0, progress=False, seed=9)  # fmt: skip
    run_predict([path], tmp_path / "out", options)
    table = _table(tmp_path / "out" / f"{shard_name(path)}.parquet")
    assert table.column("row").to_pylist() == [0, 1, 2]
    shape = json.loads(table.schema.metadata[b"aion_fast.value_shape"])
    grid = np.array(json.loads(table.schema.metadata[b"aion_fast.wavelength"]))
    samples = np.array(table.column("samples").to_pylist(), dtype=np.float32)  # (n, S, P)
    assert samples.shape == (3, 2, shape[0]) and grid.shape == (shape[0],)

    # The same objects through aion_fast.generate: tokens in the file's column order, absent values masked.
    model = aion_fast.AION.from_pretrained(demo_checkpoint).eval()
    codecs = aion_fast.CodecManager(repo=demo_checkpoint)
    tokens, mask = {}, {}
    for column, (cls, group) in SCALAR_COLUMNS.items():
        if group != "photometry" or column not in columns:
            continue
        values = torch.from_numpy(columns[column]).float()
        finite = torch.isfinite(values)
        tokens[cls.token_key] = torch.zeros(3, 1, dtype=torch.int64)
        tokens[cls.token_key][finite] = codecs.encode(cls(value=values[finite]))[cls.token_key].reshape(-1, 1)
        if not bool(finite.all()):
            mask[cls.token_key] = ~finite[:, None]
    assert set(mask) == {cls.token_key for cls in FLUXES.values()}
    draws = aion_fast.generate(model, codecs, tokens, m.DESISpectrum, 2, max_steps=2, seed=9, input_mask=mask,
                               object_ids=object_keys(list(columns["object_id"])))  # fmt: skip
    np.testing.assert_array_equal(samples, draws.flux.numpy())
    np.testing.assert_array_equal(grid.astype(np.float32), draws.wavelength[0, 0].numpy())
    np.testing.assert_allclose(_fixed(table, "mean"), draws.flux.mean(dim=1).numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(_fixed(table, "std"), draws.flux.std(dim=1, correction=0).numpy(), rtol=1e-5,
                               atol=1e-6)  # fmt: skip
    assert not np.array_equal(samples[:, 0], samples[:, 1])


def test_image_target_written_as_arrays(tmp_path, demo_checkpoint):
    path, _ = _photometry_file(tmp_path / "in" / "s0" / "001-of-001.hdf5", n=2, seed=4)
    options = PredictOptions(target="image", model=str(demo_checkpoint), inputs=("photometry",), num_samples=1,
                             max_steps=1, workers=0, progress=False)  # fmt: skip
    run_predict([path], tmp_path / "out", options)
    table = _table(tmp_path / "out" / f"{shard_name(path)}.parquet")
    shape = json.loads(table.schema.metadata[b"aion_fast.value_shape"])
    assert shape == [4, 96, 96] and b"aion_fast.wavelength" not in table.schema.metadata
    samples = np.array(table.column("samples").to_pylist(), dtype=np.float32).reshape(2, 1, *shape)
    assert np.isfinite(samples).all()
    np.testing.assert_array_equal(_fixed(table, "mean"), samples[:, 0].reshape(2, -1))  # one draw: mean = draw
    assert not _fixed(table, "std").any()


def test_object_keys():
    keys = object_keys(["39627835218248512", "ls-synthetic-0001", "ls-synthetic-0001", "-5"])
    assert keys[0] == 39627835218248512 and keys[1] == keys[2] and keys[1] >= 0 and keys[3] >= 0


def _cli(command, args, env=None):
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return [sys.executable, "-m", "aion_fast.cli", command, *map(str, args)], full_env


def _contents(folder):
    return {p.name: pq.read_table(p).to_pydict() for p in sorted(Path(folder).glob("*.parquet"))}


def _inputs_and_args(folder, root):
    inputs = [_photometry_file(folder / f"s{i}" / "001-of-001.hdf5", n, seed=i)[0]
              for i, n in enumerate((3, 3, 40))]  # fmt: skip
    common = [*inputs, "--target", "redshift", "--model", root, "--inputs", "photometry", "--pdf", "float16",
              "--num-samples", "5", "--batch-size", "2", "--workers", "0", "--row-group-rows", "2",
              "--quiet"]  # fmt: skip
    return inputs, common


def test_sigkill_then_rerun_equals_uninterrupted(tmp_path, reference):
    root, _ = reference
    inputs, common = _inputs_and_args(tmp_path / "in", root)
    command, env = _cli("predict", [*common, "--output", tmp_path / "clean"])
    clean = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0, clean.stderr[-2000:]

    command, env = _cli("predict", [*common, "--output", tmp_path / "killed"])
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = tmp_path / "killed" / "_parts" / "s2__001-of-001.progress.json"
    deadline = time.monotonic() + 90
    while not progress.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    rows_done = json.loads(progress.read_text())["rows_done"]
    assert 2 <= rows_done < 40, f"kill landed at row {rows_done} of the last shard; the test needs mid-shard"
    assert not (tmp_path / "killed" / "manifest.json").exists()
    rerun = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = json.loads(rerun.stdout[rerun.stdout.index("{") : rerun.stdout.rindex("}") + 1])
    assert summary["shards_skipped_complete"] == 2 and summary["objects_skipped_done_before"] == 6 + rows_done
    assert summary["objects_predicted"] == 40 - rows_done  # object 1 (no photometry) was among the first rows
    assert _contents(tmp_path / "killed") == _contents(tmp_path / "clean")
    assert pq.ParquetFile(tmp_path / "clean" / "s2__001-of-001.parquet").metadata.num_row_groups == 20
    manifest = json.loads((tmp_path / "killed" / "manifest.json").read_text())
    assert manifest["rows_written"] == 2 + 2 + 39 and manifest["job"]["num_samples"] == 5

    # predict-check on the job's own output against the inputs' true redshifts.
    metrics = run_check(tmp_path / "clean", inputs, plots=False)
    assert metrics["objects"] == 43 and metrics["pit_from"] == "pdf" and metrics["predictions_without_truth"] == 0
    assert json.loads((tmp_path / "clean" / "check" / "metrics.json").read_text())["bias"] == metrics["bias"]


def test_two_ranks_equal_one_rank(tmp_path, reference):
    """torchrun with 2 ranks (each OMP_NUM_THREADS=1, as the 1-rank run here) writes the same files."""
    root, _ = reference
    _, common = _inputs_and_args(tmp_path / "in", root)
    command, env = _cli("predict", [*common, "--output", tmp_path / "one"])
    subprocess.run(command, env=env, cwd=ROOT, check=True, capture_output=True, timeout=120)
    command, env = _cli("predict", [*common, "--output", tmp_path / "two"], env={"AION_FAST_DIST_TIMEOUT_S": "60"})
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *command[1:]]
    result = subprocess.run(torchrun, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert '"rank": 1' in result.stdout and '"world_size": 2' in result.stdout
    assert _contents(tmp_path / "two") == _contents(tmp_path / "one")
    assert json.loads((tmp_path / "two" / "manifest.json").read_text())["rows_written"] == 43


def test_cli_errors_are_one_line(tmp_path, reference, capsys):
    from aion_fast.cli import main

    root, _ = reference
    path, _ = _photometry_file(tmp_path / "s0" / "001-of-001.hdf5", n=2)
    common = [str(path), "--model", str(root), "--output", str(tmp_path / "o"), "--quiet"]
    for args, message in [
        (["--target", "image", "--num-samples", "2"], "is not a decoder output"),
        (["--target", "photoz"], "--target 'photoz' is unknown"),
        (["--target", "spectrum"], "--num-samples must be >= 1"),
        (["--target", "redshift", "--pdf", "float16", "--wavelength", "1:2:0.1"], "--wavelength applies to spectrum"),
    ]:
        assert main(["predict", *common, *args]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and message in err, err
    assert main(["predict-check", str(tmp_path / "nothing"), "--truth", str(path), "--no-plots"]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_missing_matplotlib_names_the_extra(tmp_path, monkeypatch):
    from aion_fast.cli import error_line

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError) as caught:
        run_check(tmp_path, [tmp_path], plots=True)
    line, status = error_line(caught.value)
    assert status == 2 and "aion-fast[downstream]" in line


# ---------------------------------------------------------------------------------------------------------------------
# predict-check on planted posteriors


def test_calibration_numbers_by_hand():
    values = np.array([0.1, 0.2, 0.3, 0.4])
    pdf = np.array([[0.25, 0.25, 0.25, 0.25], [0.0, 0.5, 0.5, 0.0], [0.7, 0.1, 0.1, 0.1]])
    truth = np.array([0.2, 0.35, 0.1])
    pit = pit_from_pdf(pdf, values, truth)
    np.testing.assert_allclose(pit, [0.25 + 0.125, 1.0, 0.35])
    np.testing.assert_allclose(pit_from_samples(np.array([[0.1, 0.2, 0.3, 0.3]]), np.array([0.3])), [0.5 + 0.25])
    # KS of {0.375, 1, 0.35}: sorted 0.35, 0.375, 1 -> max(1/3-0.35, 2/3-0.375, 1-1, 0.35-0, 0.375-1/3, 1-2/3)
    assert ks_uniform(pit) == pytest.approx(max(2 / 3 - 0.375, 0.35, 1 - 2 / 3))
    point = np.array([0.25, 0.3, 0.5])
    intervals = {"68": (np.array([0.1, 0.3, 0.2]), np.array([0.3, 0.4, 0.3]))}
    out = calibration_metrics(truth, point, intervals, pit)
    delta = np.array([0.05 / 1.2, -0.05 / 1.35, 0.4 / 1.1])
    assert out["bias"] == pytest.approx(delta.mean())
    assert out["nmad"] == pytest.approx(1.4826 * np.median(np.abs(delta - np.median(delta))))
    assert out["outlier_fraction"] == pytest.approx(1 / 3) and out["coverage_68"] == pytest.approx(2 / 3)
    assert out["pit_histogram"]["counts"] == [0, 0, 0, 2, 0, 0, 0, 0, 0, 1]


def _planted(folder: Path, truth_file: Path, shift: float, n: int = 3000):
    """Gaussian posteriors on the redshift codec's bins (sigma 0.04) and truths drawn from them, moved by ``shift``."""
    rng = np.random.default_rng(0)
    bins = np.linspace(0, 1, 1024, dtype=np.float32).astype(np.float64)
    centre = rng.uniform(0.2, 0.8, n)
    pdf = np.exp(-0.5 * ((bins[None, :] - centre[:, None]) / 0.04) ** 2)
    pdf /= pdf.sum(axis=1, keepdims=True)
    cdf = np.cumsum(pdf, axis=1)
    truth = bins[np.minimum((cdf < rng.uniform(size=(n, 1))).sum(axis=1), 1023)] + shift
    truth = truth.astype(np.float32).astype(np.float64)  # the readers give scalars as float32
    ids = [f"g{i}" for i in range(n)]
    stats = posterior_summary(torch.from_numpy(pdf), torch.from_numpy(bins))
    pdf_column = pa.FixedSizeListArray.from_arrays(pa.array(pdf.reshape(-1).astype(np.float32)), 1024)
    columns = {"object_id": pa.array(ids), **{k: pa.array(v) for k, v in stats.items()}, "pdf": pdf_column}
    metadata = {"aion_fast.bin_values": json.dumps(bins.tolist()), "aion_fast.target": "Z"}
    folder.mkdir(parents=True)
    pq.write_table(pa.table(columns).replace_schema_metadata(metadata), folder / "x.parquet")
    write_mmu(truth_file, {"object_id": np.array(ids), "Z": truth})
    return truth, stats


@pytest.mark.parametrize("shift", [0.0, -0.06])
def test_planted_calibrated_and_biased_posteriors(tmp_path, shift):
    pytest.importorskip("matplotlib")
    truth, stats = _planted(tmp_path / "pred", tmp_path / "truth" / "t.hdf5", shift)
    metrics = run_check(tmp_path / "pred", [tmp_path / "truth" / "t.hdf5"])
    assert metrics["objects"] == 3000 and metrics["pit_from"] == "pdf"
    assert (tmp_path / "pred" / "check" / "pit.png").stat().st_size > 1000
    assert (tmp_path / "pred" / "check" / "predicted_vs_true.png").is_file()
    delta = (stats["median"] - truth) / (1 + truth)
    assert metrics["bias"] == pytest.approx(delta.mean(), rel=1e-9)
    if shift == 0.0:  # calibrated: flat PIT, nominal coverage (3 sigma of 3000 draws), no bias
        assert metrics["pit_ks"] < 0.03
        counts = np.array(metrics["pit_histogram"]["counts"])
        assert np.abs(counts - 300).max() < 4 * np.sqrt(300)
        assert abs(metrics["coverage_68"] - 0.68) < 0.03 and abs(metrics["coverage_95"] - 0.95) < 0.015
        assert abs(metrics["bias"]) < 0.003
    else:  # truths 0.06 below: predictions too high, PIT piled up near 0, the 68% interval misses often
        assert metrics["bias"] == pytest.approx(np.mean(0.06 / (1 + truth)), abs=0.003)
        assert metrics["pit_ks"] > 0.4 and metrics["coverage_68"] < 0.4
        assert metrics["pit_histogram"]["counts"][0] > 1000
