"""The token sequence the transformer runs on: one modality after another, present tokens first.

Tokens flagged absent are moved behind the present ones (stable order), zeroed and hidden from attention; a token
budget then keeps the first positions of that order (4M's ``num_encoder_tokens`` / ``num_decoder_tokens``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["TokenSequence", "select_present_first"]


@dataclass
class TokenSequence:
    """A concatenated token sequence after selection (encoder inputs or decoder queries).

    Attributes:
        tokens: ``(B, N, D)`` token vectors (zero where absent).
        emb: ``(B, N, D)`` positional plus modality embeddings (zero where absent).
        padding: ``(B, N)`` bool, True where absent; ``None`` when every position is present.
        mod_ids: ``(B, N)`` int16 modality id of every position, absent ones included (-1 for register tokens).
        ids: ``(B, N)`` int64 token ids carried through the selection (decoder targets); ``None`` if not asked for.
    """

    tokens: Tensor
    emb: Tensor
    padding: Tensor | None
    mod_ids: Tensor
    ids: Tensor | None = None

    @property
    def mod_mask(self) -> Tensor:
        """``(B, N)`` int16 modality ids with -1 at absent positions (the reference's ``mod_mask``)."""
        return self.mod_ids if self.padding is None else self.mod_ids.masked_fill(self.padding, -1)

    def full_padding(self) -> Tensor:
        """``(B, N)`` bool padding, all False when :attr:`padding` is ``None``."""
        if self.padding is not None:
            return self.padding
        return torch.zeros(self.tokens.shape[:2], dtype=torch.bool, device=self.tokens.device)


def select_present_first(
    tokens: Tensor, emb: Tensor, padding: Tensor | None, mod_ids: Tensor, keep: int | None, ids: Tensor | None = None
) -> TokenSequence:
    """Moves absent positions behind present ones (stable), keeps ``keep`` positions and zeroes absent ones.

    Args:
        tokens: ``(B, T, D)``.
        emb: ``(B, T, D)``.
        padding: ``(B, T)`` bool, True where absent; ``None`` if all present.
        mod_ids: ``(B, T)`` int16 modality ids.
        keep: Number of positions to keep; ``None`` keeps all.
        ids: Optional ``(B, T)`` token ids to carry through the same selection (not zeroed).

    Returns:
        The selected sequence; gathers only when the order actually changes.

    Raises:
        ValueError: ``keep`` is not a positive integer or None.
    """
    total = tokens.shape[1]
    if keep is not None:
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"the token budget must be a positive integer or None, got {keep!r}")
        keep = min(keep, total)
    else:
        keep = total
    if padding is not None and not bool(padding.any()):
        padding = None
    if padding is None:
        kept_ids = None if ids is None else ids[:, :keep]
        return TokenSequence(tokens[:, :keep], emb[:, :keep], None, mod_ids[:, :keep], kept_ids)

    already_ordered = not bool((padding[:, :-1] & ~padding[:, 1:]).any())
    if not already_ordered:
        order = torch.sort(padding.to(torch.uint8), dim=1, stable=True).indices[:, :keep]
        rows = order[..., None].expand(-1, -1, tokens.shape[-1])
        tokens, emb = tokens.gather(1, rows), emb.gather(1, rows)
        padding, mod_ids = padding.gather(1, order), mod_ids.gather(1, order)
        ids = None if ids is None else ids.gather(1, order)
    else:
        tokens, emb, padding, mod_ids = tokens[:, :keep], emb[:, :keep], padding[:, :keep], mod_ids[:, :keep]
        ids = None if ids is None else ids[:, :keep]
    absent = padding[..., None]
    return TokenSequence(
        tokens=tokens.masked_fill(absent, 0.0),
        emb=emb.masked_fill(absent, 0.0),
        padding=padding if bool(padding.any()) else None,
        mod_ids=mod_ids,
        ids=ids,
    )
