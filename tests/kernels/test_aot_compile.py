"""Every Triton kernel of ``kernels/`` compiles to a cubin for sm_80 and sm_90 without a GPU (see aot_compile.py).

The compilation runs in a fresh interpreter with ``TRITON_INTERPRET`` unset: the test session runs Triton in
interpreter mode, where ``@triton.jit`` functions cannot be compiled. About 30-60 s on 2 cores for both targets.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed (pip install -e .[test])")
def test_every_kernel_compiles_for_sm80_and_sm90(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "AION_FAST_BACKEND")}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton-cache")  # compile for real, not from an earlier run's cache
    out = tmp_path / "aot.json"
    result = subprocess.run(
        [sys.executable, "-m", "tests.kernels.aot_compile", "--arch", "80", "--arch", "90", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["unlaunched"] == [], report["unlaunched"]
    kernels = {r["kernel"] for r in report["results"]}
    assert kernels == set(report["kernels"]) and len(kernels) == 8, sorted(kernels)
    failed = [f"sm_{r['arch']} {r['kernel']} {r['constexprs']}: {r['error'][-500:]}" for r in report["results"]
              if not r["ok"]]  # fmt: skip
    assert not failed, "\n".join(failed)
    assert {r["arch"] for r in report["results"]} == {80, 90}
    assert all(r["cubin_bytes"] > 1000 for r in report["results"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
