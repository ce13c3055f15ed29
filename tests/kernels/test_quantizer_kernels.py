"""Triton FSQ/LFQ kernels against the aion_fast.ops PyTorch references: exact index equality (torch.equal).

The oracle runs on the kernel's own device: CUDA's ``tanhf`` and the CPU's differ in the last ulp on some inputs, so
on latents placed within ulps of rounding boundaries a CUDA index may differ from the CPU reference's although the
kernel is exact against PyTorch on the same device (which is what the reference computes there). The CPU agreement
is printed as a figure on a GPU.
"""

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
    assert int(nan_rows) == 0
    assert_indices_equal(ours.cpu(), torch_fsq_encode(z, levels, EPS).cpu())  # same-device oracle
    report_cpu_agreement(ours, torch_fsq_encode(z.cpu(), levels, EPS), f"fsq levels={levels} rows={rows}")


def report_cpu_agreement(ours: torch.Tensor, cpu_ref: torch.Tensor, what: str) -> None:
    """Prints the fraction of indices equal to the CPU reference's (a figure on a GPU, equality on a CPU)."""
    same = float((ours.cpu() == cpu_ref).float().mean())
    if ours.device.type == "cpu":
        assert same == 1.0
    print(f"{what}: {same:.6%} of indices equal the CPU reference's")


def test_fsq_encode_nan_rows_are_counted_and_never_in_range(device):
    levels = LEVELS[0]
    z = torch.randn(9, 5, device=device)
    z[[2, 5], 1] = float("nan")
    ours, nan_rows = fsq_encode_triton(z, levels)
    assert int(nan_rows) == 2
    assert ours[[2, 5]].tolist() == [-1, -1]


def test_fsq_encode_non_contiguous(device):
    levels = LEVELS[0]
    z = torch.randn(5, 40, 3, device=device).transpose(1, 2)[:, :, :].reshape(-1, 40)[:, 7:12]
    assert not z.is_contiguous()
    assert_indices_equal(fsq_encode_triton(z, levels)[0].cpu(), torch_fsq_encode(z, levels, EPS).cpu())


@pytest.mark.parametrize("levels", LEVELS)
def test_fsq_decode_every_index(device, levels):
    from aion_fast.kernels.fsq import fsq_decode_fwd

    c = _constants(levels, 0.0).to(torch.device(device))
    codebook = int(torch.tensor(levels).prod())
    idx = torch.arange(min(codebook, 20000), dtype=torch.int32, device=device)
    ours = fsq_decode_fwd(idx, c.levels, c.basis)
    assert torch.equal(ours, torch_fsq_decode(idx, levels))


@pytest.mark.parametrize("dim", [1, 10, 17])
@pytest.mark.parametrize("rows", [1, 3, 7, 272 * 3])
def test_lfq_encode_decode(device, dim, rows):
    from aion_fast.kernels.lfq import lfq_decode_fwd, lfq_encode_fwd

    g = torch.Generator().manual_seed(rows * dim)
    z = torch.randn(rows, dim, generator=g)
    z[0, 0], z[-1, -1] = float("nan"), -0.0
    z = z.to(device)
    idx = lfq_encode_fwd(z)
    assert_indices_equal(idx.cpu(), torch_lfq_encode(z).cpu())
    assert torch.equal(lfq_decode_fwd(idx, dim, 0.37), torch_lfq_decode(idx, dim, 0.37))


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


# ---- the same kernels through the ops' dispatchers (AION_FAST_BACKEND=triton; CPU tensors run interpreted) --------


@pytest.fixture
def forced_triton(device, monkeypatch):
    from aion_fast import dispatch

    monkeypatch.setenv(dispatch.ENV_VAR, "triton")
    return device


@pytest.mark.parametrize("levels", LEVELS)
@pytest.mark.parametrize("batch", [1, 3, 7])
def test_dispatcher_fsq_triton(forced_triton, levels, batch):
    from aion_fast import dispatch
    from aion_fast.ops import fsq as fsq_ops
    from tests.ops.test_fsq import channel_first_latents

    z = channel_first_latents(levels, batch, 96, seed=batch)
    assert dispatch.select("fsq_encode", fsq_ops._ENCODE_BACKENDS, z, levels, EPS, True).name == "triton"
    zd = z.to(forced_triton)
    ref = torch_fsq_encode(zd.movedim(1, -1), levels, EPS).cpu()  # same-device oracle
    assert_indices_equal(fsq_ops.fsq_encode(zd, levels, EPS, channel_first=True).cpu(), ref)
    assert_indices_equal(fsq_ops.fsq_encode(zd.movedim(1, -1), levels, EPS, channel_first=False).cpu(), ref)
    with torch.autocast(zd.device.type, dtype=torch.bfloat16):
        assert_indices_equal(fsq_ops.fsq_encode(zd.bfloat16(), levels, EPS, channel_first=True).cpu(),
                             torch_fsq_encode(zd.bfloat16().float().movedim(1, -1), levels, EPS).cpu())  # fmt: skip
    assert torch.equal(fsq_ops.fsq_decode(ref.to(forced_triton), levels).cpu(), torch_fsq_decode(ref, levels))
    zd[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fsq_ops.fsq_encode(zd, levels, EPS, channel_first=True)
    with pytest.raises(ValueError, match="indices must lie"):
        fsq_ops.fsq_decode(torch.tensor([0, -1], device=forced_triton), levels)


@pytest.mark.parametrize("batch", [1, 3, 7])
def test_dispatcher_lfq_triton(forced_triton, batch):
    from aion_fast.ops.lfq import lfq_decode, lfq_encode

    z = torch.randn(batch, 10, 272)
    z[0, 0, 0], z[-1, -1, -1], z[0, 3, 5] = float("nan"), -0.0, float("inf")
    ref = torch_lfq_encode(z.movedim(1, -1))
    zd = z.to(forced_triton)
    assert_indices_equal(lfq_encode(zd, channel_first=True).cpu(), ref)
    assert_indices_equal(
        lfq_encode(zd.movedim(1, -1).bfloat16(), channel_first=False).cpu(),
        torch_lfq_encode(z.movedim(1, -1).bfloat16().float()),
    )
    assert torch.equal(lfq_decode(ref.to(forced_triton), 10, 0.5).cpu(), torch_lfq_decode(ref, 10, 0.5))


def test_triton_is_never_chosen_unforced_for_cpu_tensors(device):
    from aion_fast import dispatch
    from aion_fast.ops import lfq as lfq_ops

    z = torch.randn(4, 10)
    assert dispatch.select("lfq_encode", lfq_ops._ENCODE_BACKENDS, z, False).name != "triton"
    reasons = lfq_ops._ENCODE_BACKENDS[0].not_supported_reasons(z, False)
    assert reasons == ["tensor not on CUDA"] or device == "cuda"


def test_launchers_are_registered_as_triton_ops(device):
    """torch.library.triton_op registrations (what torch.compile traces) give the eager launchers' results."""
    from aion_fast.kernels.fsq import fsq_decode_op, fsq_encode_from_tanh_op
    from aion_fast.kernels.lfq import lfq_decode_op, lfq_encode_op

    for name in ("fsq_encode_from_tanh_triton", "fsq_decode_triton", "lfq_encode_triton", "lfq_decode_triton"):
        assert hasattr(torch.ops.aion_fast, name), name
    levels = LEVELS[0]
    z = (torch.randn(300, len(levels)) * 2).to(device)
    c = _constants(levels, EPS).to(torch.device(device))
    tanh_z = torch.tanh(z + c.shift)
    out, nan_rows = fsq_encode_from_tanh_op(tanh_z, c.half_l, c.offset, c.half_width.float(), c.basis.float())
    assert int(nan_rows) == 0
    assert_indices_equal(out.cpu(), torch_fsq_encode(z, levels, EPS).cpu())
    assert torch.equal(fsq_decode_op(out, c.levels, c.basis), torch_fsq_decode(out, levels))
    zl = torch.randn(50, 10).to(device)
    idx = lfq_encode_op(zl)
    assert_indices_equal(idx.cpu(), torch_lfq_encode(zl).cpu())
    assert torch.equal(lfq_decode_op(idx, 10, 0.5), torch_lfq_decode(idx, 10, 0.5))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fsq_lfq_under_torch_compile_on_cuda():
    """torch.compile traces the Triton paths through their triton_op registrations (fullgraph, no host sync)."""
    from aion_fast.ops import fsq_encode, lfq_encode

    levels = LEVELS[0]
    z = (torch.randn(4, len(levels), 24, 24) * 2).cuda()
    zl = torch.randn(4, 10, 272).cuda()
    compiled = torch.compile(
        lambda a, b: (fsq_encode(a, levels, EPS, channel_first=True), lfq_encode(b, channel_first=True)),
        fullgraph=True,
    )
    got_fsq, got_lfq = compiled(z, zl)
    assert_indices_equal(got_fsq.cpu(), torch_fsq_encode(z.movedim(1, -1), levels, EPS).cpu())
    assert_indices_equal(got_lfq.cpu(), torch_lfq_encode(zl.movedim(1, -1)).cpu())
