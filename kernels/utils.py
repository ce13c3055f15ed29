"""Launch helpers shared by the Triton kernels. Plain Python: importing this module does not import Triton."""

from __future__ import annotations

import functools

import torch

__all__ = ["MAX_FUSED_SIZE", "calculate_settings", "device_constant", "ensure_contiguous", "next_power_of_2"]

#: Largest row a single program handles in one block (64 KiB of fp32).
MAX_FUSED_SIZE = 65536 // 4


def next_power_of_2(n: int) -> int:
    """Smallest power of two >= n (1 for n <= 1)."""
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def calculate_settings(n_cols: int) -> tuple[int, int]:
    """Block size and warp count for a row-wise kernel over rows of ``n_cols`` elements.

    Args:
        n_cols: row length.

    Returns:
        ``(BLOCK_SIZE, num_warps)``: the row rounded up to a power of two, and 4 to 32 warps growing with it.

    Raises:
        ValueError: the row is longer than :data:`MAX_FUSED_SIZE`.
    """
    block = next_power_of_2(n_cols)
    if block > MAX_FUSED_SIZE:
        raise ValueError(f"row of {n_cols} elements exceeds the fused limit of {MAX_FUSED_SIZE}")
    num_warps = 4
    if block >= 32768:
        num_warps = 32
    elif block >= 8192:
        num_warps = 16
    elif block >= 2048:
        num_warps = 8
    return block, num_warps


def ensure_contiguous(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The tensors made contiguous (copies only where needed; inputs are never modified)."""
    return tuple(t if t.is_contiguous() else t.contiguous() for t in tensors)


@functools.lru_cache(maxsize=256)
def device_constant(values: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small constant tensor (per-band channels, clips) on ``device``, copied there once per process.

    Launchers take their per-call constants from here instead of ``torch.tensor(list, device=cuda)``, which costs a
    host-to-device copy (and a sync on pageable memory) on every call. The tensor is shared: never write to it.
    """
    return torch.tensor(values, dtype=dtype, device=device)
