"""Quantizers turning codec latents into token indices: FSQ, LFQ, linear and reservoir-CDF scalar quantizers."""

from aion_fast.quantizers.base import Quantizer
from aion_fast.quantizers.fsq import FiniteScalarQuantizer
from aion_fast.quantizers.lfq import LookupFreeQuantizer, LucidrainsLFQ
from aion_fast.quantizers.scalar import (
    ComposedScalarQuantizer,
    IdentityQuantizer,
    MultiScalarCompressedReservoirQuantizer,
    ScalarCompressedReservoirQuantizer,
    ScalarLinearQuantizer,
    ScalarLogReservoirQuantizer,
    ScalarReservoirQuantizer,
)

__all__ = [
    "Quantizer",
    "FiniteScalarQuantizer",
    "LookupFreeQuantizer",
    "LucidrainsLFQ",
    "ScalarLinearQuantizer",
    "ScalarReservoirQuantizer",
    "ScalarLogReservoirQuantizer",
    "ScalarCompressedReservoirQuantizer",
    "MultiScalarCompressedReservoirQuantizer",
    "IdentityQuantizer",
    "ComposedScalarQuantizer",
]
