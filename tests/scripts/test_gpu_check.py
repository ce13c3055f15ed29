"""scripts/gpu_check.sh has never run on a GPU: its logic runs here as a dry run (CPU, tiny sizes, pytest collects).

Checks that every step reports a result (ok, or skipped with a reason; never failed, missing or timed out on a dry
run), that JSON and Markdown summaries are written, and the figures each GPU step is meant to produce exist.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def test_steps_fit_the_eight_minute_box():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--list"], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    steps = [line.split() for line in out.splitlines()]
    assert [s[0] for s in steps][:3] == ["versions", "wheels", "build"]
    assert sum(int(s[1]) for s in steps) <= 480


def test_bad_option_exits_2():
    result = subprocess.run(["bash", str(SCRIPT), "--nonsense"], capture_output=True, text=True)
    assert result.returncode == 2 and "usage" in result.stderr


def test_dry_run_of_the_quick_steps(tmp_path):
    """A few steps through the shell script: each reports, a skipped step says why, the summaries are written."""
    env = {**_env(), "PYTHON": sys.executable, "GPU_CHECK_ONLY": "versions,wheels,build,extension,op_probes"}
    result = subprocess.run(["bash", str(SCRIPT), str(tmp_path), "--dry-run"], cwd=ROOT, capture_output=True,
                            text=True, timeout=600, env=env)  # fmt: skip
    summary = json.loads((tmp_path / "summary.json").read_text())
    steps = {s["name"]: s for s in summary["steps"]}
    assert list(steps) == ["versions", "wheels", "build", "extension", "op_probes"], result.stdout[-3000:]
    assert steps["build"]["status"] == "skipped" and "dry run" in steps["build"]["reason"]
    assert steps["wheels"]["status"] == "skipped" and "AION_FAST_WHEELS" in steps["wheels"]["reason"]
    assert steps["versions"]["figures"]["torch"] == torch.__version__
    assert steps["extension"]["status"] == "ok", steps["extension"].get("reason")
    probes = {p["op"]: p for p in steps["op_probes"]["figures"]["probes"]}
    assert steps["op_probes"]["status"] == "ok" and len(probes) == 8, steps["op_probes"].get("reason")
    for op in ("fsq_encode", "fsq_decode", "lfq_encode", "lfq_decode"):  # exact ops: bit for bit under the interpreter
        assert probes[op]["bit_equal_fraction"] == 1.0, probes[op]
    for op in ("image_preprocess", "image_postprocess", "spectrum_to_latent"):  # formulas: a few float32 ulps
        assert probes[op]["max_abs_error"] < 1e-5, probes[op]
    md = (tmp_path / "summary.md").read_text()
    assert md.startswith("# GPU check") and "| op_probes | ok |" in md and "failed: none" in md
    assert result.returncode == 0, result.stdout[-3000:]


@pytest.mark.slow
@pytest.mark.heavy
def test_dry_run_reports_every_step(tmp_path):
    result = subprocess.run(["bash", str(SCRIPT), str(tmp_path), "--dry-run"], cwd=ROOT, capture_output=True,
                            text=True, timeout=1200, env={**_env(), "PYTHON": sys.executable})  # fmt: skip
    log = (tmp_path / "gpu_check.log").read_text() if (tmp_path / "gpu_check.log").exists() else result.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (tmp_path / "summary.md").read_text().startswith("# GPU check")
    status = {s["name"]: s["status"] for s in summary["steps"]}
    assert all(v in ("ok", "skipped") for v in status.values()), (status, log[-6000:])
    assert status["build"] == "skipped" and status["wheels"] == "skipped"
    steps = {s["name"]: s for s in summary["steps"]}
    for name in ("versions", "extension", "tests_kernels", "tests_gpu", "op_probes", "encode_compare",
                 "bench_encode", "bench_train", "bench_int8"):  # fmt: skip
        assert status[name] == "ok", (name, steps[name].get("reason"))
    probes = {p["op"]: p for p in steps["op_probes"]["figures"]["probes"]}
    assert len(probes) == 8 and all(p["ok"] for p in probes.values())
    assert all(probes[op]["bit_equal_fraction"] == 1.0 for op in ("fsq_encode", "fsq_decode", "lfq_encode"))
    compare = steps["encode_compare"]["figures"]
    assert min(compare["fp32"]["token_agreement"].values()) == 1.0  # CPU vs CPU in fp32: identical
    assert set(compare["bf16"]["embedding_cosine"]) == {"image", "spectrum"}
    job = compare["job"]  # `aion-fast encode` on the CPU twice: identical embeddings
    assert job["objects"] == 27 and job["cpu-fp32"]["objects_compared"] == 27, job
    assert job["cpu-fp32"]["embedding_cosine"]["min"] > 0.999999, job
    assert "fp32_objects_per_s" in steps["bench_encode"]["figures"]
    assert steps["bench_train"]["figures"]["tokens_per_s"] > 0
    assert result.returncode == 0, log[-4000:]


def _env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "AION_FAST_BACKEND")}
