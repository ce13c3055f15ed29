"""Attentive pooling of the frozen encoder's token outputs (AION-1 paper, Sec. 7.2, eq. 8).

With ``Z`` the ``(T, D)`` token outputs of one object, learned queries ``Q`` (``num_queries`` rows) and key/value
projections ``K = Z W_k``, ``V = Z W_v``, the pooled vectors are :math:`E = \\mathrm{softmax}(QK^\\top/\\sqrt{d})V`
(per head, ``d = D / num_heads``), followed by an output projection. Padded tokens get no attention weight, and
their rows are zeroed before projection, so the output does not depend on what they hold (NaN included).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["AttentivePooling"]


class AttentivePooling(nn.Module):
    """Cross-attention from learned queries to variable-length token sequences.

    Args:
        dim: Token width ``D``.
        num_queries: Learned query vectors (output rows per object).
        num_heads: Attention heads (``dim`` must be divisible by it).
    """

    def __init__(self, dim: int, num_queries: int = 1, num_heads: int = 1):
        super().__init__()
        if dim < 1 or num_queries < 1 or num_heads < 1 or dim % num_heads:
            raise ValueError(
                f"need dim >= 1, num_queries >= 1 and dim divisible by num_heads, got {dim}, {num_queries}, {num_heads}"
            )
        self.dim, self.num_queries, self.num_heads = dim, num_queries, num_heads
        self.queries = nn.Parameter(torch.randn(num_queries, dim) * 0.02)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, tokens: Tensor, padding: Tensor | None = None) -> Tensor:
        """Pools token outputs into ``num_queries`` vectors per object.

        Args:
            tokens: ``(B, T, D)`` encoder outputs.
            padding: ``(B, T)`` bool, True at padded (absent) tokens; ``None`` if all are present.

        Returns:
            ``(B, num_queries, D)``.

        Raises:
            ValueError: Wrong shapes, or an object whose tokens are all padding.
        """
        if tokens.ndim != 3 or tokens.shape[-1] != self.dim:
            raise ValueError(f"tokens must be (B, T, {self.dim}), got {tuple(tokens.shape)}")
        batch, length, _ = tokens.shape
        mask = None
        if padding is not None:
            if padding.shape != (batch, length) or padding.dtype != torch.bool:
                raise ValueError(
                    f"padding must be a ({batch}, {length}) bool tensor, got {padding.dtype} {tuple(padding.shape)}"
                )
            empty = torch.nonzero(padding.all(dim=1)).flatten().tolist()
            if empty:
                raise ValueError(f"rows {empty[:10]} have no present token; drop those objects before pooling")
            tokens = tokens.masked_fill(padding[..., None], 0.0)
            mask = ~padding[:, None, None, :]  # (B, 1, 1, T): True = may attend
        heads, width = self.num_heads, self.dim // self.num_heads
        keys = self.key(tokens).view(batch, length, heads, width).transpose(1, 2)
        values = self.value(tokens).view(batch, length, heads, width).transpose(1, 2)
        queries = self.queries.view(1, self.num_queries, heads, width).transpose(1, 2).expand(batch, -1, -1, -1)
        pooled = F.scaled_dot_product_attention(queries.to(keys.dtype), keys, values, attn_mask=mask)
        return self.out(pooled.transpose(1, 2).reshape(batch, self.num_queries, self.dim))
