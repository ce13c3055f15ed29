"""Per-modality input and output embeddings of the AION-1 transformer.

Every modality contributes, per token, a *token* vector (a lookup of its id) and an *embedding* vector (positional
plus modality embedding, Eq. 4-5 of the AION-1 paper). The two are kept apart because the encoder adds them before
its first block while the decoder context adds the embedding again after the encoder.

Attribute names (``token_emb``, ``mod_emb``, ``pos_emb``, ``to_logits``) match the reference checkpoints.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from aion_fast.model.modality_info import GRID, ModalitySpec

__all__ = [
    "GridTokenDecoderEmbedding",
    "GridTokenEncoderEmbedding",
    "SequenceDecoderEmbedding",
    "SequenceEncoderEmbedding",
    "build_decoder_embedding",
    "build_encoder_embedding",
    "sincos_1d",
    "sincos_2d",
]

_SINCOS_TEMPERATURE = 10000.0


def _frequencies(num: int) -> Tensor:
    """Returns ``1 / T**(i / num)`` for ``i < num``, shape ``(num,)``, float32."""
    exponents = torch.arange(num, dtype=torch.float32) / num
    return 1.0 / (_SINCOS_TEMPERATURE**exponents)


def sincos_1d(length: int, dim: int) -> Tensor:
    """Fixed 1-D sine-cosine position table.

    Row ``p`` is ``[sin(p * w_0..w_{D/2-1}), cos(p * w_0..w_{D/2-1})]`` with ``w_i = 10000**(-2i/D)``.

    Args:
        length: Number of positions.
        dim: Embedding width; must be even.

    Returns:
        Tensor of shape ``(1, length, dim)``, float32.
    """
    if dim % 2:
        raise ValueError(f"1-D sin-cos positions need an even width, got {dim}")
    angles = torch.arange(length, dtype=torch.float32)[:, None] * _frequencies(dim // 2)[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)[None]


def sincos_2d(rows: int, cols: int, dim: int) -> Tensor:
    """Fixed 2-D sine-cosine position table for a ``rows x cols`` token grid.

    The flattened token index ``t`` is split into a slow coordinate ``t // rows`` (ranging over ``cols``) and a fast
    coordinate ``t % rows``; the row of ``t`` is ``[sin(slow w), cos(slow w), sin(fast w), cos(fast w)]`` with
    ``w_i = 10000**(-4i/D)``. This is the layout of the released checkpoints (for a 273x1 spectrum grid the slow
    coordinate is 0 everywhere).

    Args:
        rows: Grid height in tokens.
        cols: Grid width in tokens.
        dim: Embedding width; must be divisible by 4.

    Returns:
        Tensor of shape ``(1, rows * cols, dim)``, float32.
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos positions need a width divisible by 4, got {dim}")
    frequencies = _frequencies(dim // 4)
    slow = torch.arange(cols, dtype=torch.float32).repeat_interleave(rows)[:, None] * frequencies[None, :]
    fast = torch.arange(rows, dtype=torch.float32).repeat(cols)[:, None] * frequencies[None, :]
    return torch.cat([slow.sin(), slow.cos(), fast.sin(), fast.cos()], dim=1)[None]


@functools.lru_cache(maxsize=128)
def _cpu_position_table(kind: str, shape: tuple[int, ...]) -> Tensor:
    # CPU also under a torch.device("meta") construction (from_pretrained); cached, so never an inference tensor.
    with torch.device("cpu"), torch.inference_mode(False):
        return sincos_1d(*shape) if kind == "1d" else sincos_2d(*shape)


def position_table(kind: str, *shape: int) -> Tensor:
    """A fresh CPU copy of a cached sin-cos table (``kind`` ``"1d"``: length, dim; ``"2d"``: rows, cols, dim).

    Building a model creates one table per modality; caching them keeps construction (and so ``from_pretrained``)
    from recomputing identical tables, and computing on the CPU avoids slow per-op dispatch under a meta device.
    """
    return _cpu_position_table(kind, tuple(shape)).clone()


def _sequence_positions(pos_emb: Tensor, padding: Tensor | None, length: int, max_position: int | None) -> Tensor:
    """Looks up 1-D positions that count only non-padded entries.

    Args:
        pos_emb: Position table, shape ``(1, P, D)``.
        padding: ``(B, L)`` bool, True where the entry is absent; ``None`` if every entry is present.
        length: Sequence length ``L``.
        max_position: Positions ``>= max_position`` are replaced by position 0 (decoder targets); ``None`` keeps all.

    Returns:
        ``(B or 1, L, D)`` positions, zero at padded entries.
    """
    if padding is None:
        positions = torch.arange(length, device=pos_emb.device)
        if max_position is not None:
            positions = positions.masked_fill(positions >= max_position, 0)
        return pos_emb[:, positions]
    positions = (~padding).cumsum(dim=1) - 1
    positions = positions.masked_fill(padding, 0)
    if max_position is not None:
        positions = positions.masked_fill(positions >= max_position, 0)
    return pos_emb[0][positions].masked_fill(padding[..., None], 0.0)


def token_table(vocab_size: int, dim: int, padding_idx: int | None = None) -> nn.Embedding:
    """``nn.Embedding(vocab_size, dim, padding_idx)``, without its random init when built on the meta device.

    ``AION.from_pretrained`` builds the model on the meta device and then assigns every weight from the checkpoint;
    there, ``nn.Embedding``'s default ``normal_`` runs PyTorch's Python reference implementation (once per table,
    42 tables in a 21-modality model) for values that are never used. On a real device nothing changes.
    """
    weight = torch.empty(vocab_size, dim)
    if weight.device.type == "meta":
        return nn.Embedding(vocab_size, dim, padding_idx=padding_idx, _weight=weight)
    return nn.Embedding(vocab_size, dim, padding_idx=padding_idx)


class GridTokenEncoderEmbedding(nn.Module):
    """Input embedding of a grid modality (image, spectrum, XP coefficients, scalar).

    Args:
        spec: Modality facts; ``spec.kind`` must be ``"grid"``.
        dim: Transformer width ``D``.
    """

    def __init__(self, spec: ModalitySpec, dim: int):
        super().__init__()
        self.spec = spec
        self.num_tokens = spec.num_tokens
        rows, cols = spec.grid_shape
        self.register_buffer("pos_emb", position_table("2d", rows, cols, dim))
        self.mod_emb = nn.Parameter(torch.zeros(1, 1, dim))
        self.token_emb = token_table(spec.vocab_size, dim)

    def forward(self, ids: Tensor, padding: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Embeds token ids.

        Args:
            ids: ``(B, n)`` int64 token ids, ``n = num_tokens``.
            padding: Ignored (grid positions do not depend on padding); accepted for a uniform interface.

        Returns:
            tokens: ``(B, n, D)`` token vectors.
            emb: ``(1, n, D)`` positional plus modality embedding (broadcast over the batch).
        """
        return self.token_emb(ids), self.pos_emb + self.mod_emb


class SequenceEncoderEmbedding(nn.Module):
    """Input embedding of a sequence modality (the catalog).

    Positions count only non-padded entries, so a sequence with holes is embedded as if it were compacted.

    Args:
        spec: Modality facts; ``spec.kind`` must be ``"sequence"``.
        dim: Transformer width ``D``.
    """

    def __init__(self, spec: ModalitySpec, dim: int):
        super().__init__()
        self.spec = spec
        self.register_buffer("pos_emb", position_table("1d", spec.position_table_length, dim))
        self.mod_emb = nn.Parameter(torch.zeros(1, 1, dim))
        self.token_emb = token_table(spec.vocab_size, dim, spec.padding_idx)

    def forward(self, ids: Tensor, padding: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Embeds a batch of sequences.

        Args:
            ids: ``(B, L)`` int64 token ids.
            padding: ``(B, L)`` bool, True where the entry is absent; ``None`` if none is.

        Returns:
            tokens: ``(B, L, D)`` token vectors.
            emb: ``(B or 1, L, D)`` positional plus modality embedding; padded entries get the modality embedding
            only.
        """
        positions = _sequence_positions(self.pos_emb, padding, ids.shape[1], max_position=None)
        return self.token_emb(ids), positions + self.mod_emb


class GridTokenDecoderEmbedding(nn.Module):
    """Query embedding and output head of a grid modality.

    The decoder never looks up target ids (its input is the shared mask token), but ``token_emb`` is kept because
    the checkpoints store it.

    Args:
        spec: Modality facts; ``spec.kind`` must be ``"grid"``.
        dim: Transformer width ``D``.
    """

    def __init__(self, spec: ModalitySpec, dim: int):
        super().__init__()
        self.spec = spec
        self.num_tokens = spec.num_tokens
        rows, cols = spec.grid_shape
        self.register_buffer("pos_emb", position_table("2d", rows, cols, dim))
        self.mod_emb = nn.Parameter(torch.zeros(1, 1, dim))
        self.token_emb = token_table(spec.vocab_size, dim)
        self.to_logits = nn.Linear(dim, spec.vocab_size, bias=False)

    def query_embedding(self, target_padding: Tensor | None = None) -> Tensor:
        """Returns the positional plus modality embedding of every target position, shape ``(1, n, D)``."""
        return self.pos_emb + self.mod_emb

    def forward(self, hidden: Tensor) -> Tensor:
        """Projects decoder outputs ``(..., D)`` to logits ``(..., vocab_size)``."""
        return self.to_logits(hidden)


class SequenceDecoderEmbedding(nn.Module):
    """Query embedding and output head of a sequence modality (the catalog).

    Args:
        spec: Modality facts; ``spec.kind`` must be ``"sequence"``.
        dim: Transformer width ``D``.
    """

    def __init__(self, spec: ModalitySpec, dim: int):
        super().__init__()
        self.spec = spec
        self.register_buffer("pos_emb", position_table("1d", spec.position_table_length, dim))
        self.mod_emb = nn.Parameter(torch.zeros(1, 1, dim))
        self.token_emb = token_table(spec.vocab_size, dim, spec.padding_idx)
        self.to_logits = nn.Linear(dim, spec.vocab_size, bias=False)

    def query_embedding(self, target_padding: Tensor) -> Tensor:
        """Positional plus modality embedding of target positions.

        Args:
            target_padding: ``(B, L)`` bool, True where the position is not a target.

        Returns:
            ``(B, L, D)``; positions at or past ``max_length`` use position 0, as in the reference.
        """
        positions = _sequence_positions(
            self.pos_emb, target_padding, target_padding.shape[1], max_position=self.spec.max_length
        )
        return positions + self.mod_emb

    def forward(self, hidden: Tensor) -> Tensor:
        """Projects decoder outputs ``(..., D)`` to logits ``(..., vocab_size)``."""
        return self.to_logits(hidden)


def build_encoder_embedding(spec: ModalitySpec, dim: int) -> GridTokenEncoderEmbedding | SequenceEncoderEmbedding:
    """Returns the input embedding module matching ``spec.kind``."""
    if spec.kind == GRID:
        return GridTokenEncoderEmbedding(spec, dim)
    return SequenceEncoderEmbedding(spec, dim)


def build_decoder_embedding(spec: ModalitySpec, dim: int) -> GridTokenDecoderEmbedding | SequenceDecoderEmbedding:
    """Returns the query embedding and output head matching ``spec.kind``."""
    if spec.kind == GRID:
        return GridTokenDecoderEmbedding(spec, dim)
    return SequenceDecoderEmbedding(spec, dim)
