"""The compiled module aion_fast._C: loads when built, checks its arguments, and degrades clearly when missing."""

from __future__ import annotations

import logging
import types

import numpy as np
import pytest
import torch

from aion_fast import dispatch
from aion_fast.ops import fsq_encode, lfq_encode, torch_fsq_encode


@pytest.fixture
def ext():
    module = dispatch.load_extension()
    if module is None:
        pytest.skip(f"C++ extension not built: {dispatch.extension_error()}")
    return module


@pytest.fixture
def fresh_loader(monkeypatch):
    """Forgets the cached import before and after the test, so monkeypatched loaders take effect and are undone."""
    dispatch._reset_extension_cache()
    yield monkeypatch
    monkeypatch.undo()
    dispatch._reset_extension_cache()


def test_extension_loads_when_built(ext):
    assert ext.API_VERSION == dispatch.EXPECTED_API_VERSION
    info = ext.build_info()
    assert set(info) >= {"compiler", "arch_flags", "openmp", "cuda"}
    assert "cpp" in dispatch.available_backends()
    assert dispatch.available_backends()[-1] == "torch"


def test_extension_argument_checks(ext):
    t = np.zeros((4, 5), np.float32)
    levels, half_l, offset = np.array([7, 5, 5, 5, 5], np.int32), np.ones(5, np.float32), np.zeros(5, np.float32)
    out = np.zeros(4, np.int32)
    assert ext.fsq_encode_from_tanh(t, levels, half_l, offset, out) == 0
    with pytest.raises(TypeError, match=r"tanh_z: expected dtype float32, got float64"):
        ext.fsq_encode_from_tanh(t.astype(np.float64), levels, half_l, offset, out)
    with pytest.raises(ValueError, match=r"tanh_z: expected a C-contiguous array"):
        ext.fsq_encode_from_tanh(np.zeros((5, 4), np.float32).T, levels, half_l, offset, out)
    with pytest.raises(ValueError, match=r"levels: expected size 5 .* got shape \(4,\)"):
        ext.fsq_encode_from_tanh(t, levels[:4], half_l, offset, out)
    with pytest.raises(ValueError, match=r"out: expected size 4"):
        ext.fsq_encode_from_tanh(t, levels, half_l, offset, np.zeros(3, np.int32))
    readonly = np.zeros(4, np.int32)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match=r"out: output array is read-only"):
        ext.fsq_encode_from_tanh(t, levels, half_l, offset, readonly)
    with pytest.raises(ValueError, match=r"z: the number of channels D \(axis 1\) must lie in \[1, 31\]"):
        ext.lfq_encode(np.zeros((2, 32, 1), np.float32), np.zeros((2, 1), np.int32))  # (O, D, I) layout
    with pytest.raises(TypeError):  # torch tensors are not accepted: Python passes .numpy() views
        ext.lfq_encode(torch.zeros(2, 3), torch.zeros(2, dtype=torch.int32))


def test_forced_cpp_without_extension_is_clear(fresh_loader, caplog):
    def missing():
        raise ImportError("simulated: no module named 'aion_fast._C'")

    fresh_loader.setattr(dispatch, "_import_extension", missing)
    z = torch.randn(8, 5)
    with caplog.at_level(logging.WARNING, logger="aion_fast"):
        # unforced: falls back to torch, same indices, one warning however many calls
        for _ in range(3):
            assert torch.equal(
                fsq_encode(z, [7, 5, 5, 5, 5], channel_first=False), torch_fsq_encode(z, [7, 5, 5, 5, 5])
            )
            lfq_encode(z, channel_first=False)
    warnings = [r for r in caplog.records if "aion_fast._C" in r.getMessage()]
    assert len(warnings) == 1
    assert "PyTorch path" in warnings[0].getMessage() and "simulated" in warnings[0].getMessage()
    assert dispatch.available_backends()[-1:] == ["torch"] and "cpp" not in dispatch.available_backends()

    fresh_loader.setenv(dispatch.ENV_VAR, "cpp")
    with pytest.raises(dispatch.BackendUnavailableError, match=r"AION_FAST_BACKEND=cpp.*fsq_encode.*simulated"):
        fsq_encode(z, [7, 5, 5, 5, 5], channel_first=False)
    with pytest.raises(dispatch.BackendUnavailableError, match=r"lfq_encode.*extension is not available"):
        lfq_encode(z, channel_first=False)


def test_stale_extension_is_refused(fresh_loader):
    fresh_loader.setattr(dispatch, "_import_extension", lambda: types.SimpleNamespace(API_VERSION=0))
    assert dispatch.load_extension() is None
    assert "stale build" in dispatch.extension_error()


def test_forced_backend_values(monkeypatch):
    z = torch.randn(4, 5)
    monkeypatch.setenv(dispatch.ENV_VAR, "cuda")
    with pytest.raises(ValueError, match="expected one of triton, cpp, torch"):
        fsq_encode(z, [7, 5, 5, 5, 5], channel_first=False)
    monkeypatch.setenv(dispatch.ENV_VAR, "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # with the interpreter on, forced Triton takes CPU tensors
    with pytest.raises(dispatch.BackendUnavailableError, match="tensor not on CUDA"):
        fsq_encode(z, [7, 5, 5, 5, 5], channel_first=False)
    monkeypatch.setenv(dispatch.ENV_VAR, "torch")
    assert torch.equal(fsq_encode(z, [7, 5, 5, 5, 5], channel_first=False), torch_fsq_encode(z, [7, 5, 5, 5, 5]))
