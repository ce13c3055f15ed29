"""Triton kernel of the spectrum-to-latent-grid resampling (maths: :mod:`aion_fast.ops.spectrum_to_latent`).

One program per (row, block of grid points). On a GPU the merge pass of the C++ kernel would serialise a row, so
each grid point finds its segment with a branch-free binary search over the row instead,
``#{j : x_j < u}`` in ``ceil(log2(L + 1))`` steps, the same count ``torch.searchsorted`` returns. Only the two
samples around each grid point are loaded, cleaned and scaled. Float32 operations follow the reference's order
with IEEE division (``div_rn``) and FMA fusion disabled at launch; the inverse standard deviation comes in
precomputed by PyTorch (see :mod:`aion_fast.ops.spectrum_to_latent`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from aion_fast.kernels._math import asinh_f32

from aion_fast.settings import triton_interpret

__all__ = ["SPECTRUM_BLOCK", "spectrum_to_latent_fwd", "spectrum_to_latent_op"]

#: Grid points per program.
SPECTRUM_BLOCK = 1024

_FLOAT_MAX = 3.4028234663852886e38


@triton.jit
def _clean_scale(f, s, n, input_scaling, clip_flux, HAS_CLIP_FLUX: tl.constexpr):
    f = tl.where(f != f, 0.0, f)
    f = tl.where(f == float("inf"), 3.4028234663852886e38, f)
    f = tl.where(f == -float("inf"), -3.4028234663852886e38, f)
    if HAS_CLIP_FLUX:
        f = tl.where(f < -clip_flux, -clip_flux, f)
        f = tl.where(f > clip_flux, clip_flux, f)
    y0 = (tl.math.div_rn(f, n) - 1.0) * input_scaling
    y1 = tl.math.div_rn(s, n) * input_scaling
    return y0, y1


@triton.jit
def _spectrum_to_latent_fwd_kernel(
    flux_ptr,  # (B, L) float32
    istd_ptr,  # (B, L) float32, sqrt of the cleaned ivar
    wave_ptr,  # (B, L) float32, increasing per row
    scale_ptr,  # (B,) float32
    grid_ptr,  # (G,) float32
    out_ptr,  # (B, 2, G) float32
    L,
    G,
    input_scaling,
    clip_flux,
    SEARCH_STEPS: tl.constexpr,
    HAS_CLIP_FLUX: tl.constexpr,
    BLOCK: tl.constexpr,
    USE_LIBDEVICE: tl.constexpr,
):
    b = tl.program_id(0)
    k = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = k < G
    row = b.to(tl.int64) * L
    u = tl.load(grid_ptr + k, mask=inside, other=0.0)
    first = tl.load(wave_ptr + row)
    last = tl.load(wave_ptr + row + L - 1)
    n = tl.load(scale_ptr + b)
    # count = #{j : x_j < u}: lower bound over [0, L) with a fixed number of halvings
    lo = tl.zeros([BLOCK], dtype=tl.int32)
    hi = tl.zeros([BLOCK], dtype=tl.int32) + L
    for _ in tl.static_range(SEARCH_STEPS):
        mid = (lo + hi) // 2
        active = lo < hi
        xm = tl.load(wave_ptr + row + mid, mask=active & inside, other=0.0)
        go_right = active & (xm < u)
        lo = tl.where(go_right, mid + 1, lo)
        hi = tl.where(active & ~go_right, mid, hi)
    j = lo - 1
    j = tl.where(j < 0, 0, j)
    j = tl.where(j > L - 2, L - 2, j)
    xl = tl.load(wave_ptr + row + j, mask=inside, other=0.0)
    xr = tl.load(wave_ptr + row + j + 1, mask=inside, other=1.0)
    fl = tl.load(flux_ptr + row + j, mask=inside, other=0.0)
    fr = tl.load(flux_ptr + row + j + 1, mask=inside, other=0.0)
    sl = tl.load(istd_ptr + row + j, mask=inside, other=0.0)
    sr = tl.load(istd_ptr + row + j + 1, mask=inside, other=0.0)
    yl0, yl1 = _clean_scale(fl, sl, n, input_scaling, clip_flux, HAS_CLIP_FLUX)
    yr0, yr1 = _clean_scale(fr, sr, n, input_scaling, clip_flux, HAS_CLIP_FLUX)
    dx = xl - xr
    du = u - xl
    beyond = (u < first) | (u > last)
    v0 = yl0 + du * tl.math.div_rn(yl0 - yr0, dx)
    v1 = yl1 + du * tl.math.div_rn(yl1 - yr1, dx)
    v0 = asinh_f32(tl.where(beyond, 0.0, v0), USE_LIBDEVICE)
    v1 = asinh_f32(tl.where(beyond, 0.0, v1), USE_LIBDEVICE)
    out_row = out_ptr + b.to(tl.int64) * 2 * G
    tl.store(out_row + k, v0, mask=inside)
    tl.store(out_row + G + k, v1, mask=inside)


def _identity(kernel):
    return kernel


def _launch(wrap, flux, istd, wavelength, scale, grid, input_scaling, clip_flux):
    batch, length = flux.shape
    n_grid = grid.shape[0]
    flux, istd, wavelength, scale, grid = (t.contiguous() for t in (flux, istd, wavelength, scale, grid))
    out = torch.empty((batch, 2, n_grid), dtype=torch.float32, device=flux.device)
    wrap(_spectrum_to_latent_fwd_kernel)[(batch, triton.cdiv(n_grid, SPECTRUM_BLOCK))](
        flux, istd, wavelength, scale, grid, out, length, n_grid, input_scaling,
        0.0 if clip_flux is None else clip_flux, SEARCH_STEPS=int(length).bit_length(),
        HAS_CLIP_FLUX=clip_flux is not None, BLOCK=SPECTRUM_BLOCK, USE_LIBDEVICE=not triton_interpret(),
        enable_fp_fusion=False,
    )  # fmt: skip
    return out


def spectrum_to_latent_fwd(
    flux: torch.Tensor,
    istd: torch.Tensor,
    wavelength: torch.Tensor,
    scale: torch.Tensor,
    grid: torch.Tensor,
    input_scaling: float,
    clip_flux: float | None,
) -> torch.Tensor:
    """Launcher: (B, L) float32 flux, istd (sqrt of the cleaned, clipped ivar) and wavelength, (B,) scale and (G,)
    grid on one device -> (B, 2, G) float32 (arguments as in :func:`aion_fast.ops.spectrum_to_latent`). Eager;
    :func:`spectrum_to_latent_op` is the same for torch.compile."""
    return _launch(_identity, flux, istd, wavelength, scale, grid, input_scaling, clip_flux)


@torch.library.triton_op("aion_fast::spectrum_to_latent_triton", mutates_args=())
def spectrum_to_latent_op(
    flux: torch.Tensor,
    istd: torch.Tensor,
    wavelength: torch.Tensor,
    scale: torch.Tensor,
    grid: torch.Tensor,
    input_scaling: float,
    clip_flux: float | None,
) -> torch.Tensor:
    """:func:`spectrum_to_latent_fwd` registered with ``torch.library.triton_op``: torch.compile sees the kernel."""
    return _launch(torch.library.wrap_triton, flux, istd, wavelength, scale, grid, input_scaling, clip_flux)
