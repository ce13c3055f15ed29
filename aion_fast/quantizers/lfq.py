"""Lookup-free quantization (LFQ, Yu et al. 2023, MAGVIT-v2, arXiv:2310.05737), as used by the spectrum codec.

Each of the ``D = log2(codebook_size)`` latent channels is quantized to its sign: the code is ``+s`` where the
latent is positive and ``-s`` elsewhere (zero and NaN included), and the index is the binary number whose most
significant bit is channel 0. Inference only needs these sign bits (``encode``); the entropy and commitment losses
of training are computed by ``forward`` alone.

Training loss (MAGVIT-v2 eq. 5): with ``p_i = softmax(2 beta <z_i, c>)`` over the 2^D codes ``c`` (``beta`` the
inverse temperature), ``L_entropy = mean_i H(p_i) - gamma H(mean_i p_i)`` and ``L_commit = ||z - sg(q(z))||^2``;
the auxiliary loss is ``w_e L_entropy + w_c L_commit``.

Layout and validation: ``channel_first=True`` is the default here and in :func:`aion_fast.ops.lfq_encode` (the
spectrum codec's (B, D, T) latents). The ops check values and ranges; the module checks only what the op cannot
know (that D is this quantizer's ``dim``, a shape comparison).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from aion_fast.ops import lfq as lfq_ops
from aion_fast.quantizers.base import Quantizer


class _SignCodebook(nn.Module):
    """Holds the LFQ state under the key names of the reference checkpoints (``mask``, ``project_in``, ...)."""

    def __init__(self, dim: int, codebook_dim: int, projection_has_bias: bool):
        super().__init__()
        # Bit weight of each channel, most significant first.
        self.register_buffer("mask", 2 ** torch.arange(codebook_dim - 1, -1, -1))
        has_projections = dim != codebook_dim
        self.project_in = nn.Linear(dim, codebook_dim, bias=projection_has_bias) if has_projections else nn.Identity()
        self.project_out = nn.Linear(codebook_dim, dim, bias=projection_has_bias) if has_projections else nn.Identity()


class LookupFreeQuantizer(Quantizer):
    """LFQ over ``log2(codebook_size)`` sign bits, with optional linear projections when ``dim`` differs.

    Args:
        dim: latent channels fed to the quantizer (defaults to ``log2(codebook_size)``).
        codebook_size: number of codes, a power of two (defaults to ``2**dim``).
        inv_temperature: ``beta`` of the entropy loss.
        entropy_loss_weight: ``w_e``.
        commitment_loss_weight: ``w_c``.
        diversity_gamma: ``gamma``, weight of the batch (codebook) entropy.
        codebook_scale: ``s``, magnitude of the codes.
        projection_has_bias: whether the in/out projections have a bias.
        soft_clamp_input_value: if set, latents are squashed to ``v tanh(z / v)`` before quantization.
        **unsupported: other options of the reference's constructor are accepted only at their defaults.

    State dict: ``_quantizer.mask`` (+ ``_quantizer.project_in/out.*`` when projecting), as in the reference.
    """

    def __init__(
        self,
        dim: int | None = None,
        codebook_size: int | None = None,
        inv_temperature: float = 100.0,
        entropy_loss_weight: float = 0.1,
        commitment_loss_weight: float = 0.25,
        diversity_gamma: float = 1.0,
        codebook_scale: float = 1.0,
        projection_has_bias: bool = True,
        soft_clamp_input_value: float | None = None,
        **unsupported,
    ):
        super().__init__()
        defaults = {
            "num_codebooks": 1,
            "keep_num_codebooks_dim": None,
            "frac_per_sample_entropy": 1.0,
            "use_code_agnostic_commit_loss": False,
            "cosine_sim_project_in": False,
            "cosine_sim_project_in_scale": None,
        }
        for key, value in unsupported.items():
            if key not in defaults:
                raise TypeError(f"LookupFreeQuantizer got an unexpected argument {key!r}.")
            if value != defaults[key]:
                raise ValueError(f"LookupFreeQuantizer supports only {key}={defaults[key]!r}, got {value!r}.")
        if dim is None and codebook_size is None:
            raise ValueError("LookupFreeQuantizer needs dim or codebook_size.")
        if codebook_size is None:
            codebook_size = 2**dim
        codebook_dim = int(round(math.log2(codebook_size)))
        if 2**codebook_dim != codebook_size or not 1 <= codebook_dim <= 31:
            raise ValueError(f"LFQ codebook_size must be a power of two between 2 and 2**31, got {codebook_size}.")
        if soft_clamp_input_value is not None and soft_clamp_input_value < codebook_scale:
            raise ValueError("soft_clamp_input_value must be >= codebook_scale.")
        self.dim = dim if dim is not None else codebook_dim
        self.codebook_dim = codebook_dim
        self._codebook_size = codebook_size
        self.inv_temperature = float(inv_temperature)
        self.entropy_loss_weight = float(entropy_loss_weight)
        self.commitment_loss_weight = float(commitment_loss_weight)
        self.diversity_gamma = float(diversity_gamma)
        self.codebook_scale = float(codebook_scale)
        self.soft_clamp_input_value = soft_clamp_input_value
        self._quantizer = _SignCodebook(self.dim, codebook_dim, projection_has_bias)
        # encode reads the latents' signs in place when nothing transforms them; decided once (two nn.Module
        # attribute lookups and an isinstance per call cost more than the kernel at codec batch sizes)
        self._signs_in_place = self.dim == codebook_dim and soft_clamp_input_value is None

    @property
    def codebook_size(self) -> int:
        return self._codebook_size

    @property
    def embedding_dim(self) -> int:
        return self.codebook_dim

    def _check_channels(self, z: torch.Tensor, channel_first: bool) -> None:
        axis = 1 if channel_first else -1
        if z.ndim < 2 or z.shape[axis] != self.dim:
            raise ValueError(
                f"LFQ latents need {self.dim} channels on axis {axis} (channel_first={channel_first}), "
                f"got shape {tuple(z.shape)}."
            )

    def _to_bits_space(self, z: torch.Tensor, channel_first: bool) -> torch.Tensor:
        """(B, dim, T) or (..., dim) latents -> (..., codebook_dim) fp32 pre-quantization values."""
        self._check_channels(z, channel_first)
        x = z.movedim(1, -1) if channel_first else z
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = self._quantizer.project_in(x.float())
            if self.soft_clamp_input_value is not None:
                v = self.soft_clamp_input_value
                x = torch.tanh(x / v) * v
        return x

    def encode(self, z: torch.Tensor, channel_first: bool = True) -> torch.Tensor:
        """Latents to indices (sign bits only; no loss terms are computed).

        Args:
            z: (B, dim, T) if ``channel_first`` else (..., dim).

        Returns:
            int64 indices of shape (B, T) (resp. ``z.shape[:-1]``).
        """
        if self._signs_in_place:
            self._check_channels(z, channel_first)
            # read in place (no (B, T, D) copy), int64 written by the kernel
            return lfq_ops.lfq_encode(z, channel_first=channel_first, dtype=torch.int64)
        return lfq_ops.lfq_encode(self._to_bits_space(z, channel_first), channel_first=False, dtype=torch.int64)

    def decode(self, codes: torch.Tensor, channel_first: bool = True) -> torch.Tensor:
        """Indices to codes.

        Args:
            codes: integer indices of shape (B, T).

        Returns:
            float32 codes (B, dim, T) if ``channel_first`` else (B, T, dim).

        Raises:
            TypeError: ``codes`` is not an integer tensor. ValueError: an index is outside [0, codebook_size)
            (both checked by :func:`aion_fast.ops.lfq_decode`).
        """
        bits = lfq_ops.lfq_decode(codes, self.codebook_dim, self.codebook_scale)
        out = self._quantizer.project_out(bits)
        return out.movedim(-1, 1) if channel_first else out

    def _all_codes(self, device: torch.device) -> torch.Tensor:
        """(codebook_size, codebook_dim) float32 table of every code."""
        indices = torch.arange(self.codebook_size, device=device)
        return lfq_ops.lfq_decode(indices, self.codebook_dim, self.codebook_scale)

    def losses(self, z: torch.Tensor, channel_first: bool = True) -> dict[str, torch.Tensor]:
        """Training forward with every term.

        Returns:
            dict with ``quantized`` (same layout as ``z``, straight-through gradients), ``indices`` (int64),
            ``per_sample_entropy``, ``codebook_entropy``, ``commitment`` and ``loss`` (weighted total).
        """
        x = self._to_bits_space(z, channel_first)
        with torch.autocast(device_type=x.device.type, enabled=False):
            scale = self.codebook_scale
            hard = torch.where(x > 0, scale, -scale)
            straight = x + (hard - x).detach()
            flat = x.reshape(-1, self.codebook_dim)
            logits = 2 * self.inv_temperature * flat @ self._all_codes(x.device).T
            prob = logits.softmax(dim=-1)
            per_sample_entropy = -(prob * prob.clamp_min(1e-5).log()).sum(-1).mean()
            avg_prob = prob.mean(0)
            codebook_entropy = -(avg_prob * avg_prob.clamp_min(1e-5).log()).sum()
            commitment = F.mse_loss(x, hard.detach())
            loss = (
                self.entropy_loss_weight * (per_sample_entropy - self.diversity_gamma * codebook_entropy)
                + self.commitment_loss_weight * commitment
            )
            out = self._quantizer.project_out(straight)
        indices = lfq_ops.lfq_encode(x.detach(), channel_first=False).long()
        return {
            "quantized": out.movedim(-1, 1) if channel_first else out,
            "indices": indices,
            "per_sample_entropy": per_sample_entropy,
            "codebook_entropy": codebook_entropy,
            "commitment": commitment,
            "loss": loss,
        }

    def forward(self, z: torch.Tensor, channel_first: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training forward: (quantized latents, auxiliary loss, fraction of codes used)."""
        terms = self.losses(z, channel_first)
        used = torch.unique(terms["indices"]).numel() / self.codebook_size
        return terms["quantized"], terms["loss"], torch.tensor(used)


#: Name used by the reference package for the same quantizer.
LucidrainsLFQ = LookupFreeQuantizer
