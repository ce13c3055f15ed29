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

from aion_fast.ops.spectrum_to_latent import interp_to_grid, interpolate, latent_wavelength, rows_without_overlap
from aion_fast.ops.spectrum_to_observed import interp_from_grid

__all__ = [
    "LatentSpectralGrid",
    "interp_from_grid",
    "interp_to_grid",
    "interpolate",
    "latent_wavelength",
    "rows_without_overlap",
]


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
