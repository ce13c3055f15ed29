"""Codec of the per-object catalog of neighbouring sources: positions pass through, shapes are quantized, and
the five columns of each source share one index space (offsets accumulate the column codebook sizes)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch

from aion_fast.codecs.base import Codec
from aion_fast.modalities import LegacySurveyCatalog
from aion_fast.quantizers import ComposedScalarQuantizer, IdentityQuantizer, Quantizer, ScalarReservoirQuantizer

CATALOG_COLUMNS = ("X", "Y", "SHAPE_E1", "SHAPE_E2", "SHAPE_R")


class CatalogCodec(Codec):
    """Tokens (B, n_sources * 5): per source ``[X, Y, e1, e2, r]`` indices; empty slots hold ``mask_value``.

    A slot is empty when its ``X`` equals ``mask_value``; the other columns of an empty slot must hold it too.
    """

    def __init__(self, mask_value: int = 9999):
        super().__init__()
        self.mask_value = int(mask_value)
        self._quantizer = ComposedScalarQuantizer(
            OrderedDict(
                X=IdentityQuantizer(96),
                Y=IdentityQuantizer(96),
                SHAPE_E1=ScalarReservoirQuantizer(1024, 100000),
                SHAPE_E2=ScalarReservoirQuantizer(1024, 100000),
                SHAPE_R=ScalarReservoirQuantizer(1024, 100000),
            )
        )

    @property
    def modality(self) -> type[LegacySurveyCatalog]:
        return LegacySurveyCatalog

    @property
    def quantizer(self) -> Quantizer:
        return self._quantizer

    def preprocess(self, x: LegacySurveyCatalog) -> dict[str, torch.Tensor]:
        """Validated columns, each (B, n_sources); an empty slot holds ``mask_value`` in every column.

        The column agreement is reduced on the device and read back once (one host sync).
        """
        self.check_input(x)
        occupied = x.X != self.mask_value
        agree = torch.stack([(getattr(x, c) != self.mask_value).eq(occupied).all() for c in CATALOG_COLUMNS[1:]])
        if not bool(agree.all()):
            column = CATALOG_COLUMNS[1 + int(torch.nonzero(~agree)[0, 0])]
            raise ValueError(
                f"LegacySurveyCatalog.{column} marks different empty slots than X; an empty source slot holds "
                f"{self.mask_value} in every column."
            )
        return {column: getattr(x, column) for column in CATALOG_COLUMNS}

    def quantize(self, latents: dict[str, torch.Tensor]) -> torch.Tensor:
        """Columns (B, n_sources) -> int64 tokens (B, n_sources * 5): per source ``[X, Y, e1, e2, r]`` indices,
        ``mask_value`` in empty slots."""
        occupied = latents["X"] != self.mask_value
        codes = self.quantizer.encode({column: latents[column][occupied] for column in CATALOG_COLUMNS})
        tokens = torch.full((*occupied.shape, len(CATALOG_COLUMNS)), self.mask_value, dtype=torch.long)
        tokens = tokens.to(codes.device)
        tokens[occupied] = codes.long()
        return tokens.reshape(occupied.shape[0], -1)

    def dequantize(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, n_sources * 5) tokens -> columns (B, n_sources); columns of empty slots decode to -1."""
        batch, length = tokens.shape
        n_sources = length // len(CATALOG_COLUMNS)
        flat = tokens[:, : n_sources * len(CATALOG_COLUMNS)].reshape(batch * n_sources, len(CATALOG_COLUMNS))
        columns = self.quantizer.decode(flat)
        return {name: value.reshape(batch, n_sources) for name, value in columns.items()}

    def postprocess(self, outputs: dict[str, torch.Tensor], **metadata: Any) -> LegacySurveyCatalog:
        return LegacySurveyCatalog(**outputs)
