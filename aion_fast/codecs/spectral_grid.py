r"""The spectrum codec's latent wavelength grid, as checkpoint buffers (:class:`LatentSpectralGrid`).

Every spectrum, whatever its survey, is resampled onto one uniform grid before the network sees it:
:math:`\lambda_k = \lambda_\text{min} + k\,\Delta\lambda`, :math:`k < G` (AION-1: 3500 Å, 0.8 Å, G = 8704; paper
§4.2.1), in float32 like the reference's stored buffers. The grid and the piecewise-linear interpolation between it
and observed wavelengths are defined in :mod:`aion_fast.ops.spectrum_to_latent` (``latent_wavelength``,
``interpolate``, ``interp_to_grid``) and :mod:`aion_fast.ops.spectrum_to_observed` (``interp_from_grid``), where the
compiled ops use them as their references; they are re-exported here.
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
