"""The AION-1 transformer: modality table, embeddings, blocks and the :class:`AION` model."""

from aion_fast.model.config import AIONConfig
from aion_fast.model.fm import AION
from aion_fast.model.modality_info import MODALITY_INFO, ModalitySpec, modality_id

__all__ = ["AION", "AIONConfig", "MODALITY_INFO", "ModalitySpec", "modality_id"]
