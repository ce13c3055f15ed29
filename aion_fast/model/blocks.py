"""Transformer blocks of AION-1: 4M-style pre-norm ViT blocks (Mizrahi et al. 2023), with the reference's
state-dict names (``attn.qkv``, ``cross_attn.kv``, ``mlp.fc1``...). Attention masks and backends live in
:mod:`aion_fast.model.attention`, the encoder block's CPU inference path in :mod:`aion_fast.model.rowblocks`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

# Attention names stay importable from here for existing callers; their home is aion_fast.model.attention.
from aion_fast.model.attention import (  # noqa: F401
    AttentionMask,
    PackedLayout,
    as_attention_mask,
    attend,
    flash_attn_varlen_func,
    sdpa_varlen_attention,
    segment_mean,
    varlen_attention,
    varlen_backend,
)
from aion_fast.model.rowblocks import forward_row_blocks, use_row_blocks

__all__ = [
    "BlockOptions",
    "CrossAttention",
    "DecoderBlock",
    "DropPath",
    "EncoderBlock",
    "GatedMlp",
    "LayerNorm",
    "Mlp",
    "SelfAttention",
]


NORM_EPS = 1e-6


class LayerNorm(nn.Module):
    """LayerNorm over the last axis whose bias can be switched off (then a persistent zero buffer, because the
    reference checkpoints store ``bias``)."""

    def __init__(self, dim: int, eps: float = NORM_EPS, bias: bool = True):
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        if bias:
            self.bias = nn.Parameter(torch.zeros(dim))
        else:
            self.register_buffer("bias", torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        """Normalizes ``(..., dim)`` over the last axis."""
        bias = self.bias
        if bias.dtype != self.weight.dtype:  # the zero buffer beside weights cast by mixed precision (FSDP bf16)
            bias = bias.to(self.weight.dtype)
        return F.layer_norm(x, (self.dim,), self.weight, bias, self.eps)


class DropPath(nn.Module):
    """Stochastic depth: drops the residual branch of a sample with ``drop_prob`` while training, scales the rest."""

    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        """Applies stochastic depth to ``(B, ...)``; identity in eval mode."""
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1.0 - self.drop_prob
        keep = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device).bernoulli_(keep_prob)
        return x * keep / keep_prob

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class Mlp(nn.Module):
    """``fc2(act(fc1(x)))``, (..., dim) -> (..., dim)."""

    def __init__(self, dim: int, hidden_dim: int, act_layer: type[nn.Module], bias: bool):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """Maps ``(..., dim)`` to ``(..., dim)``."""
        return self.fc2(self.act(self.fc1(x)))


class GatedMlp(nn.Module):
    """Gated MLP ``fc2(act(fc1(x)) * fc3(x))`` (SwiGLU with SiLU; Shazeer 2020, arXiv:2002.05202).

    Hidden width ``int(2 * hidden_dim / 3)``: three matrices cost about as much as a plain MLP of ``hidden_dim``.
    """

    def __init__(self, dim: int, hidden_dim: int, act_layer: type[nn.Module], bias: bool):
        super().__init__()
        gated_dim = int(2 * hidden_dim / 3)
        self.fc1 = nn.Linear(dim, gated_dim, bias=bias)
        self.act = act_layer()
        self.fc2 = nn.Linear(gated_dim, dim, bias=bias)
        self.fc3 = nn.Linear(dim, gated_dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """Maps ``(..., dim)`` to ``(..., dim)``."""
        return self.fc2(self.act(self.fc1(x)) * self.fc3(x))


class SelfAttention(nn.Module):
    """Multi-head self-attention, fused ``qkv`` projection, optional per-head LayerNorm of q and k (QK-norm)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, proj_bias: bool, qk_norm: bool, norm_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        if qk_norm:
            self.q_norm = LayerNorm(self.head_dim, bias=norm_bias)
            self.k_norm = LayerNorm(self.head_dim, bias=norm_bias)
        else:
            self.q_norm = self.k_norm = None

    def forward(self, x: Tensor, mask: AttentionMask | Tensor | None = None) -> Tensor:
        """(B, N, D) -> (B, N, D); ``mask`` prepared or a reference bool mask (:func:`as_attention_mask`)."""
        mask = as_attention_mask(mask)
        batch, length, dim = x.shape
        if mask.uniform:
            # Every key is hidden: the output is the value mean, the same for all queries, so q and k are not needed.
            bias = None if self.qkv.bias is None else self.qkv.bias[2 * dim :]
            values = F.linear(x, self.qkv.weight[2 * dim :], bias)
            if mask.packed is not None:  # (1, T, D): the mean of each packed sample
                layout = mask.packed
                means = segment_mean(values[0], layout.segment_k, layout.batch)
                return self.proj(means)[layout.segment_q][None]
            if mask.uniform_keys is not None:  # the mean over each row's selected keys
                weights = mask.uniform_keys[..., None].to(values.dtype)
                mean = (values * weights).sum(dim=1, keepdim=True) / weights.sum(dim=1, keepdim=True).clamp_min(1.0)
                return self.proj(mean).expand(batch, length, dim)
            return self.proj(values.mean(dim=1, keepdim=True)).expand(batch, length, dim)
        return self.proj(self.attend_projected(self.qkv(x), mask))

    def attend_projected(self, qkv: Tensor, mask: AttentionMask) -> Tensor:
        """(B, N, 3 D) ``qkv`` output, non-uniform mask -> (B, N, D) heads side by side, before ``proj``."""
        batch, length, width = qkv.shape
        q, k, v = qkv.view(batch, length, 3, self.num_heads, self.head_dim).unbind(2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        out = attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask)
        return out.transpose(1, 2).reshape(batch, length, width // 3)


class CrossAttention(nn.Module):
    """Multi-head cross-attention from queries ``x`` to a context, optional QK-norm."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, proj_bias: bool, qk_norm: bool, norm_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        if qk_norm:
            self.q_norm = LayerNorm(self.head_dim, bias=norm_bias)
            self.k_norm = LayerNorm(self.head_dim, bias=norm_bias)
        else:
            self.q_norm = self.k_norm = None

    def forward(self, x: Tensor, context: Tensor, mask: AttentionMask | Tensor | None = None) -> Tensor:
        """(B, M, D) queries, (B, N, D) context -> (B, M, D); ``mask`` a (B, 1, 1, N)-style key mask or the
        reference's bool (B, 1, N)."""
        mask = as_attention_mask(mask)
        batch, length, dim = x.shape
        q = self.q(x).view(batch, length, self.num_heads, self.head_dim)
        k, v = self.kv(context).view(batch, context.shape[1], 2, self.num_heads, self.head_dim).unbind(2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        out = attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask)
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


def _build_mlp(dim: int, mlp_ratio: float, act_layer: type[nn.Module], bias: bool, gated: bool) -> nn.Module:
    hidden_dim = int(dim * mlp_ratio)
    return (GatedMlp if gated else Mlp)(dim, hidden_dim, act_layer, bias)


@dataclass(frozen=True)
class BlockOptions:
    """Hyper-parameters shared by all encoder and decoder blocks (see :class:`aion_fast.model.config.AIONConfig`)."""

    dim: int
    num_heads: int
    mlp_ratio: float
    qkv_bias: bool
    proj_bias: bool
    mlp_bias: bool
    norm_bias: bool
    gated_mlp: bool
    qk_norm: bool
    act_layer: type[nn.Module]


class EncoderBlock(nn.Module):
    """Pre-norm encoder block ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``; ``use_checkpoint`` recomputes
    activations in the backward pass (training only)."""

    def __init__(self, options: BlockOptions, drop_path: float = 0.0, use_checkpoint: bool = False):
        super().__init__()
        o = options
        self.use_checkpoint = use_checkpoint
        self.norm1 = LayerNorm(o.dim, bias=o.norm_bias)
        self.attn = SelfAttention(o.dim, o.num_heads, o.qkv_bias, o.proj_bias, o.qk_norm, o.norm_bias)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = LayerNorm(o.dim, bias=o.norm_bias)
        self.mlp = _build_mlp(o.dim, o.mlp_ratio, o.act_layer, o.mlp_bias, o.gated_mlp)

    def _forward(self, x: Tensor, mask: AttentionMask) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def forward(self, x: Tensor, mask: AttentionMask | Tensor | None = None) -> Tensor:
        """Maps ``(B, N, D)`` to ``(B, N, D)`` under the key-padding mask: prepared, or the reference's bool
        ``(B, 1, N)`` mask (True = absent, as ``embed_inputs`` returns it), or ``None``."""
        mask = as_attention_mask(mask)
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, mask, use_reentrant=False)
        if use_row_blocks(self, x, mask):
            return forward_row_blocks(self, x, mask)
        return self._forward(x, mask)


class DecoderBlock(nn.Module):
    """Pre-norm decoder block: self-attention, cross-attention to the encoder context, MLP."""

    def __init__(self, options: BlockOptions, drop_path: float = 0.0, use_checkpoint: bool = False):
        super().__init__()
        o = options
        self.use_checkpoint = use_checkpoint
        self.norm1 = LayerNorm(o.dim, bias=o.norm_bias)
        self.self_attn = SelfAttention(o.dim, o.num_heads, o.qkv_bias, o.proj_bias, o.qk_norm, o.norm_bias)
        self.cross_attn = CrossAttention(o.dim, o.num_heads, o.qkv_bias, o.proj_bias, o.qk_norm, o.norm_bias)
        self.query_norm = LayerNorm(o.dim, bias=o.norm_bias)
        self.context_norm = LayerNorm(o.dim, bias=o.norm_bias)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = LayerNorm(o.dim, bias=o.norm_bias)
        self.mlp = _build_mlp(o.dim, o.mlp_ratio, o.act_layer, o.mlp_bias, o.gated_mlp)

    def _forward(self, x: Tensor, context: Tensor, self_mask: AttentionMask, cross_mask: AttentionMask) -> Tensor:
        x = x + self.drop_path(self.self_attn(self.norm1(x), self_mask))
        x = x + self.drop_path(self.cross_attn(self.query_norm(x), self.context_norm(context), cross_mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def forward(
        self,
        x: Tensor,
        context: Tensor,
        self_mask: AttentionMask | Tensor | None = None,
        cross_mask: AttentionMask | Tensor | None = None,
        *,
        sa_mask: Tensor | None = None,
        xa_mask: Tensor | None = None,
    ) -> Tensor:
        """(B, M, D) decoder tokens, (B, N, D) context -> (B, M, D).

        ``self_mask`` (B, 1, M, M)-style or bool (B, M, M); ``cross_mask`` (B, 1, 1, N)-style or bool (B, 1, N);
        ``sa_mask`` / ``xa_mask`` are the reference's names for them.
        """
        if sa_mask is not None or xa_mask is not None:
            if self_mask is not None or cross_mask is not None:
                raise ValueError("give the masks as self_mask/cross_mask or as sa_mask/xa_mask, not both")
            self_mask, cross_mask = sa_mask, xa_mask
        self_mask = as_attention_mask(self_mask, "self_mask")
        cross_mask = as_attention_mask(cross_mask, "cross_mask")
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, context, self_mask, cross_mask, use_reentrant=False)
        return self._forward(x, context, self_mask, cross_mask)
