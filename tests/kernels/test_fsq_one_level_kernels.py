"""The FSQ quantizer with one-level channels through the Triton backend (interpreted on CPU tensors without a GPU):
the same indices as the reference on the other channels (tests/quantizers/test_fsq_one_level.py for torch/cpp)."""

from __future__ import annotations

import pytest
import torch

from aion_fast import dispatch
from aion_fast.quantizers import FiniteScalarQuantizer

pytest.importorskip("triton")
aion_quantizers = pytest.importorskip("aion.codecs.quantizers")


@pytest.mark.parametrize("levels,active", [([7, 1, 5, 5, 5], [0, 2, 3, 4]), ([1, 8, 1, 5], [1, 3])])
def test_triton_fsq_with_one_level_channels(device, monkeypatch, levels, active):
    monkeypatch.setenv(dispatch.ENV_VAR, "triton")
    z = torch.randn(2, len(levels), 131, generator=torch.Generator().manual_seed(3)) * 2.5
    reference = aion_quantizers.FiniteScalarQuantizer([levels[d] for d in active])
    expected = reference.encode(z[:, active]).long()
    quantizer = FiniteScalarQuantizer(levels)
    tokens = quantizer.encode(z.to(device))
    assert torch.equal(tokens.cpu(), expected)
    decoded = quantizer.decode(tokens).cpu()
    assert torch.equal(decoded[:, active], reference.decode(expected))
    assert not decoded[:, [d for d in range(len(levels)) if d not in active]].any()
