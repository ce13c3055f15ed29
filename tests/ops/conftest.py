"""Fixtures for the op tests: one run per backend, forced with AION_FAST_BACKEND."""

from __future__ import annotations

import pytest

from aion_fast import dispatch

# Triton kernels run on CUDA tensors only: the backend is part of the grid where a CUDA device is present.
_BACKENDS = ["torch", "cpp"] + (["triton"] if dispatch.triton_unavailable_reason() is None else [])


@pytest.fixture(params=_BACKENDS)
def backend(request, monkeypatch) -> str:
    """Forces each backend in turn; skips, with the reason, those that cannot run on this machine."""
    name = request.param
    if name == "cpp" and dispatch.load_extension() is None:
        pytest.skip(f"C++ extension not built: {dispatch.extension_error()}")
    if name == "triton":
        pytest.skip("triton backend: these tests use CPU tensors (Triton via the dispatcher: tests/kernels)")
    monkeypatch.setenv(dispatch.ENV_VAR, name)
    return name


@pytest.fixture
def ext():
    """The compiled module, or a skip with the reason it is missing."""
    module = dispatch.load_extension()
    if module is None:
        pytest.skip(f"C++ extension not built: {dispatch.extension_error()}")
    return module
