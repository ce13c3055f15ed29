"""Runs the Triton kernel tests in a fresh interpreter when this process imported Triton in compiled mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kernels.conftest import TRITON_IMPORTED_COMPILED

HERE = Path(__file__).parent


@pytest.mark.skipif(not TRITON_IMPORTED_COMPILED, reason="the kernel tests run in this process")
def test_kernel_tests_under_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env.pop("PYTEST_ADDOPTS", None)
    # test_aot_compile.py starts its own compiled-mode process and runs in the main session already
    skip = (Path(__file__).name, "test_aot_compile.py")
    files = [str(p) for p in sorted(HERE.glob("test_*.py")) if p.name not in skip]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", *files],
        cwd=HERE.parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout.splitlines()[-1], result.stdout[-2000:]
