"""Finite scalar quantization (FSQ, Mentzer et al. 2023, arXiv:2309.15505), as used by the image and
scalar-field codecs.

Each latent channel ``d`` is squashed to ``L_d`` levels: ``bounded = tanh(z + shift) * half - offset`` with
``half = (L_d - 1)(1 + eps)/2``, ``offset = 0.5`` for even ``L_d`` (else 0) and ``shift = atanh(offset / half)``;
the rounded level ``q`` is normalised to ``q / (L_d // 2)`` in [-1, 1]. The index packs the digits
``q + L_d // 2`` in mixed radix with basis ``(1, L_0, L_0 L_1, ...)``. The index arithmetic lives in
``aion_fast.ops.fsq`` (PyTorch reference, C++ and Triton backends); this module holds the state.

Layout and validation: ``channel_first=True`` is the default here and in :func:`aion_fast.ops.fsq_encode` (the
codecs' (B, D, *spatial) latents, the reference module's layout) and is passed through as given. The op is the
public entry that checks the latents and indices; the module adds no second pass over them.

A channel with one level (``L_d = 1``, accepted as the reference accepts it) can only hold its single level: its
digit is 0 and its normalised code 0, and it leaves the packing of the other channels unchanged (a radix of 1). The
quantizer therefore runs the ops on the other channels only. The reference instead computes ``atanh(0 / 0)`` there:
NaN codes, and every index of the position cast from NaN (``-2**31`` on x86); see the README's deliberate
differences.
"""

from __future__ import annotations

import math

import torch

from aion_fast.ops import fsq as fsq_ops
from aion_fast.quantizers.base import Quantizer


def _channels_last(z: torch.Tensor, channel_first: bool) -> torch.Tensor:
    return z.movedim(1, -1) if channel_first else z


def _channels_back(z: torch.Tensor, channel_first: bool) -> torch.Tensor:
    return z.movedim(-1, 1) if channel_first else z


class FiniteScalarQuantizer(Quantizer):
    """FSQ with one level count per latent channel.

    Args:
        levels: number of levels of each latent channel, e.g. ``[7, 5, 5, 5, 5]`` (4375 codes) for images.
        eps: widening of the tanh bound so that the outermost levels are reachable.

    State dict: ``levels`` (int32 buffer), as in the reference checkpoints.
    """

    def __init__(self, levels: list[int], eps: float = 1e-3):
        super().__init__()
        levels = [int(v) for v in levels]
        if not levels or min(levels) < 1:
            raise ValueError(f"FSQ levels must be a non-empty list of integers >= 1, got {levels}.")
        self.register_buffer("levels", torch.tensor(levels, dtype=torch.int32))
        self._levels = levels
        #: Channels with more than one level and their levels: the ops run on these (module docstring).
        self._active = [d for d, level in enumerate(levels) if level > 1]
        self._active_levels = [levels[d] for d in self._active]
        self.eps = float(eps)

    @property
    def codebook_size(self) -> int:
        return math.prod(self._levels)

    @property
    def embedding_dim(self) -> int:
        return len(self._levels)

    def _check_channels(self, z: torch.Tensor, channel_first: bool) -> None:
        axis = 1 if channel_first else -1
        if z.ndim < 2 or z.shape[axis] != len(self._levels):
            raise ValueError(
                f"FSQ latents need {len(self._levels)} channels on axis {axis} (channel_first={channel_first}), "
                f"got shape {tuple(z.shape)}."
            )

    def encode(self, z: torch.Tensor, channel_first: bool = True) -> torch.Tensor:
        """Latents to indices.

        Args:
            z: (B, D, *spatial) if ``channel_first`` else (*batch, D); any float dtype (computed in fp32).
            channel_first: where the latent channel axis is.

        Returns:
            int64 indices of shape (B, *spatial) (resp. ``z.shape[:-1]``).
        """
        if len(self._active) == len(self._levels):  # the op checks z (shape, NaN)
            return fsq_ops.fsq_encode(z, self._levels, self.eps, channel_first=channel_first, dtype=torch.int64)
        self._check_channels(z, channel_first)  # before dropping the one-level channels
        axis = 1 if channel_first else z.ndim - 1
        if not self._active:  # one code only
            return torch.zeros(z.shape[:axis] + z.shape[axis + 1 :], dtype=torch.int64, device=z.device)
        active = torch.tensor(self._active, device=z.device)
        z = z.index_select(axis, active)
        return fsq_ops.fsq_encode(z, self._active_levels, self.eps, channel_first=channel_first, dtype=torch.int64)

    def decode(self, codes: torch.Tensor, channel_first: bool = True) -> torch.Tensor:
        """Indices to normalised codes in [-1, 1].

        Args:
            codes: integer indices of shape (B, *spatial), in [0, codebook_size) (checked by the op:
                one-level channels leave the product of the other levels unchanged).
            channel_first: put the D code channels on axis 1 (else last).

        Returns:
            float32 codes of shape (B, D, *spatial) (resp. (*codes.shape, D)).

        Raises:
            TypeError: ``codes`` is not an integer tensor. ValueError: an index is out of range.
        """
        if len(self._active) == len(self._levels):
            return _channels_back(fsq_ops.fsq_decode(codes, self._levels), channel_first)
        out = torch.zeros(*codes.shape, len(self._levels), dtype=torch.float32, device=codes.device)
        if self._active:
            out[..., self._active] = fsq_ops.fsq_decode(codes, self._active_levels)
        elif codes.is_floating_point() or codes.is_complex() or bool((codes != 0).any()):  # no op to check them
            raise ValueError(f"FSQ indices must be integers in [0, 1) (every level is 1), got {codes.dtype} {codes}.")
        return _channels_back(out, channel_first)

    def quantize(self, z: torch.Tensor, channel_first: bool = True) -> torch.Tensor:
        """Quantized latents with straight-through gradients, same shape as ``z``, float32."""
        self._check_channels(z, channel_first)
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = _channels_last(z, channel_first)
            if len(self._active) < len(self._levels):  # one-level channels quantize to 0 (module docstring)
                normalized = torch.zeros(z.shape, dtype=torch.float32, device=z.device)
                if self._active:
                    normalized[..., self._active] = self._quantize_last(z[..., self._active], self._active_levels)
            else:
                normalized = self._quantize_last(z, self._levels)
        return _channels_back(normalized, channel_first)

    def _quantize_last(self, z: torch.Tensor, levels: list[int]) -> torch.Tensor:
        bounded = fsq_ops.torch_fsq_bound(z, levels, self.eps)
        rounded = bounded + (torch.round(bounded) - bounded).detach()
        return rounded / torch.tensor([level // 2 for level in levels], dtype=torch.float32, device=z.device)

    def forward(self, z: torch.Tensor, channel_first: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training forward: (straight-through quantized latents, zero loss, fraction of codes used)."""
        quantized = self.quantize(z, channel_first)
        with torch.no_grad():
            used = torch.unique(self.encode(z.detach(), channel_first)).numel() / self.codebook_size
        return quantized, z.new_zeros(()), torch.tensor(used)
