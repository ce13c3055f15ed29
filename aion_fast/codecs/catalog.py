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

    def _occupied(self, x: LegacySurveyCatalog) -> torch.Tensor:
        occupied = x.X != self.mask_value
        for column in CATALOG_COLUMNS[1:]:
            if not torch.equal(getattr(x, column) != self.mask_value, occupied):
                raise ValueError(
                    f"LegacySurveyCatalog.{column} marks different empty slots than X; an empty source slot holds "
                    f"{self.mask_value} in every column."
                )
        return occupied

    def _encode(self, x: LegacySurveyCatalog) -> dict[str, torch.Tensor]:
        occupied = self._occupied(x)
        return {column: getattr(x, column)[occupied] for column in CATALOG_COLUMNS}

    @torch.no_grad()
    def encode(self, x: LegacySurveyCatalog) -> torch.Tensor:
        """Returns int64 tokens of shape (B, n_sources * 5)."""
        self._check_input(x)
        occupied = self._occupied(x)
        codes = self.quantizer.encode(self._encode(x))  # (n_occupied, 5)
        tokens = torch.full((*occupied.shape, len(CATALOG_COLUMNS)), self.mask_value, dtype=torch.long)
        tokens = tokens.to(codes.device)
        tokens[occupied] = codes.long()
        return tokens.reshape(occupied.shape[0], -1)

    def _decode(self, z: dict[str, torch.Tensor], **metadata: Any) -> LegacySurveyCatalog:
        return LegacySurveyCatalog(**z)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, **metadata: Any) -> LegacySurveyCatalog:
        """(B, n_sources * 5) tokens -> catalog; columns of empty slots decode to -1."""
        batch, length = z.shape
        n_sources = length // len(CATALOG_COLUMNS)
        flat = z[:, : n_sources * len(CATALOG_COLUMNS)].reshape(batch * n_sources, len(CATALOG_COLUMNS))
        columns = self.quantizer.decode(flat)
        return self._decode({name: value.reshape(batch, n_sources) for name, value in columns.items()})
