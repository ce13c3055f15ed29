"""Launch helpers shared by the Triton kernels. Plain Python: importing this module does not import Triton."""

from __future__ import annotations

import functools

import torch

__all__ = ["device_constant", "next_power_of_2"]


def next_power_of_2(n: int) -> int:
    """Smallest power of two >= n (1 for n <= 1)."""
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


@functools.lru_cache(maxsize=256)
def device_constant(values: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small constant tensor (per-band channels, clips) on ``device``, copied there once per process.

    Launchers take their per-call constants from here instead of ``torch.tensor(list, device=cuda)``, which costs a
    host-to-device copy (and a sync on pageable memory) on every call. The tensor is shared: never write to it.
    """
    with torch.inference_mode(False):  # cached for the process: usable under autograd too
        return torch.tensor(values, dtype=dtype, device=device)
