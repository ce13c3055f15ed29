"""The CUDA sources (``csrc/**/*.cu``) compile with nvcc for sm_90, on a machine without a GPU.

Skipped, with the reason, when no ``nvcc`` is found (PATH, ``$CUDA_HOME/bin``, ``/usr/local/cuda/bin``). The
sources include no torch headers (the extension passes raw pointers and the stream), so only the CUDA toolkit is
needed. About 3 s per file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "csrc").glob("**/*.cu"))


def find_nvcc() -> str | None:
    """Path of nvcc, or None."""
    found = shutil.which("nvcc")
    if found:
        return found
    for base in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if base and (Path(base) / "bin" / "nvcc").is_file():
            return str(Path(base) / "bin" / "nvcc")
    return None


NVCC = find_nvcc()


def test_there_are_cuda_sources():
    assert SOURCES, "csrc/**/*.cu is empty: update this test if the CUDA sources moved"


@pytest.mark.skipif(NVCC is None, reason="nvcc not found (PATH, $CUDA_HOME/bin, /usr/local/cuda/bin)")
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_cuda_source_compiles_for_sm90(source, tmp_path):
    cmd = [NVCC, "-c", str(source), "-o", str(tmp_path / "out.o"), "-arch=sm_90", "-std=c++17", "-O2",
           "-Werror", "all-warnings", "-I", str(ROOT / "csrc" / "include"), "-I", str(source.parent),
           "-DAION_FAST_WITH_CUDA"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, " ".join(cmd) + "\n" + result.stderr[-4000:]
    assert (tmp_path / "out.o").stat().st_size > 1000
