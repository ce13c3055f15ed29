"""Triton FSQ/LFQ kernels against the aion_fast.ops PyTorch references: exact index equality (torch.equal)."""

from __future__ import annotations

import pytest
import torch

from aion_fast.ops.fsq import _constants, torch_fsq_decode, torch_fsq_encode
from aion_fast.ops.lfq import torch_lfq_decode, torch_lfq_encode
from tests.ops.test_fsq import LEVELS, assert_indices_equal, boundary_latents

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")
tanh_f32 = pytest.importorskip("aion_fast.kernels._math").tanh_f32

EPS = 1e-3


def fsq_encode_triton(z: torch.Tensor, levels: tuple[int, ...]) -> tuple[torch.Tensor, int]:
    """What a dispatcher does: PyTorch's tanh(z + shift), then the kernel."""
    from aion_fast.kernels.fsq import fsq_encode_from_tanh_fwd

    c = _constants(levels, EPS).to(z.device)
    tanh_z = torch.tanh(z.reshape(-1, len(levels)).float() + c.shift)
    return fsq_encode_from_tanh_fwd(tanh_z, c.half_l, c.offset, c.half_width.float(), c.basis.float())


@pytest.mark.parametrize("levels", LEVELS)
@pytest.mark.parametrize("rows", [1, 3, 7, 1155])
def test_fsq_encode_random_and_boundaries(device, levels, rows):
    g = torch.Generator().manual_seed(rows)
    z = torch.randn(rows, len(levels), generator=g) * 3
    z = torch.cat([z, boundary_latents(levels)[: 4 * rows]]).to(device)
    z[0] = torch.tensor([1e30, -1e30, float("inf"), -float("inf"), 0.0, 0.0][: len(levels)])
    ours, nan_rows = fsq_encode_triton(z, levels)
    assert nan_rows == 0
    assert_indices_equal(ours.cpu(), torch_fsq_encode(z.cpu(), levels, EPS))


def test_fsq_encode_nan_rows_are_counted_and_never_in_range(device):
    levels = LEVELS[0]
    z = torch.randn(9, 5, device=device)
    z[[2, 5], 1] = float("nan")
    ours, nan_rows = fsq_encode_triton(z, levels)
    assert nan_rows == 2
    assert ours[[2, 5]].tolist() == [-1, -1]


def test_fsq_encode_non_contiguous(device):
    levels = LEVELS[0]
    z = torch.randn(5, 40, 3, device=device).transpose(1, 2)[:, :, :].reshape(-1, 40)[:, 7:12]
    assert not z.is_contiguous()
    assert_indices_equal(fsq_encode_triton(z, levels)[0].cpu(), torch_fsq_encode(z.cpu(), levels, EPS))


@pytest.mark.parametrize("levels", LEVELS)
def test_fsq_decode_every_index(device, levels):
    from aion_fast.kernels.fsq import fsq_decode_fwd

    c = _constants(levels, 0.0).to(torch.device(device))
    codebook = int(torch.tensor(levels).prod())
    idx = torch.arange(min(codebook, 20000), dtype=torch.int32, device=device)
    ours = fsq_decode_fwd(idx, c.levels, c.basis)
    assert torch.equal(ours.cpu(), torch_fsq_decode(idx.cpu(), levels))


@pytest.mark.parametrize("dim", [1, 10, 17])
@pytest.mark.parametrize("rows", [1, 3, 7, 272 * 3])
def test_lfq_encode_decode(device, dim, rows):
    from aion_fast.kernels.lfq import lfq_decode_fwd, lfq_encode_fwd

    g = torch.Generator().manual_seed(rows * dim)
    z = torch.randn(rows, dim, generator=g)
    z[0, 0], z[-1, -1] = float("nan"), -0.0
    z = z.to(device)
    idx = lfq_encode_fwd(z)
    assert_indices_equal(idx.cpu(), torch_lfq_encode(z.cpu()))
    assert torch.equal(lfq_decode_fwd(idx, dim, 0.37).cpu(), torch_lfq_decode(idx.cpu(), dim, 0.37))


@triton.jit
def _tanh_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr, USE_LIBDEVICE: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n, other=0.0)
    tl.store(out_ptr + offs, tanh_f32(x, USE_LIBDEVICE), mask=offs < n)


def test_tanh_from_exp_is_close_but_not_bit_exact(device):
    """The kernels' tanh is within 8 ulps of torch's but not bit-equal, so FSQ takes torch's tanh (kernels/fsq.py)."""
    x = (torch.randn(1 << 16) * 2).to(device)
    out = torch.empty_like(x)
    _tanh_kernel[(1,)](x, out, x.numel(), BLOCK=1 << 16, USE_LIBDEVICE=device == "cuda")
    ref = torch.tanh(x)
    ulp = (out.cpu().view(torch.int32).long() - ref.cpu().view(torch.int32).long()).abs()
    assert int(ulp.max()) <= 8, int(ulp.max())
    print(f"tanh from exp vs torch.tanh: {float((ulp > 0).float().mean()):.2%} differ, max {int(ulp.max())} ulp")
