r"""Triton kernels of LFQ encode (sign bits -> index) and decode (index -> :math:`\pm s`), maths in
:mod:`aion_fast.ops.lfq`.

Encode: :math:`\text{index} = \sum_d [z_d > 0]\,2^{D-1-d}` as an integer sum (exact; ``NaN > 0`` is false, so NaN
gives bit 0 like the reference). Decode: :math:`2 s\,\text{bit} - s` evaluated as ``bit * s * 2 - s`` in float32,
which is exactly :math:`\pm s`. One program per block of rows, (BLOCK_M, D_PAD) tiles.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from aion_fast.kernels.utils import next_power_of_2

__all__ = ["LFQ_BLOCK_M", "lfq_decode_fwd", "lfq_decode_op", "lfq_encode_fwd", "lfq_encode_op"]

#: Rows per program.
LFQ_BLOCK_M = 1024


@triton.jit
def _lfq_encode_fwd_kernel(
    z_ptr,  # (M, D) float32
    out_ptr,  # (M,) int32
    M,
    D: tl.constexpr,
    D_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, D_PAD)
    row_ok = rows < M
    ok = row_ok[:, None] & (cols < D)[None, :]
    z = tl.load(z_ptr + rows.to(tl.int64)[:, None] * D + cols[None, :], mask=ok, other=0.0)
    weight = tl.where(cols < D, 1 << (D - 1 - cols), 0)
    bits = tl.where(ok & (z > 0.0), weight[None, :], 0)
    tl.store(out_ptr + rows, tl.sum(bits, axis=1).to(tl.int32), mask=row_ok)


@triton.jit
def _lfq_decode_fwd_kernel(
    index_ptr,  # (M,) int32
    out_ptr,  # (M, D) float32
    scale,
    M,
    D: tl.constexpr,
    D_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, D_PAD)
    row_ok = rows < M
    ok = row_ok[:, None] & (cols < D)[None, :]
    idx = tl.load(index_ptr + rows, mask=row_ok, other=0)
    shift = tl.where(cols < D, D - 1 - cols, 0)
    bit = ((idx[:, None] >> shift[None, :]) & 1).to(tl.float32)
    code = bit * scale * 2.0 - scale
    tl.store(out_ptr + rows.to(tl.int64)[:, None] * D + cols[None, :], code, mask=ok)


def _identity(kernel):
    return kernel


def _encode(wrap, z):
    m, d = z.shape
    out = torch.empty(m, dtype=torch.int32, device=z.device)
    wrap(_lfq_encode_fwd_kernel)[(max(triton.cdiv(m, LFQ_BLOCK_M), 1),)](
        z.contiguous(), out, m, D=d, D_PAD=next_power_of_2(d), BLOCK_M=LFQ_BLOCK_M
    )
    return out


def _decode(wrap, indices, dim, scale):
    m = indices.shape[0]
    out = torch.empty((m, dim), dtype=torch.float32, device=indices.device)
    wrap(_lfq_decode_fwd_kernel)[(max(triton.cdiv(m, LFQ_BLOCK_M), 1),)](
        indices.contiguous(), out, scale, m, D=dim, D_PAD=next_power_of_2(dim), BLOCK_M=LFQ_BLOCK_M,
        enable_fp_fusion=False,
    )  # fmt: skip
    return out


def lfq_encode_fwd(z: torch.Tensor) -> torch.Tensor:
    """Launcher: (M, D) float32 latents, 1 <= D <= 31 -> (M,) int32 indices (eager; see :func:`lfq_encode_op`)."""
    return _encode(_identity, z)


@torch.library.triton_op("aion_fast::lfq_encode_triton", mutates_args=())
def lfq_encode_op(z: torch.Tensor) -> torch.Tensor:
    """:func:`lfq_encode_fwd` registered with ``torch.library.triton_op``: torch.compile sees the kernel."""
    return _encode(torch.library.wrap_triton, z)


def lfq_decode_fwd(indices: torch.Tensor, dim: int, scale: float) -> torch.Tensor:
    """Launcher: (M,) int32 indices in [0, 2**dim) -> (M, dim) float32 codes in {-scale, +scale}."""
    return _decode(_identity, indices, dim, scale)


@torch.library.triton_op("aion_fast::lfq_decode_triton", mutates_args=())
def lfq_decode_op(indices: torch.Tensor, dim: int, scale: float) -> torch.Tensor:
    """:func:`lfq_decode_fwd` registered with ``torch.library.triton_op``."""
    return _decode(torch.library.wrap_triton, indices, dim, scale)
