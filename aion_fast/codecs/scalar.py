"""Codecs of scalar measurements (fluxes, shapes, redshift, parallax, Gaia XP coefficients): the value itself is
the latent, and a scalar quantizer turns it into one token (or one token per coefficient)."""

from __future__ import annotations

from typing import Any

import torch

from aion_fast.codecs.base import Codec
from aion_fast.modalities import Scalar, ScalarModalities
from aion_fast.quantizers import (
    MultiScalarCompressedReservoirQuantizer,
    Quantizer,
    ScalarLinearQuantizer,
    ScalarLogReservoirQuantizer,
    ScalarReservoirQuantizer,
)


def _scalar_modality(name: str) -> type[Scalar]:
    if name not in ScalarModalities:
        raise ValueError(f"unknown scalar modality {name!r}; known names: {sorted(ScalarModalities)}.")
    return ScalarModalities[name]


class _ScalarCodec(Codec):
    """Shared behaviour: identity 'network', finite-value check, token shape (B,) or (B, num_tokens)."""

    _modality_class: type[Scalar]
    _quantizer: Quantizer

    @property
    def modality(self) -> type[Scalar]:
        return self._modality_class

    @property
    def quantizer(self) -> Quantizer:
        return self._quantizer

    @classmethod
    def remap_state_dict(cls, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The published scalar codecs store their quantizer under ``quantizer.``; this class uses ``_quantizer.``."""
        return {("_" + k if k.startswith("quantizer.") else k): v for k, v in state_dict.items()}

    def preprocess(self, x: Scalar) -> torch.Tensor:
        """Validated values: (B,) for a one-value modality (any batch layout flattened), else (B, num_tokens)."""
        self.check_input(x)
        value = x.value
        if self.modality.num_tokens == 1:
            value = value.reshape(-1)
        bad = ~torch.isfinite(value)
        if bool(bad.any()):
            rows = torch.nonzero(bad.reshape(value.shape[0], -1).any(dim=1)).flatten().tolist()
            raise ValueError(
                f"{type(x).__name__}.value is NaN/inf for batch rows {rows[:10]}{'...' if len(rows) > 10 else ''}; "
                f"leave this modality out for those objects (give only the objects where it is measured)."
            )
        return value

    def encode(self, x: Scalar) -> torch.Tensor:
        """Tokenizes a batch: ``(B, num_tokens)`` tokens, or for a one-value modality tokens of ``x.value``'s
        shape (``(B,)``, a 0-d tensor, ``(B, 1)`` or ``(1, B)``), as the reference returns them."""
        tokens = super().encode(x)
        return tokens.reshape(x.value.shape) if self.modality.num_tokens == 1 else tokens

    def postprocess(self, outputs: torch.Tensor, **metadata: Any) -> Scalar:
        """Dequantized values -> the modality batch."""
        return self._modality_class(value=outputs)


class ScalarCodec(_ScalarCodec):
    """Reservoir-CDF quantization of the raw value (shapes, extinctions, magnitudes, coordinates)."""

    def __init__(self, modality: str, codebook_size: int, reservoir_size: int):
        super().__init__()
        self._modality_class = _scalar_modality(modality)
        self._quantizer = ScalarReservoirQuantizer(codebook_size, reservoir_size)


class LogScalarCodec(_ScalarCodec):
    """Reservoir-CDF quantization of ``log(max(value, exp(min_log_value)))`` (fluxes, radii, parallax)."""

    def __init__(self, modality: str, codebook_size: int, reservoir_size: int, min_log_value: float | None = -3):
        super().__init__()
        self._modality_class = _scalar_modality(modality)
        min_log = -3.0 if min_log_value is None else float(min_log_value)
        self._quantizer = ScalarLogReservoirQuantizer(
            codebook_size, reservoir_size, reservoir_default=max(-3.0, min_log), min_log_value=min_log
        )


class MultiScalarCodec(_ScalarCodec):
    """One compressed reservoir quantizer per coefficient (Gaia XP BP/RP: 55 tokens each)."""

    def __init__(
        self,
        modality: str,
        compression_fns: list[str],
        decompression_fns: list[str],
        codebook_size: int,
        reservoir_size: int,
        num_quantizers: int,
    ):
        super().__init__()
        self._modality_class = _scalar_modality(modality)
        if num_quantizers != self._modality_class.num_tokens:
            raise ValueError(
                f"{modality} has {self._modality_class.num_tokens} values per object but num_quantizers="
                f"{num_quantizers}; set num_quantizers to {self._modality_class.num_tokens}."
            )
        self._quantizer = MultiScalarCompressedReservoirQuantizer(
            compression_fns, decompression_fns, codebook_size, reservoir_size, num_quantizers=num_quantizers
        )


class GridScalarCodec(_ScalarCodec):
    """Linear bins on [0, 1] (redshift)."""

    def __init__(self, modality: str, codebook_size: int):
        super().__init__()
        self._modality_class = _scalar_modality(modality)
        self._quantizer = ScalarLinearQuantizer(codebook_size, (0.0, 1.0))
