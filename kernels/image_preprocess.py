"""Triton kernel of the fused image preprocessing (maths: :mod:`aion_fast.ops.image_preprocess`).

One program per (image, band): the S x S window of that band is read once (rows of ``W`` apart) and written once
into the channels-last (B, S, S, NB) output at the band's channel; the output is zero-initialised for the absent
channels. Each float32 step is one rounded operation in the reference's order (clip, ``/ s``, ``/ alpha``,
arcsinh, ``* alpha``, ``* kappa``), divisions IEEE-rounded (``div_rn``) and FMA fusion disabled at launch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from aion_fast.kernels._math import asinh_f32
from aion_fast.kernels.utils import device_constant, next_power_of_2

from aion_fast.settings import triton_interpret

__all__ = ["image_preprocess_fwd", "image_preprocess_op"]


@triton.jit
def _image_preprocess_fwd_kernel(
    flux_ptr,  # (B, C, H, W) float32, contiguous
    channel_ptr,  # (C,) int32
    clamp_ptr,  # (C,) float32
    out_ptr,  # (B, S, S, NB) float32, zero-initialised
    nonfinite_ptr,  # (B * C,) int32
    C,
    H,
    W,
    top,
    left,
    zeropoint_scale,
    alpha,
    kappa,
    S: tl.constexpr,
    NB: tl.constexpr,
    BLOCK: tl.constexpr,
    USE_LIBDEVICE: tl.constexpr,
):
    pid = tl.program_id(0)  # b * C + i
    b = pid // C
    i = pid % C
    ch = tl.load(channel_ptr + i)
    hi = tl.load(clamp_ptr + i)
    offs = tl.arange(0, BLOCK)
    inside = offs < S * S
    y = offs // S
    x = offs % S
    src = flux_ptr + pid.to(tl.int64) * H * W + (top + y) * W + left + x
    v = tl.load(src, mask=inside, other=0.0)
    bad = tl.sum(((v != v) | (tl.abs(v) == float("inf"))).to(tl.int32), axis=0)
    tl.store(nonfinite_ptr + pid, bad)
    v = tl.where(v < -hi, -hi, v)
    v = tl.where(v > hi, hi, v)
    v = tl.math.div_rn(v, zeropoint_scale)
    v = tl.math.div_rn(v, alpha)
    v = asinh_f32(v, USE_LIBDEVICE)
    v = v * alpha
    v = v * kappa
    dst = out_ptr + b.to(tl.int64) * S * S * NB + offs * NB + ch
    tl.store(dst, v, mask=inside)


def _identity(kernel):
    return kernel


def _launch(
    wrap, flux, channels_t, clamp_t, zeropoint_scale, range_compression_factor, mult_factor, crop_size, num_bands
):
    batch, n_bands_in, height, width = flux.shape
    top, left = (height - crop_size) // 2, (width - crop_size) // 2
    if not flux.is_contiguous():
        flux = flux[..., top : top + crop_size, left : left + crop_size].contiguous()
        top = left = 0
        height = width = crop_size
    out = torch.zeros((batch, crop_size, crop_size, num_bands), dtype=torch.float32, device=flux.device)
    nonfinite = torch.empty(batch * n_bands_in, dtype=torch.int32, device=flux.device)
    wrap(_image_preprocess_fwd_kernel)[(batch * n_bands_in,)](
        flux, channels_t, clamp_t, out, nonfinite, n_bands_in, height, width, top, left, zeropoint_scale,
        range_compression_factor, mult_factor, S=crop_size, NB=num_bands, BLOCK=next_power_of_2(crop_size * crop_size),
        USE_LIBDEVICE=not triton_interpret(), enable_fp_fusion=False,
    )  # fmt: skip
    return out, nonfinite


def image_preprocess_fwd(
    flux: torch.Tensor,
    channels: list[int],
    clamp_max: list[float],
    zeropoint_scale: float,
    range_compression_factor: float,
    mult_factor: float,
    crop_size: int,
    num_bands: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launcher: (B, C, H, W) float32 images -> ((B, S, S, num_bands) float32, (B * C,) int32 count of non-finite
    window values per (image, band)) (arguments as in the op). Never waits for the GPU: the caller checks the counts.
    Eager; :func:`image_preprocess_op` is the same for torch.compile.
    """
    device = flux.device
    channels_t = device_constant(tuple(channels), torch.int32, device)
    clamp_t = device_constant(tuple(clamp_max), torch.float32, device)
    return _launch(_identity, flux, channels_t, clamp_t, zeropoint_scale, range_compression_factor, mult_factor,
                   crop_size, num_bands)  # fmt: skip


@torch.library.triton_op("aion_fast::image_preprocess_triton", mutates_args=())
def image_preprocess_op(
    flux: torch.Tensor,
    channels: list[int],
    clamp_max: list[float],
    zeropoint_scale: float,
    range_compression_factor: float,
    mult_factor: float,
    crop_size: int,
    num_bands: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`image_preprocess_fwd` registered with ``torch.library.triton_op``: torch.compile sees the kernel.

    The per-band constants are made in the traced graph (no process-wide cache of device tensors under tracing).
    """
    channels_t = torch.tensor(channels, dtype=torch.int32, device=flux.device)
    clamp_t = torch.tensor(clamp_max, dtype=torch.float32, device=flux.device)
    return _launch(torch.library.wrap_triton, flux, channels_t, clamp_t, zeropoint_scale, range_compression_factor,
                   mult_factor, crop_size, num_bands)  # fmt: skip
