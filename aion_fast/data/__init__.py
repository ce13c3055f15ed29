"""Survey data readers and the small real-data sample bundled for the demo (``load_desi_sample``)."""

from aion_fast.data.desi import load_desi_sample, read_desi_coadd

__all__ = ["load_desi_sample", "read_desi_coadd"]
