r"""Survey constants of the image codec's preprocessing (AION-1 paper §4.1.1); the arithmetic is in
:mod:`aion_fast.ops.image_preprocess` (re-exported here).

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
from aion_fast.ops.image_preprocess import center_crop, range_compress_, require_finite

__all__ = [
    "CROP_SIZE",
    "HSC_ZEROPOINT",
    "REFERENCE_ZEROPOINT",
    "band_indices",
    "center_crop",
    "clamp_bounds",
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
