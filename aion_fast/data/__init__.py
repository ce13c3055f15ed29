"""Survey data readers (Multimodal Universe files and other formats) and the small sample bundled in the package."""

from aion_fast.data.mmu import MODALITY_GROUPS, SCALAR_COLUMNS, prepare_rows

__all__ = ["MODALITY_GROUPS", "SCALAR_COLUMNS", "prepare_rows"]
