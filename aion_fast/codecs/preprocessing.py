r"""Image preprocessing of the image codec, as pure functions that never modify their inputs (AION-1 paper §4.1.1).

For an image with bands :math:`b_1..b_C` of one survey, the codec's input is, per pixel of the central crop,

.. math::

    x' = \min(\max(x, -m_b), m_b) / s, \qquad
    \tilde x = \kappa\, \alpha \operatorname{arcsinh}\!\left(\frac{x'}{\alpha}\right),

with the per-band clip :math:`m_b` (``BAND_CLAMP_MAX``), the zero-point rescale :math:`s = 10^{(27 - 22.5)/2.5}` for
HSC (zero-point 27 mag brought to the Legacy Survey's 22.5 mag) and :math:`s = 1` for the Legacy Survey, the range
compression factor :math:`\alpha` (0.01) and the multiplier :math:`\kappa` (10). Each step is evaluated as one
float32 operation in this order (divide by :math:`s`, divide by :math:`\alpha`, arcsinh, multiply by
:math:`\alpha`, multiply by :math:`\kappa`), the order that reproduces the reference's tokens bit for bit.
"""

from __future__ import annotations

import torch
from torch import Tensor

from aion_fast.modalities import BAND_CLAMP_MAX, BAND_TO_INDEX

__all__ = [
    "CROP_SIZE",
    "HSC_ZEROPOINT",
    "REFERENCE_ZEROPOINT",
    "band_indices",
    "center_crop",
    "clamp_bounds",
    "inverse_range_compress_",
    "preprocess_flux",
    "range_compress_",
    "require_finite",
    "survey_bands",
    "zeropoint_scale",
]

#: Side of the square central cut-out the image and scalar-field codecs see, in pixels.
CROP_SIZE = 96
#: Photometric zero-point of HSC images (mag) and of the Legacy Survey, to which HSC fluxes are rescaled.
HSC_ZEROPOINT = 27.0
REFERENCE_ZEROPOINT = 22.5


def survey_bands(survey: str) -> list[str]:
    """Bands of one survey in the codec's channel order, e.g. ``"DES"`` -> ``["DES-G", "DES-R", "DES-I", "DES-Z"]``."""
    bands = [band for band in BAND_TO_INDEX if band.split("-")[0] == survey]
    if not bands:
        surveys = sorted({band.split("-")[0] for band in BAND_TO_INDEX})
        raise ValueError(f"unknown survey {survey!r}; the image codec knows {surveys}.")
    return bands


def band_indices(bands: list[str]) -> list[int]:
    """Channel of each band in the 9-channel multi-survey layout (``BAND_TO_INDEX``)."""
    return [BAND_TO_INDEX[band] for band in bands]


def zeropoint_scale(survey: str) -> float:
    r"""Flux divisor bringing a survey to the Legacy Survey zero-point: :math:`10^{(27 - 22.5)/2.5}` for HSC, else 1."""
    return 10.0 ** ((HSC_ZEROPOINT - REFERENCE_ZEROPOINT) / 2.5) if survey == "HSC" else 1.0


def clamp_bounds(bands: list[str], device: torch.device | str | None = None) -> Tensor:
    """Per-band clip bounds ``BAND_CLAMP_MAX`` as float32 of shape (C, 1, 1), broadcastable over (B, C, H, W)."""
    return torch.tensor([BAND_CLAMP_MAX[band] for band in bands], dtype=torch.float32, device=device).view(-1, 1, 1)


def center_crop(x: Tensor, size: int = CROP_SIZE, what: str = "image") -> Tensor:
    """Central ``size`` x ``size`` window of the last two axes, as a view (no copy).

    The window starts at ``((H - size) // 2, (W - size) // 2)``, so odd margins leave the extra pixel at the bottom
    and right.

    Args:
        x: (..., H, W) tensor with H, W >= ``size``.
        size: side of the window.
        what: name of the tensor for the error message, e.g. ``"LegacySurveyImage.flux"``.

    Raises:
        ValueError: the image is smaller than ``size`` in either axis.
    """
    height, width = x.shape[-2:]
    if height < size or width < size:
        raise ValueError(
            f"{what} is {height}x{width} pixels but the codec needs at least {size}x{size} (it encodes the central "
            f"{size}x{size} window); cut larger stamps or pad the images to {size}x{size}."
        )
    top, left = (height - size) // 2, (width - size) // 2
    return x[..., top : top + size, left : left + size]


def require_finite(x: Tensor, what: str) -> None:
    """Raises ``ValueError`` naming the batch rows of ``x`` (B, ...) that hold a NaN or an infinity."""
    finite = torch.isfinite(x).flatten(1).all(dim=1)
    if not bool(finite.all()):
        rows = torch.nonzero(~finite).flatten().tolist()
        shown = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
        raise ValueError(
            f"{what} has non-finite values (NaN or inf) in the encoded window of {len(rows)} object(s), batch rows "
            f"[{shown}]; tokens of such objects would be meaningless. Replace bad pixels before encoding (e.g. "
            f"torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), or the local sky level) or drop those objects."
        )


def range_compress_(x: Tensor, range_compression_factor: float = 0.01, mult_factor: float = 10.0) -> Tensor:
    r"""In place: :math:`x \leftarrow \kappa\,\alpha \operatorname{arcsinh}(x / \alpha)`; returns ``x``."""
    return x.div_(range_compression_factor).asinh_().mul_(range_compression_factor).mul_(mult_factor)


def inverse_range_compress_(x: Tensor, range_compression_factor: float = 0.01, mult_factor: float = 10.0) -> Tensor:
    r"""In place: :math:`x \leftarrow \alpha \sinh(x / (\kappa \alpha))`, the inverse of :func:`range_compress_`."""
    return x.div_(mult_factor).div_(range_compression_factor).sinh_().mul_(range_compression_factor)


def preprocess_flux(
    flux: Tensor,
    bands: list[str],
    range_compression_factor: float = 0.01,
    mult_factor: float = 10.0,
    crop_size: int = CROP_SIZE,
    device: torch.device | str | None = None,
    what: str = "Image.flux",
) -> Tensor:
    r"""Crop, clip, zero-point rescale and range-compress a batch of one survey's images.

    One pass over the cut-out: the crop is a view, the clip writes a new float32 tensor and every later step runs in
    place on it, so ``flux`` is never modified and only one (B, C, crop, crop) buffer is allocated.

    Args:
        flux: (B, C, H, W) floating tensor (any float dtype; computed in float32), H, W >= ``crop_size``.
        bands: the C band names of one survey.
        range_compression_factor: :math:`\alpha` of the arcsinh compression.
        mult_factor: :math:`\kappa` of the arcsinh compression.
        crop_size: side of the central window.
        device: where to compute (default: the device of ``flux``).
        what: name of ``flux`` in error messages.

    Returns:
        (B, C, crop_size, crop_size) float32 tensor, contiguous.

    Raises:
        ValueError: the image is smaller than ``crop_size``, or the window holds NaN/inf (the rows are named).
    """
    window = center_crop(flux, crop_size, what).to(device=device, dtype=torch.float32)
    require_finite(window, what)
    bounds = clamp_bounds(bands, window.device)
    x = torch.clamp(window, -bounds, bounds)
    survey = bands[0].split("-")[0]
    if survey == "HSC":
        x.div_(zeropoint_scale(survey))
    return range_compress_(x, range_compression_factor, mult_factor)
