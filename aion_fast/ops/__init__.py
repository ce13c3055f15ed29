"""Quantisation ops with interchangeable backends (PyTorch reference, C++ extension, Triton).

Each module ``aion_fast.ops.<op>`` holds, in this order: the fp32 PyTorch reference ``torch_<op>`` (the tests'
oracle and the fallback), the compiled paths registered as ``torch.library`` custom ops in the ``aion_fast``
namespace (so ``torch.compile`` traces them), and the public dispatching functions. Backends are chosen per call by
:func:`aion_fast.dispatch.select` (``AION_FAST_BACKEND`` forces one).

* :mod:`aion_fast.ops.fsq`: :func:`fsq_encode`, :func:`fsq_decode` (finite scalar quantisation).
* :mod:`aion_fast.ops.lfq`: :func:`lfq_encode`, :func:`lfq_decode` (lookup-free quantisation).
* :mod:`aion_fast.ops.image_preprocess`: :func:`image_preprocess` (the image codec's fused crop, clip, rescale,
  arcsinh and band placement).
* :mod:`aion_fast.ops.image_postprocess`: :func:`image_postprocess` (the image codec's decode epilogue: 54 -> 9
  projection, inverse range compression, HSC rescale and band selection).
* :mod:`aion_fast.ops.spectrum_to_latent`: :func:`spectrum_to_latent` (the spectrum codec's cleaning, normalisation,
  interpolation onto the latent grid and arcsinh).
* :mod:`aion_fast.ops.spectrum_to_observed`: :func:`spectrum_to_observed` (the spectrum codec's decode epilogue:
  latent grid to requested wavelengths, flux scale and mask).
* :mod:`aion_fast.ops.roar`: :func:`roar_step` (fused ROAR sampling step, Philox4x32-10 random numbers).

All ops compute in float32 whatever the autocast state and accept non-contiguous inputs. The quantizer ops return
int32 indices and never modify their arguments; ``roar_step`` updates the generation loop's state tensors (tokens and
masks) in place, as documented there, and returns int64 positions.
"""

from __future__ import annotations

from aion_fast.ops.fsq import fsq_decode, fsq_encode, torch_fsq_decode, torch_fsq_encode
from aion_fast.ops.image_postprocess import image_postprocess, torch_image_postprocess
from aion_fast.ops.image_preprocess import image_preprocess, torch_image_preprocess
from aion_fast.ops.lfq import lfq_decode, lfq_encode, torch_lfq_decode, torch_lfq_encode
from aion_fast.ops.roar import roar_step, torch_roar_sample, torch_roar_step
from aion_fast.ops.spectrum_to_latent import spectrum_to_latent, torch_spectrum_to_latent
from aion_fast.ops.spectrum_to_observed import spectrum_to_observed, torch_spectrum_to_observed

__all__ = [
    "fsq_decode",
    "fsq_encode",
    "image_postprocess",
    "image_preprocess",
    "lfq_decode",
    "lfq_encode",
    "roar_step",
    "spectrum_to_latent",
    "spectrum_to_observed",
    "torch_fsq_decode",
    "torch_fsq_encode",
    "torch_image_postprocess",
    "torch_image_preprocess",
    "torch_lfq_decode",
    "torch_lfq_encode",
    "torch_roar_sample",
    "torch_roar_step",
    "torch_spectrum_to_latent",
    "torch_spectrum_to_observed",
]
