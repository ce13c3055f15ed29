r"""Stride-1 zero-padded 2-D convolution by Winograd's minimal filtering F(m x m, r x r) (Lavin & Gray 2016).

For an n x n input tile :math:`d` (n = m + r - 1, tiles every m pixels) and an r x r filter :math:`g`:

.. math::

    Y = A^\top \Bigl[ \sum_{c} (G g_{o,c} G^\top) \odot (B^\top d_c B) \Bigr] A \qquad (m \times m \text{ outputs})

so the sum over input channels becomes n^2 matrix products (tiles x C_in) @ (C_in x C_out), run by ``torch.bmm``
(MKL's sgemm): n^2 / m^2 multiplications per output instead of r^2 (F(4x4, 3x3): 2.25 vs 9; F(2x2, 7x7): 16 vs
49). The transforms (:func:`winograd_matrices`) are built exactly in rationals from interpolation points; float32
rounding grows with n, so only tiles up to n = 8 are offered. Used by the codec networks' fast CPU path
(:mod:`aion_fast.codecs.nn.fast`), never by the exact path.

Backends: ``cpp`` (tile transforms in aion_fast._C, channels-last, blocked over tiles so the transformed tiles stay
in cache; products by ``torch.bmm``); ``torch`` (:func:`torch_winograd_conv2d`, the direct convolution: oracle and
fallback).
"""

from __future__ import annotations

import functools
from fractions import Fraction

import torch
import torch.nn.functional as F

from aion_fast import dispatch
from aion_fast.dispatch import Backend

__all__ = [
    "DEFAULT_TILE",
    "torch_winograd_conv2d",
    "winograd_conv2d",
    "winograd_matrices",
    "winograd_weight",
]

#: Output tile m per filter size r: F(4x4, 3x3) and F(2x2, 7x7).
DEFAULT_TILE = {3: 4, 7: 2}

#: Finite interpolation points per (m, r) (the last point is infinity). For F(4, 3), {0, -1, 1, 1/2, -2} rounds
#: about half as much in float32 as Lavin's {0, +-1, +-2} (Barabasz et al. 2020, arXiv:1803.10986).
_POINTS = {
    (2, 3): (0, 1, -1),
    (4, 3): (0, -1, 1, Fraction(1, 2), -2),
    (2, 7): (0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2)),
}

#: Tiles per block: enough rows per product to amortise streaming the transformed weight once per block, few enough
#: that a block's transformed tiles and products stay in the last-level cache (sweep: bench/RESULTS.md).
_BLOCK_TILES = 256


# ---- Transforms --------------------------------------------------------------------------------------------------


@functools.cache
def _exact_matrices(m: int, r: int) -> tuple[tuple, tuple, tuple]:
    """(A^T (m, n), G (n, r), B^T (n, n)) as Fractions, checked to compute the correlation exactly."""
    if (m, r) not in _POINTS:
        raise ValueError(f"winograd: no interpolation points for F({m}, {r}); supported: {sorted(_POINTS)}")
    n = m + r - 1
    a = [Fraction(p) for p in _POINTS[(m, r)]]
    f = [_prod(a[j] - a[q] for q in range(n - 1) if q != j) for j in range(n - 1)]
    at = [[a[j] ** i for j in range(n - 1)] + [Fraction(int(i == m - 1))] for i in range(m)]
    g = [[a[j] ** k / f[j] for k in range(r)] for j in range(n - 1)] + [[Fraction(int(k == r - 1)) for k in range(r)]]
    # B^T solves sum_j AT[i][j] G[j][k] BT[j][l] = [l == i + k] (correlation); solve in float64, snap to small
    # rationals and verify exactly.
    rows, rhs = [], []
    for i in range(m):
        for k in range(r):
            for ell in range(n):
                coef = torch.zeros(n, n, dtype=torch.float64)
                for j in range(n):
                    coef[j, ell] = float(at[i][j] * g[j][k])
                rows.append(coef.flatten())
                rhs.append(float(ell == i + k))
    solution = torch.linalg.lstsq(torch.stack(rows), torch.tensor(rhs, dtype=torch.float64)[:, None]).solution
    bt = [[Fraction(v).limit_denominator(256) for v in row] for row in solution.view(n, n).tolist()]
    for i in range(m):
        for k in range(r):
            for ell in range(n):
                if sum(at[i][j] * g[j][k] * bt[j][ell] for j in range(n)) != int(ell == i + k):
                    raise AssertionError(f"winograd: F({m}, {r}) transforms are not exact")  # a bug, not bad input
    return tuple(map(tuple, at)), tuple(map(tuple, g)), tuple(map(tuple, bt))


def _prod(values) -> Fraction:
    out = Fraction(1)
    for v in values:
        out *= v
    return out


@functools.cache
def winograd_matrices(m: int, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float64 (A^T (m, n), G (n, r), B^T (n, n)) of F(m x m, r x r), n = m + r - 1 (exact rationals)."""
    return tuple(torch.tensor([[float(v) for v in row] for row in mat], dtype=torch.float64)
                 for mat in _exact_matrices(m, r))  # fmt: skip


def winograd_weight(weight: torch.Tensor, m: int) -> torch.Tensor:
    """(C_out, C_in, r, r) filters -> (n^2, C_in, C_out) float32 :math:`G g G^\\top`, computed in float64."""
    r = weight.shape[-1]
    _, g, _ = winograd_matrices(m, r)
    u = torch.einsum("ik,ockl,jl->ijco", g, weight.detach().to(torch.float64), g)
    n = g.shape[0]
    return u.reshape(n * n, weight.shape[1], weight.shape[0]).to(torch.float32).contiguous()


# ---- PyTorch reference (oracle and fallback) -------------------------------------------------------------------------


def torch_winograd_conv2d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, m: int | None = None,
    transformed: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """Reference: the direct float32 convolution with ``r // 2`` zero padding, (B, C_in, H, W) -> (B, C_out, H, W)."""
    return F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2)


# ---- C++ path --------------------------------------------------------------------------------------------------------


def _winograd_conv2d_cpp(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, m: int, transformed: torch.Tensor | None
) -> torch.Tensor:
    ext = dispatch.load_extension()
    r = weight.shape[-1]
    at, _, bt = winograd_matrices(m, r)
    n = m + r - 1
    u = winograd_weight(weight, m) if transformed is None else transformed
    batch, c_in, height, width = x.shape
    c_out = weight.shape[0]
    rows = x.permute(0, 2, 3, 1).contiguous()  # (B, H, W, C_in): free when x is channels-last
    out = torch.empty((batch, height, width, c_out), dtype=torch.float32)
    tiles_h, tiles_w = -(-height // m), -(-width // m)
    tiles = batch * tiles_h * tiles_w
    if tiles == 0:
        return out.permute(0, 3, 1, 2)
    block = min(tiles, _BLOCK_TILES)
    v_buf = torch.empty(n * n * block * c_in, dtype=torch.float32)
    m_buf = torch.empty(n * n * block * c_out, dtype=torch.float32)
    bt32, at32 = bt.to(torch.float32).numpy(), at.to(torch.float32).numpy()
    bias_np = None if bias is None else bias.detach().to(torch.float32).contiguous().numpy()
    x_np, out_np = rows.numpy(), out.numpy()
    for begin in range(0, tiles, block):
        count = min(block, tiles - begin)
        v = v_buf[: n * n * count * c_in].view(count, n * n, c_in)
        mt = m_buf[: n * n * count * c_out].view(n * n, count, c_out)
        ext.winograd_input_transform(x_np, bt32, m, r // 2, tiles_h, tiles_w, begin, v.numpy())
        torch.bmm(v.transpose(0, 1), u, out=mt)
        ext.winograd_output_transform(mt.numpy(), at32, bias_np, tiles_h, tiles_w, begin, out_np)
    return out.permute(0, 3, 1, 2)


# ---- Backends and dispatch -------------------------------------------------------------------------------------------


def _needs_grad(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))


def _cpp_reasons(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *_) -> list[str]:
    reasons = dispatch.cpp_reasons(x)
    ext = dispatch.load_extension()
    if ext is not None and not hasattr(ext, "winograd_input_transform"):
        reasons.append("aion_fast._C was built without winograd_input_transform (stale build: rebuild it)")
    if weight.dtype != torch.float32:
        reasons.append(f"weight dtype {weight.dtype}; the C++ path takes float32")
    if _needs_grad(x, weight, bias):
        reasons.append("autograd is on; the C++ transforms have no backward")
    return reasons


_BACKENDS = (
    Backend("cpp", _cpp_reasons, _winograd_conv2d_cpp, devices=("cpu",), dtypes=(torch.float32,)),
    Backend("torch", dispatch.no_reasons, torch_winograd_conv2d),
)


def winograd_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    m: int | None = None,
    transformed: torch.Tensor | None = None,
) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=r // 2)`` by Winograd F(m x m, r x r) (module docstring).

    Args:
        x: (B, C_in, H, W) float32; channels-last memory avoids one copy. Never modified.
        weight: (C_out, C_in, r, r) with r in :data:`DEFAULT_TILE` (odd, square).
        bias: (C_out,) or None.
        m: output tile (default :data:`DEFAULT_TILE` [r]).
        transformed: :func:`winograd_weight` (weight, m), (n^2, C_in, C_out), to skip transforming per call.

    Returns:
        (B, C_out, H, W) float32 in channels-last memory (cpp) or the direct convolution's layout (torch).
        Differs from the direct convolution by float32 rounding (test_winograd_conv2d states the tolerance).

    Raises:
        ValueError: shapes disagree or the filter size has no transform.
    """
    if x.ndim != 4 or weight.ndim != 4 or weight.shape[1] != x.shape[1] or weight.shape[2] != weight.shape[3]:
        raise ValueError(
            f"winograd_conv2d: expected x (B, C_in, H, W) and weight (C_out, C_in, r, r), got x {tuple(x.shape)} and "
            f"weight {tuple(weight.shape)}"
        )
    r = weight.shape[-1]
    m = DEFAULT_TILE.get(r) if m is None else m
    if m is None or (m, r) not in _POINTS:
        raise ValueError(
            f"winograd_conv2d: no Winograd transform for a {r}x{r} filter with output tile {m}; supported (m, r): "
            f"{sorted(_POINTS)}. Use torch.nn.functional.conv2d for other filters."
        )
    n = m + r - 1
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"winograd_conv2d: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    if transformed is not None and transformed.shape != (n * n, weight.shape[1], weight.shape[0]):
        raise ValueError(
            f"winograd_conv2d: transformed must be winograd_weight(weight, {m}) of shape "
            f"({n * n}, {weight.shape[1]}, {weight.shape[0]}), got {tuple(transformed.shape)}"
        )
    args = (x, weight, bias, m, transformed)
    key = (_needs_grad(x, weight, bias), weight.dtype)
    with dispatch.no_autocast(x.device):
        return dispatch.select("winograd_conv2d", _BACKENDS, *args, key=key).run(*args)
