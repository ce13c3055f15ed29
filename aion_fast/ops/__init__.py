"""Quantisation ops with interchangeable backends (PyTorch reference, C++ extension, Triton).

Each module ``aion_fast.ops.<op>`` holds, in this order: the fp32 PyTorch reference ``torch_<op>`` (the tests'
oracle and the fallback), the compiled paths registered as ``torch.library`` custom ops in the ``aion_fast``
namespace (so ``torch.compile`` traces them), and the public dispatching functions. Backends are chosen per call by
:func:`aion_fast._backend.select` (``AION_FAST_BACKEND`` forces one).

* :mod:`aion_fast.ops.fsq`: :func:`fsq_encode`, :func:`fsq_decode` (finite scalar quantisation).
* :mod:`aion_fast.ops.lfq`: :func:`lfq_encode`, :func:`lfq_decode` (lookup-free quantisation).

All ops compute in float32 whatever the autocast state, return int32 indices, accept non-contiguous inputs and never
modify their arguments.
"""

from __future__ import annotations

from aion_fast.ops.fsq import fsq_decode, fsq_encode, torch_fsq_decode, torch_fsq_encode
from aion_fast.ops.lfq import lfq_decode, lfq_encode, torch_lfq_decode, torch_lfq_encode

__all__ = [
    "fsq_decode",
    "fsq_encode",
    "lfq_decode",
    "lfq_encode",
    "torch_fsq_decode",
    "torch_fsq_encode",
    "torch_lfq_decode",
    "torch_lfq_encode",
]
