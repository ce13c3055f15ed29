"""Ops with interchangeable backends (PyTorch reference, C++ extension, Triton), one module per op.

Each ``aion_fast.ops.<op>`` holds the float32 reference ``torch_<op>`` (oracle and fallback), the compiled paths
registered as ``torch.library`` ops (so ``torch.compile`` traces them) and the public function, which picks a backend
per call (:func:`aion_fast.dispatch.select`; ``AION_FAST_BACKEND`` forces one): ``fsq``, ``lfq`` (quantisers),
``image_preprocess`` / ``image_postprocess`` and ``spectrum_to_latent`` / ``spectrum_to_observed`` (the codecs' fused
pre- and post-processing), ``roar`` (fused ROAR sampling step). All compute in float32 whatever the autocast state;
only ``roar_step`` modifies its arguments (the loop's state tensors, in place).
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
