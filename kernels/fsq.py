r"""Triton kernels of FSQ encode (from :math:`\tanh(z + s)`) and decode (maths: :mod:`aion_fast.ops.fsq`).

Encode replays the reference's float32 steps after the tanh: :math:`b = t\,a_d - o_d` (FMA fusion off, two roundings
like PyTorch), round half to even by the :math:`1.5 \cdot 2^{23}` trick, digit :math:`(q / h_d)\,h_d + h_d` with IEEE
division, then the mixed-radix sum (exact in any order for the levels the dispatcher admits: partial sums are
integers below :math:`2^{24}`). The tanh stays in PyTorch: any other tanh (SLEEF, ``tanhf``, or the ``exp`` formula
of :func:`aion_fast.kernels._math.tanh_f32` under ``TRITON_INTERPRET=1``) differs in the last bits on many inputs,
and one ulp can flip the rounding at a half-integer. One program per block of rows, (BLOCK_M, D_PAD) tiles.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from aion_fast.kernels.utils import next_power_of_2

__all__ = ["FSQ_BLOCK_M", "fsq_decode_fwd", "fsq_decode_op", "fsq_encode_from_tanh_fwd", "fsq_encode_from_tanh_op"]

#: Rows per program.
FSQ_BLOCK_M = 1024


@triton.jit
def _fsq_encode_fwd_kernel(
    tanh_ptr,  # (M, D) float32
    half_l_ptr,  # (D,) float32
    offset_ptr,  # (D,) float32
    half_width_ptr,  # (D,) float32
    basis_ptr,  # (D,) float32
    out_ptr,  # (M,) int32
    nan_ptr,  # (num_programs,) int32
    M,
    D: tl.constexpr,
    D_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, D_PAD)
    row_ok = rows < M
    col_ok = cols < D
    ok = row_ok[:, None] & col_ok[None, :]
    t = tl.load(tanh_ptr + rows.to(tl.int64)[:, None] * D + cols[None, :], mask=ok, other=0.0)
    half_l = tl.load(half_l_ptr + cols, mask=col_ok, other=0.0)
    offset = tl.load(offset_ptr + cols, mask=col_ok, other=0.0)
    half_width = tl.load(half_width_ptr + cols, mask=col_ok, other=1.0)
    basis = tl.load(basis_ptr + cols, mask=col_ok, other=0.0)
    bounded = t * half_l[None, :] - offset[None, :]
    q = (bounded + 12582912.0) - 12582912.0  # round half to even (|bounded| < 2^22)
    digit = tl.math.div_rn(q, half_width[None, :]) * half_width[None, :] + half_width[None, :]
    term = tl.where(ok, digit * basis[None, :], 0.0)
    acc = tl.sum(term, axis=1)
    is_nan = acc != acc
    tl.store(out_ptr + rows, tl.where(is_nan, -1, tl.where(is_nan, 0.0, acc).to(tl.int32)), mask=row_ok)
    tl.store(nan_ptr + pid, tl.sum((is_nan & row_ok).to(tl.int32), axis=0))


@triton.jit
def _fsq_decode_fwd_kernel(
    index_ptr,  # (M,) int32
    levels_ptr,  # (D,) int32
    basis_ptr,  # (D,) int32
    out_ptr,  # (M, D) float32
    M,
    D: tl.constexpr,
    D_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, D_PAD)
    row_ok = rows < M
    col_ok = cols < D
    idx = tl.load(index_ptr + rows, mask=row_ok, other=0)
    levels = tl.load(levels_ptr + cols, mask=col_ok, other=2)
    basis = tl.load(basis_ptr + cols, mask=col_ok, other=1)
    digit = (idx[:, None] // basis[None, :]) % levels[None, :]
    half_width = (levels // 2).to(tl.float32)
    code = tl.math.div_rn(digit.to(tl.float32) - half_width[None, :], half_width[None, :])
    tl.store(out_ptr + rows.to(tl.int64)[:, None] * D + cols[None, :], code, mask=row_ok[:, None] & col_ok[None, :])


def _identity(kernel):
    return kernel


def _encode(wrap, tanh_z, half_l, offset, half_width, basis):
    m, d = tanh_z.shape
    tanh_z = tanh_z.contiguous()
    out = torch.empty(m, dtype=torch.int32, device=tanh_z.device)
    n_programs = max(triton.cdiv(m, FSQ_BLOCK_M), 1)
    nan_rows = torch.zeros(n_programs, dtype=torch.int32, device=tanh_z.device)
    wrap(_fsq_encode_fwd_kernel)[(n_programs,)](
        tanh_z, half_l, offset, half_width, basis, out, nan_rows, m,
        D=d, D_PAD=next_power_of_2(d), BLOCK_M=FSQ_BLOCK_M, enable_fp_fusion=False,
    )  # fmt: skip
    return out, nan_rows.sum()


def _decode(wrap, indices, levels, basis):
    m, d = indices.shape[0], levels.shape[0]
    out = torch.empty((m, d), dtype=torch.float32, device=indices.device)
    wrap(_fsq_decode_fwd_kernel)[(max(triton.cdiv(m, FSQ_BLOCK_M), 1),)](
        indices.contiguous(), levels, basis, out, m, D=d, D_PAD=next_power_of_2(d), BLOCK_M=FSQ_BLOCK_M
    )
    return out


def fsq_encode_from_tanh_fwd(
    tanh_z: torch.Tensor, half_l: torch.Tensor, offset: torch.Tensor, half_width: torch.Tensor, basis: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launcher: (M, D) float32 ``tanh(z + shift)`` and (D,) float32 constants -> ((M,) int32 indices, NaN rows).

    The NaN row count comes back as a 0-d int32 device tensor: the launcher never waits for the GPU; the caller
    decides when to read it (one host sync). Eager; :func:`fsq_encode_from_tanh_op` is the same for torch.compile.
    """
    return _encode(_identity, tanh_z, half_l, offset, half_width, basis)


@torch.library.triton_op("aion_fast::fsq_encode_from_tanh_triton", mutates_args=())
def fsq_encode_from_tanh_op(
    tanh_z: torch.Tensor, half_l: torch.Tensor, offset: torch.Tensor, half_width: torch.Tensor, basis: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`fsq_encode_from_tanh_fwd` registered with ``torch.library.triton_op``: torch.compile sees the kernel."""
    return _encode(torch.library.wrap_triton, tanh_z, half_l, offset, half_width, basis)


def fsq_decode_fwd(indices: torch.Tensor, levels: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Launcher: (M,) int32 indices in range, (D,) int32 levels and basis -> (M, D) float32 codes."""
    return _decode(_identity, indices, levels, basis)


@torch.library.triton_op("aion_fast::fsq_decode_triton", mutates_args=())
def fsq_decode_op(indices: torch.Tensor, levels: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """:func:`fsq_decode_fwd` registered with ``torch.library.triton_op``."""
    return _decode(torch.library.wrap_triton, indices, levels, basis)
