"""Survey data readers and the small real-data sample bundled for the demo (``load_desi_sample``)."""

from aion_fast.data.desi import load_desi_sample, read_desi_coadd
from aion_fast.data.mmu import MODALITY_GROUPS, SCALAR_COLUMNS, prepare_rows

__all__ = ["MODALITY_GROUPS", "SCALAR_COLUMNS", "load_desi_sample", "prepare_rows", "read_desi_coadd"]
