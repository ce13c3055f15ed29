r"""The spectrum codec's latent wavelength grid and the linear interpolation between it and observed grids.

Every spectrum, whatever its survey, is resampled onto one uniform grid before the network sees it:

.. math::

    \lambda_k = \lambda_\text{min} + k\,\Delta\lambda, \qquad k = 0, \dots, G - 1

(AION-1: :math:`\lambda_\text{min} = 3500` Å, :math:`\Delta\lambda = 0.8` Å, :math:`G = 8704`, i.e. up to
10462.4 Å; paper §4.2.1). The grid values are float32, computed as ``float32(k) * float32(Δλ) + float32(λ_min)``
like the reference, so grids built here equal the ``_wavelength`` buffers stored in its checkpoints bit for bit.

Resampling is piecewise-linear interpolation of samples :math:`(x_j, y_j)`, :math:`x` strictly increasing, at new
abscissae :math:`u`:

.. math::

    j(u) = \operatorname{clip}\bigl(\#\{j : x_j < u\} - 1,\ 0,\ n - 2\bigr), \qquad
    y(u) = y_j + (u - x_j)\,\frac{y_j - y_{j+1}}{x_j - x_{j+1}} \quad (j = j(u)),

and :math:`y(u) = 0` for :math:`u` outside :math:`[x_0, x_{n-1}]`. The float32 operations are evaluated in exactly
this order (difference quotient first, then one multiply and one add), which is the order of the reference
implementation: codec tokens depend on these values bit for bit. The slopes are formed only at the segments that are
used, and one search serves every channel of a batch.

The segment search of these PyTorch functions is ``torch.searchsorted`` in both directions; for the encoder it
places the ``G`` grid points in each row's sorted wavelengths, O(G log L) per row, batched over rows. The compiled
ops find the same segments faster: :func:`aion_fast.ops.spectrum_to_latent` by one merge pass per row (encoding
direction) and :func:`aion_fast.ops.spectrum_to_observed` from the uniform grid in O(1) per point, a closed-form
index ``floor((u - λ_min) / Δλ)`` corrected against the stored float32 grid values (which are not exactly uniform),
so both reproduce the search's index exactly, at knots included.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "LatentSpectralGrid",
    "interp_from_grid",
    "interp_to_grid",
    "interpolate",
    "latent_wavelength",
    "rows_without_overlap",
]


def latent_wavelength(lambda_min: float, resolution: float, num_pixels: int) -> Tensor:
    """The latent grid :math:`\\lambda_k = \\lambda_\\text{min} + k\\,\\Delta\\lambda` in Angstrom.

    Args:
        lambda_min: first grid point (Å).
        resolution: grid step (Å per pixel).
        num_pixels: number of grid points ``G``.

    Returns:
        (G,) float32 tensor on the CPU.
    """
    return torch.arange(num_pixels, dtype=torch.float32) * float(resolution) + float(lambda_min)


def interpolate(x: Tensor, y: Tensor, u: Tensor, outside: float = 0.0) -> Tensor:
    """Piecewise-linear interpolation of several channels per row, zero outside each row's sampled range.

    Args:
        x: (B, n) or (n,) float32 abscissae, strictly increasing along the last axis (a 1-D ``x`` is shared by all
            rows), n >= 2.
        y: (B, K, n) float32 ordinates, K channels sampled at ``x``.
        u: (B, m) or (m,) float32 abscissae to evaluate at, sorted along the last axis.
        outside: value where ``u`` lies outside ``[x_0, x_{n-1}]`` of its row.

    Returns:
        (B, K, m) float32 interpolated values (see the module docstring for the exact formula).
    """
    batch, channels, n = y.shape
    x_rows = x.expand(batch, n) if x.ndim == 1 else x
    u_rows = u.expand(batch, u.shape[-1]) if u.ndim == 1 else u
    m = u_rows.shape[-1]
    index = torch.searchsorted(x.contiguous(), u_rows.contiguous())  # a 1-D x is searched once for every row
    left = (index - 1).clamp_(0, n - 2)
    right = left + 1
    x_left = x_rows.gather(1, left)
    x_right = x_rows.gather(1, right)
    left_k = left.unsqueeze(1).expand(batch, channels, m)
    y_left = y.gather(2, left_k)
    y_right = y.gather(2, left_k + 1)
    slope = (y_left - y_right) / (x_left - x_right).unsqueeze(1)
    values = y_left + (u_rows - x_left).unsqueeze(1) * slope
    beyond = (u_rows < x_rows[:, :1]) | (u_rows > x_rows[:, -1:])
    return values.masked_fill_(beyond.unsqueeze(1), outside)


def interp_to_grid(values: Tensor, wavelength: Tensor, grid: Tensor) -> Tensor:
    """Resamples observed spectra onto the latent grid (zero where the grid lies outside a spectrum's range).

    Args:
        values: (B, K, L) float32 channels sampled at ``wavelength``.
        wavelength: (B, L) float32 observed wavelengths, strictly increasing along each row.
        grid: (G,) float32 latent grid.

    Returns:
        (B, K, G) float32.
    """
    return interpolate(wavelength, values, grid)


def interp_from_grid(values: Tensor, grid: Tensor, wavelength: Tensor) -> Tensor:
    """Resamples latent-grid spectra onto observed wavelengths (zero outside the latent grid).

    Args:
        values: (B, K, G) float32 channels on the latent grid.
        grid: (G,) float32 latent grid.
        wavelength: (B, M) float32 requested wavelengths, sorted along each row.

    Returns:
        (B, K, M) float32.
    """
    return interpolate(grid, values, wavelength)


def rows_without_overlap(wavelength: Tensor, grid: Tensor) -> Tensor:
    """Rows whose wavelength range ``[w_0, w_{L-1}]`` contains no latent grid point.

    Args:
        wavelength: (B, L) observed wavelengths, increasing along each row.
        grid: (G,) latent grid, increasing.

    Returns:
        (B,) bool, True for rows that would resample to all zeros.
    """
    first = torch.searchsorted(grid, wavelength[:, :1].to(grid.dtype).contiguous(), right=False)
    after_last = torch.searchsorted(grid, wavelength[:, -1:].to(grid.dtype).contiguous(), right=True)
    return (after_last <= first).squeeze(1)


class LatentSpectralGrid(nn.Module):
    """Holds the latent grid as buffers (``lambda_min``, ``resolution``, ``length``, ``_wavelength``).

    The buffer names, shapes and dtypes are those of the reference checkpoints: two float32 scalars, an int64 scalar
    and a (1, G) float32 row.

    Args:
        lambda_min: first grid point (Å).
        resolution: grid step (Å per pixel).
        num_pixels: number of grid points ``G``.
    """

    def __init__(self, lambda_min: float, resolution: float, num_pixels: int):
        super().__init__()
        self.register_buffer("lambda_min", torch.tensor(float(lambda_min)))
        self.register_buffer("resolution", torch.tensor(float(resolution)))
        self.register_buffer("length", torch.tensor(int(num_pixels)))
        self.register_buffer("_wavelength", latent_wavelength(lambda_min, resolution, num_pixels)[None])

    @property
    def wavelength(self) -> Tensor:
        """(G,) float32 grid values."""
        return self._wavelength[0]

    def to_latent(self, values: Tensor, wavelength: Tensor) -> Tensor:
        """(B, K, L) observed channels at (B, L) wavelengths -> (B, K, G) on the grid."""
        return interp_to_grid(values, wavelength, self.wavelength)

    def to_observed(self, values: Tensor, wavelength: Tensor) -> Tensor:
        """(B, K, G) grid channels -> (B, K, M) at (B, M) wavelengths."""
        return interp_from_grid(values, self.wavelength, wavelength)
