"""One layout convention from quantizer module to op, and validation done once (by the op, the public entry)."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from aion_fast.ops import fsq_decode, fsq_encode, lfq_decode, lfq_encode
from aion_fast.quantizers import FiniteScalarQuantizer, LookupFreeQuantizer


class HostReads(TorchDispatchMode):
    """Counts the ATen calls that read a tensor value on the host (``.item()``, ``int()``, ``bool()``)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def _default(fn, name: str = "channel_first"):
    return inspect.signature(fn).parameters[name].default


@pytest.mark.parametrize(
    ("module_fn", "op_fn"),
    [(FiniteScalarQuantizer.encode, fsq_encode), (LookupFreeQuantizer.encode, lfq_encode)],
)
def test_module_and_op_share_the_channel_first_default(module_fn, op_fn):
    assert _default(module_fn) is True and _default(op_fn) is True


def test_same_indices_through_module_and_op_in_both_layouts():
    levels = [7, 5, 5, 5, 5]
    z = torch.randn(3, 5, 6, 7, generator=torch.Generator().manual_seed(0)) * 2
    q = FiniteScalarQuantizer(levels)
    assert torch.equal(q.encode(z), fsq_encode(z, levels).long())
    zl = z.movedim(1, -1)
    assert torch.equal(q.encode(zl, channel_first=False), fsq_encode(zl, levels, channel_first=False).long())
    assert torch.equal(q.encode(z), q.encode(zl, channel_first=False))
    x = torch.randn(2, 10, 17, generator=torch.Generator().manual_seed(1))
    lq = LookupFreeQuantizer(dim=10, codebook_size=1024)
    assert torch.equal(lq.encode(x), lfq_encode(x).long())
    assert torch.equal(lq.encode(x.movedim(1, -1), channel_first=False), lq.encode(x))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_decode_checks_indices_once(dtype):
    """The module adds no range check of its own: as many host reads as the op's own decode."""
    q = FiniteScalarQuantizer([7, 5, 5, 5, 5])
    lq = LookupFreeQuantizer(dim=10, codebook_size=1024)
    codes = torch.randint(0, 1024, (4, 50), dtype=dtype)
    for module_call, op_call in (
        (lambda: q.decode(codes), lambda: fsq_decode(codes, [7, 5, 5, 5, 5])),
        (lambda: lq.decode(codes), lambda: lfq_decode(codes, 10, 1.0)),
    ):
        with HostReads() as op_reads:
            op_call()
        with HostReads() as module_reads:
            module_call()
        assert module_reads.count == op_reads.count


def test_bad_input_still_raises_through_the_module():
    q = FiniteScalarQuantizer([7, 5, 5, 5, 5])
    with pytest.raises(ValueError, match=r"shape \(B, 5, \.\.\.\).*channel_first=False"):
        q.encode(torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match=r"\[0, 4375\)"):
        q.decode(torch.tensor([[4375]]))
    with pytest.raises(TypeError, match="integer"):
        q.decode(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="NaN"):
        q.encode(torch.full((1, 5, 2), float("nan")))
    lq = LookupFreeQuantizer(dim=10, codebook_size=1024)
    with pytest.raises(ValueError, match="10 channels"):
        lq.encode(torch.randn(2, 9, 4))
    with pytest.raises(ValueError, match=r"\[0, 2\*\*10\)"):
        lq.decode(torch.tensor([[1024]]))


@pytest.mark.parametrize("levels", [[9, 7, 3], [6, 5, 4, 3]])
def test_encoding_in_inference_mode_first_leaves_training_usable(levels):
    """The op caches per-level constants for the process; made under inference mode they must still serve autograd
    (a job encodes, then the same process trains a codec)."""
    quantizer = FiniteScalarQuantizer(levels)
    z = torch.randn(2, len(levels), 5, 3)
    with torch.inference_mode():
        expected = quantizer.encode(z)
    trainable = z.clone().requires_grad_(True)
    quantized, *_ = quantizer(trainable)
    quantized.sum().backward()
    assert trainable.grad is not None and torch.isfinite(trainable.grad).all()
    assert torch.equal(quantizer.encode(z), expected)
