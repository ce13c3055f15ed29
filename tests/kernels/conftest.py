"""Triton kernel tests: on a CUDA device when there is one, else under ``TRITON_INTERPRET=1`` on CPU tensors.

Triton reads ``TRITON_INTERPRET`` when it is first imported (its own jit'd helpers such as ``tl.sum`` are created
then). It is set here, which is early enough when these tests run alone; in a full run another package (e.g. the
reference ``aion``, through ``torch._dynamo``) may already have imported Triton in compiled mode. The kernel tests
then skip in-process and ``test_interpreter_subprocess.py`` runs them in a fresh interpreter instead.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


def interpreter_active() -> bool:
    """Whether Triton in this process runs kernels with the interpreter (imports Triton)."""
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.sum, InterpretedFunction)


#: Triton was imported before this conftest could enable the interpreter (decided at collection).
TRITON_IMPORTED_COMPILED = "triton" in sys.modules and not HAS_CUDA and not interpreter_active()


@pytest.fixture
def device() -> str:
    """``cuda`` on a GPU machine, else ``cpu`` (interpreter); skips when Triton cannot run the kernels here."""
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed (pip install -e .[test])")
    if not HAS_CUDA and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        pytest.skip("no CUDA device and TRITON_INTERPRET is disabled")
    if TRITON_IMPORTED_COMPILED:
        pytest.skip("Triton was imported before TRITON_INTERPRET=1 was set; run by test_interpreter_subprocess.py")
    return "cuda" if HAS_CUDA else "cpu"
