"""Triton kernel of the image decode epilogue (maths: :mod:`aion_fast.ops.image_postprocess`).

One program per (image, band, block of pixels): reads channel ``ch_i`` of the (B, H*W, NB) projection (NB apart),
adds the bias, undoes the multiplier and range compression and writes the (B, C, H*W) output once. Divisions are
IEEE-rounded (``div_rn``) and FMA fusion is disabled at launch, as in the other kernels.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from aion_fast.kernels.utils import device_constant
from triton.language.extra import libdevice

from aion_fast.settings import triton_interpret

__all__ = ["POSTPROCESS_BLOCK", "image_postprocess_fwd", "image_postprocess_op"]

#: Pixels per program.
POSTPROCESS_BLOCK = 1024


@triton.jit
def _sinh_f32(x, USE_LIBDEVICE: tl.constexpr):
    r"""float32 :math:`\sinh(x)`.

    Without libdevice (``TRITON_INTERPRET=1``): the odd Taylor series to :math:`x^{11}` for :math:`a = |x| < 1/2`
    (truncation < 1e-11 relative), :math:`(e^a - e^{-a})/2` up to 20 and :math:`(e^{a/2}/2)\,e^{a/2}` beyond (no
    premature overflow), with the sign of ``x``: a few float32 ulps.
    """
    if USE_LIBDEVICE:
        return libdevice.sinh(x)
    else:
        a = tl.abs(x)
        a2 = a * a
        series = a * (1.0 + a2 * (1.0 / 6.0 + a2 * (1.0 / 120.0 + a2 * (1.0 / 5040.0 + a2 * (1.0 / 362880.0)))))
        e = tl.exp(a)
        mid = (e - 1.0 / e) * 0.5
        half = tl.exp(a * 0.5)
        big = (half * 0.5) * half
        r = tl.where(a < 0.5, series, tl.where(a < 20.0, mid, big))
        r = tl.where(x < 0, -r, r)
        return tl.where(x != x, x, r)


@triton.jit
def _image_postprocess_fwd_kernel(
    proj_ptr,  # (B, HW, NB) float32, contiguous: the projection before its bias
    bias_ptr,  # (NB,) float32
    channel_ptr,  # (C,) int32
    out_ptr,  # (B, C, HW) float32
    C,
    HW,
    alpha,
    kappa,
    zeropoint_scale,
    NB: tl.constexpr,
    BLOCK: tl.constexpr,
    USE_LIBDEVICE: tl.constexpr,
):
    plane = tl.program_id(0)  # b * C + i
    b = plane // C
    i = plane % C
    ch = tl.load(channel_ptr + i)
    shift = tl.load(bias_ptr + ch)
    p = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = p < HW
    v = tl.load(proj_ptr + (b.to(tl.int64) * HW + p) * NB + ch, mask=inside, other=0.0)
    v = v + shift
    v = tl.math.div_rn(v, kappa)
    v = tl.math.div_rn(v, alpha)
    v = _sinh_f32(v, USE_LIBDEVICE)
    v = v * alpha
    v = v * zeropoint_scale
    tl.store(out_ptr + plane.to(tl.int64) * HW + p, v, mask=inside)


def _identity(kernel):
    return kernel


def _launch(wrap, projected, bias, channels_t, zeropoint_scale, range_compression_factor, mult_factor):
    batch, height, width, num_bands = projected.shape
    projected, bias = projected.contiguous(), bias.contiguous()
    n_channels = channels_t.shape[0]
    out = torch.empty((batch, n_channels, height, width), dtype=torch.float32, device=projected.device)
    pixels = height * width
    wrap(_image_postprocess_fwd_kernel)[(batch * n_channels, triton.cdiv(pixels, POSTPROCESS_BLOCK))](
        projected, bias, channels_t, out, n_channels, pixels, range_compression_factor, mult_factor, zeropoint_scale,
        NB=num_bands, BLOCK=POSTPROCESS_BLOCK, USE_LIBDEVICE=not triton_interpret(), enable_fp_fusion=False,
    )  # fmt: skip
    return out


def image_postprocess_fwd(
    projected: torch.Tensor,
    bias: torch.Tensor,
    channels: list[int],
    zeropoint_scale: float,
    range_compression_factor: float,
    mult_factor: float,
) -> torch.Tensor:
    """Launcher: (B, H, W, NB) float32 projection (no bias) -> (B, C, H, W) float32 (arguments as in the op).
    Eager; :func:`image_postprocess_op` is the same for torch.compile."""
    channels_t = device_constant(tuple(channels), torch.int32, projected.device)
    return _launch(_identity, projected, bias, channels_t, zeropoint_scale, range_compression_factor, mult_factor)


@torch.library.triton_op("aion_fast::image_postprocess_triton", mutates_args=())
def image_postprocess_op(
    projected: torch.Tensor,
    bias: torch.Tensor,
    channels: list[int],
    zeropoint_scale: float,
    range_compression_factor: float,
    mult_factor: float,
) -> torch.Tensor:
    """:func:`image_postprocess_fwd` registered with ``torch.library.triton_op`` (channels made in the graph)."""
    channels_t = torch.tensor(channels, dtype=torch.int32, device=projected.device)
    return _launch(torch.library.wrap_triton, projected, bias, channels_t, zeropoint_scale, range_compression_factor,
                   mult_factor)  # fmt: skip
