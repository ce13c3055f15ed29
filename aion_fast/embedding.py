"""Object embeddings from the frozen AION-1 encoder (AION-1 paper, Sec. 7.2).

Mean pooling here averages over the *present* tokens of each object only. The reference README's recipe averages
the rows of padded tokens in as well, which makes an object's embedding depend on how much padding its batch needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor

from aion_fast.model import AION
from aion_fast.precision import precision_context, resolve_precision
from aion_fast.tensor_utils import as_normal_tensor

__all__ = ["embed"]


def embed(
    model: AION,
    tokens: Mapping[str, Tensor],
    pooling: Literal["mean", "none"] = "mean",
    input_mask: Mapping[str, Tensor] | None = None,
    num_encoder_tokens: int | None = None,
    precision: str | None = None,
) -> Tensor:
    """Encodes tokens and optionally mean-pools them into one vector per object.

    Args:
        model: A loaded :class:`~aion_fast.model.AION`, or an exported model from :mod:`aion_fast.export`.
        tokens: Token key -> ids of shape ``(B, n)`` or ``(B,)``, e.g. the output of the codecs.
        pooling: ``"mean"`` for one ``(D,)`` vector per object, ``"none"`` for every token's vector.
        input_mask: Optional token key -> bool ``(B, n)``, True where the token is absent.
        num_encoder_tokens: Keep at most this many tokens per object (present ones first); default: all.
        precision: ``"fp32"`` (exact) or ``"bf16"`` (the encoder under bf16 autocast, pooled in float32); default:
            ``model.precision`` (:mod:`aion_fast.precision`). The result is float32 either way.

    Returns:
        ``(B, D)`` for ``"mean"``; ``(B, N, D)`` for ``"none"``, the encoder context rows in :meth:`AION.encode`
        order (absent tokens last).

    Raises:
        ValueError: Unknown pooling, invalid tokens, or (for ``"mean"``) objects with no present token.
    """
    if pooling not in ("mean", "none"):
        raise ValueError(f"pooling must be 'mean' or 'none', got {pooling!r}")
    if not isinstance(model, AION) and hasattr(model, "embed_tokens"):  # an exported model (aion_fast.export)
        if precision is not None:
            raise ValueError("precision= applies to an AION model; an exported model has its precision built in")
        return model.embed_tokens(tokens, pooling=pooling, input_mask=input_mask, num_encoder_tokens=num_encoder_tokens)
    precision = resolve_precision(getattr(model, "precision", None) if precision is None else precision)
    with torch.inference_mode():
        tokens_, emb, encoder_mask, _ = model.embed_inputs(
            tokens, mask=input_mask, num_encoder_tokens=num_encoder_tokens
        )
        present = ~encoder_mask[:, 0, :]
        counts = present.sum(dim=1)
        if pooling == "mean":
            empty = torch.nonzero(counts == 0).flatten().tolist()
            if empty:
                raise ValueError(
                    f"batch row(s) {empty} have no present token (every token is masked in input_mask, or "
                    "num_encoder_tokens keeps none); drop those objects or give them at least one token"
                )
        device = emb.device
        with precision_context(precision, device):
            # No mask at all when every token is present, so SDPA may take its flash kernel.
            context = model.encode_embeddings(tokens_, emb, None if bool(present.all()) else encoder_mask)
        context = context.float()
        if pooling == "mean":
            weights = present.to(context.dtype)[..., None]
            context = (context * weights).sum(dim=1) / counts.to(context.dtype)[:, None]
    return as_normal_tensor(context)
