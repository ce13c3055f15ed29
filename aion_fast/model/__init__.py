"""The AION-1 transformer: modality table, embeddings, blocks, attention and the :class:`AION` model."""

from aion_fast.model.config import BASE_ARCHITECTURE, AIONConfig, architecture
from aion_fast.model.fm import AION
from aion_fast.model.modality_info import MODALITY_INFO, ModalitySpec, modality_id
from aion_fast.model.sequence import TokenSequence

__all__ = [
    "AION",
    "AIONConfig",
    "BASE_ARCHITECTURE",
    "MODALITY_INFO",
    "ModalitySpec",
    "TokenSequence",
    "architecture",
    "modality_id",
]
