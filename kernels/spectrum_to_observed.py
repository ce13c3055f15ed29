"""Triton kernel of the spectrum decode epilogue (maths: :mod:`aion_fast.ops.spectrum_to_observed`).

One program per (row, block of requested wavelengths). Each point finds its grid segment with a branch-free binary
search over the latent grid, ``#{k : u_k < w}`` in ``ceil(log2(G + 1))`` steps (the count ``torch.searchsorted``
returns), interpolates both channels, scales the flux and decides the mask without a sigmoid; logits in the
undecided band (0, 1e-6] are flagged for the caller. Float32 operations follow the reference's order with IEEE
division (``div_rn``) and FMA fusion disabled at launch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["OBSERVED_BLOCK", "spectrum_to_observed_fwd", "spectrum_to_observed_op"]

#: Requested wavelengths per program.
OBSERVED_BLOCK = 1024


@triton.jit
def _spectrum_to_observed_fwd_kernel(
    values_ptr,  # (B, K, G) float32
    grid_ptr,  # (G,) float32, increasing
    wave_ptr,  # (B, M) float32
    scale_ptr,  # (B,) float32 (unused without HAS_SCALE)
    flux_ptr,  # (B, M) float32
    mask_ptr,  # (B, M) int8: 0/1, 2 = undecided
    G,
    M,
    K: tl.constexpr,
    ON_GRID: tl.constexpr,
    SEARCH_STEPS: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    b = tl.program_id(0)
    m = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = m < M
    row = values_ptr + b.to(tl.int64) * K * G
    if ON_GRID:  # no wavelengths: the values on the grid themselves (M = G)
        v0 = tl.load(row + m, mask=inside, other=0.0)
        if K == 2:
            v1 = tl.load(row + G + m, mask=inside, other=0.0)
    else:
        u = tl.load(wave_ptr + b.to(tl.int64) * M + m, mask=inside, other=0.0)
        first = tl.load(grid_ptr)
        last = tl.load(grid_ptr + G - 1)
        # count = #{k : u_k < w}: lower bound over [0, G) with a fixed number of halvings
        lo = tl.zeros([BLOCK], dtype=tl.int32)
        hi = tl.zeros([BLOCK], dtype=tl.int32) + G
        for _ in tl.static_range(SEARCH_STEPS):
            mid = (lo + hi) // 2
            active = lo < hi
            xm = tl.load(grid_ptr + mid, mask=active & inside, other=0.0)
            go_right = active & (xm < u)
            lo = tl.where(go_right, mid + 1, lo)
            hi = tl.where(active & ~go_right, mid, hi)
        j = lo - 1
        j = tl.where(j < 0, 0, j)
        j = tl.where(j > G - 2, G - 2, j)
        xl = tl.load(grid_ptr + j, mask=inside, other=0.0)
        xr = tl.load(grid_ptr + j + 1, mask=inside, other=1.0)
        dx = xl - xr
        du = u - xl
        beyond = (u < first) | (u > last)
        yl = tl.load(row + j, mask=inside, other=0.0)
        yr = tl.load(row + j + 1, mask=inside, other=0.0)
        v0 = yl + du * tl.math.div_rn(yl - yr, dx)
        v0 = tl.where(beyond, 0.0, v0)
        v0 = tl.where(u != u, u, v0)
        if K == 2:
            yl = tl.load(row + G + j, mask=inside, other=0.0)
            yr = tl.load(row + G + j + 1, mask=inside, other=0.0)
            v1 = yl + du * tl.math.div_rn(yl - yr, dx)
            v1 = tl.where(beyond, 0.0, v1)
            v1 = tl.where(u != u, u, v1)
    if HAS_SCALE:
        n = tl.load(scale_ptr + b)
        v0 = v0 + 1.0
        v0 = v0 * n
    tl.store(flux_ptr + b.to(tl.int64) * M + m, v0, mask=inside)
    if K == 2:
        flag = tl.where(v1 != v1, 1, tl.where(v1 <= 0.0, 0, tl.where(v1 > 1e-6, 1, 2)))
    else:
        flag = tl.zeros([BLOCK], dtype=tl.int32)
    tl.store(mask_ptr + b.to(tl.int64) * M + m, flag.to(tl.int8), mask=inside)


def _identity(kernel):
    return kernel


def _launch(wrap, values, grid, wavelength, scale):
    batch, channels, n_grid = values.shape
    values, grid = values.contiguous(), grid.contiguous()
    on_grid = wavelength is None
    wavelength = grid if on_grid else wavelength.contiguous()
    points = n_grid if on_grid else wavelength.shape[1]
    flux = torch.empty((batch, points), dtype=torch.float32, device=values.device)
    flags = torch.empty((batch, points), dtype=torch.int8, device=values.device)
    wrap(_spectrum_to_observed_fwd_kernel)[(batch, max(1, triton.cdiv(points, OBSERVED_BLOCK)))](
        values, grid, wavelength, grid if scale is None else scale.contiguous(), flux, flags, n_grid, points,
        K=channels, ON_GRID=on_grid, SEARCH_STEPS=int(n_grid).bit_length(), HAS_SCALE=scale is not None,
        BLOCK=OBSERVED_BLOCK, enable_fp_fusion=False,
    )  # fmt: skip
    return flux, flags == 1, flags == 2


def spectrum_to_observed_fwd(
    values: torch.Tensor, grid: torch.Tensor, wavelength: torch.Tensor | None, scale: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launcher: (B, K, G) float32 values on the (G,) grid -> flux (B, M), mask (B, M) bool and (B, M) bool flags
    of undecided mask values (arguments as in :func:`aion_fast.ops.spectrum_to_observed`). Without ``scale`` the
    kernel's unread scale pointer is the grid (read-only). Eager; :func:`spectrum_to_observed_op` is the same for
    torch.compile."""
    return _launch(_identity, values, grid, wavelength, scale)


@torch.library.triton_op("aion_fast::spectrum_to_observed_triton", mutates_args=())
def spectrum_to_observed_op(
    values: torch.Tensor, grid: torch.Tensor, wavelength: torch.Tensor | None, scale: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`spectrum_to_observed_fwd` registered with ``torch.library.triton_op``: torch.compile sees the kernel."""
    return _launch(torch.library.wrap_triton, values, grid, wavelength, scale)
