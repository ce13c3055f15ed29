"""Traceable modules that define what goes into the exported ONNX graphs, and the host-side token layout.

The runtime modules of :mod:`aion_fast.model` and :mod:`aion_fast.codecs` take data-dependent shortcuts (skip the
mask when nothing is padded, reuse workspaces, dispatch to C++ ops) that an exporter cannot trace. The modules here
hold *the same parameters* (no copy, no re-training) and run the same arithmetic with static control flow:

- :class:`EncoderGraph`: token embeddings (one lookup table for every input modality, rows offset per key), position
  plus modality embeddings, the encoder blocks (each block its own weights), the final norm, the context projection
  and mean pooling over present tokens. Inputs are integer row indices and a padding mask with dynamic batch and
  token axes; :class:`TokenLayout` builds them from a ``{token_key: ids}`` dict on the host (integer work only).

The codec networks are exported from the codecs' own ``encoder_network()`` modules
(:meth:`aion_fast.codecs.base.Codec.encoder_network`). Preprocessing (crop, clip, arcsinh, band placement, spectrum
resampling, normalisation token) and the FSQ / LFQ quantizers stay in PyTorch around the graphs, so tokens come from
the codec's own quantizer code.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aion_fast.model.modality_info import GRID, MODALITY_INFO

__all__ = ["EncoderGraph", "TokenLayout"]


class TokenLayout:
    """Where each input modality's token ids and positions live in :class:`EncoderGraph`'s lookup tables.

    Args:
        domains_in: The model's input token keys, in config order.
        dim: Model width (only recorded).
    """

    def __init__(self, domains_in: list[str], dim: int):
        self.domains_in = list(domains_in)
        self.dim = dim
        self.token_offset: dict[str, int] = {}
        self.position_offset: dict[str, int] = {}
        token_rows = position_rows = 0
        for key in self.domains_in:
            spec = MODALITY_INFO[key]
            self.token_offset[key] = token_rows
            self.position_offset[key] = position_rows
            token_rows += spec.vocab_size
            position_rows += spec.position_table_length
        self.num_token_rows = token_rows
        self.num_position_rows = position_rows

    def prepare(
        self,
        tokens: Mapping[str, Tensor],
        input_mask: Mapping[str, Tensor] | None = None,
        num_encoder_tokens: int | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Turns per-modality ids into the graph's inputs, present tokens first (as :meth:`AION.embed_inputs`).

        Args:
            tokens: Token key -> ids ``(B, n)`` or ``(B,)``, any integer dtype.
            input_mask: Optional token key -> bool ``(B, n)``, True where the token is absent.
            num_encoder_tokens: Keep at most this many tokens per object (present ones first); default: all.

        Returns:
            token_rows: ``(B, N)`` int64 rows of the token table.
            position_rows: ``(B, N)`` int64 rows of the position table.
            padding: ``(B, N)`` bool, True where absent.

        Raises:
            ValueError: Unknown or unsupported keys, wrong dtype/shape, ids out of range, mismatched batch sizes.
        """
        if not isinstance(tokens, Mapping) or not tokens:
            raise ValueError("tokens must be a non-empty dict mapping token keys to (B, n) integer tensors")
        input_mask = {} if input_mask is None else input_mask
        stray = [key for key in input_mask if key not in tokens]
        if stray:
            raise ValueError(f"input_mask has key(s) {stray} that are not in tokens; mask only given modalities")
        token_rows, position_rows, paddings, batch_sizes = [], [], [], {}
        for key, ids in tokens.items():
            ids = self._check_ids(key, ids)
            batch_sizes[key] = ids.shape[0]
            padding = self._check_mask(key, input_mask.get(key), ids.shape)
            spec = MODALITY_INFO[key]
            ids = ids.masked_fill(padding, 0)
            if spec.kind == GRID:
                positions = torch.arange(ids.shape[1]).expand_as(ids)
            else:
                positions = ((~padding).cumsum(dim=1) - 1).clamp(min=0)
            token_rows.append(ids + self.token_offset[key])
            position_rows.append(positions + self.position_offset[key])
            paddings.append(padding)
        if len(set(batch_sizes.values())) > 1:
            raise ValueError(f"all modalities must have the same batch size, got {batch_sizes}")
        token_rows_, position_rows_, padding_ = (torch.cat(t, dim=1) for t in (token_rows, position_rows, paddings))
        keep = token_rows_.shape[1]
        if num_encoder_tokens is not None:
            if (
                isinstance(num_encoder_tokens, bool)
                or not isinstance(num_encoder_tokens, int)
                or num_encoder_tokens < 1
            ):
                raise ValueError(f"num_encoder_tokens must be a positive integer or None, got {num_encoder_tokens!r}")
            keep = min(keep, num_encoder_tokens)
        if bool(padding_.any()):
            order = torch.sort(padding_.to(torch.uint8), dim=1, stable=True).indices[:, :keep]
            return token_rows_.gather(1, order), position_rows_.gather(1, order), padding_.gather(1, order)
        return token_rows_[:, :keep], position_rows_[:, :keep], padding_[:, :keep]

    def _check_ids(self, key: str, ids: object) -> Tensor:
        if key not in MODALITY_INFO:
            raise ValueError(f"unknown token key {key!r}; known keys: {sorted(MODALITY_INFO)}")
        if key not in self.token_offset:
            raise ValueError(
                f"{key!r} is not an input of this exported model (domains_in: {self.domains_in}); drop it from tokens"
            )
        if not isinstance(ids, Tensor) or ids.dtype == torch.bool or ids.is_floating_point() or ids.is_complex():
            raise ValueError(
                f"tokens[{key!r}] must be an integer torch.Tensor of token ids, got "
                f"{ids.dtype if isinstance(ids, Tensor) else type(ids).__name__}; pass the codec's token output"
            )
        if ids.ndim not in (1, 2) or ids.shape[0] == 0:
            raise ValueError(f"tokens[{key!r}] has shape {tuple(ids.shape)}; expected (B, n) or (B,) with B >= 1")
        ids = (ids if ids.ndim == 2 else ids[:, None]).to(device="cpu", dtype=torch.long)
        spec = MODALITY_INFO[key]
        if spec.kind == GRID and ids.shape[1] != spec.num_tokens:
            raise ValueError(f"tokens[{key!r}] has {ids.shape[1]} tokens per object; {key} must have {spec.num_tokens}")
        if spec.kind != GRID and not 1 <= ids.shape[1] <= spec.position_table_length:
            raise ValueError(
                f"tokens[{key!r}] has {ids.shape[1]} tokens per object; expected 1..{spec.position_table_length}"
            )
        low, high = (int(v) for v in torch.aminmax(ids))
        if low < 0 or high >= spec.vocab_size:
            raise ValueError(
                f"tokens[{key!r}] has ids in [{low}, {high}], outside [0, {spec.vocab_size}); pass ids from the "
                "matching codec and flag padding in input_mask"
            )
        return ids

    @staticmethod
    def _check_mask(key: str, mask: object, shape: torch.Size) -> Tensor:
        if mask is None:
            return torch.zeros(shape, dtype=torch.bool)
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.numel() != shape.numel():
            raise ValueError(f"input_mask[{key!r}] must be a bool tensor of shape {tuple(shape)} (True = absent)")
        return mask.reshape(shape).cpu()


def _attend(attn: nn.Module, x: Tensor, allowed: Tensor) -> Tensor:
    """The encoder self-attention of :class:`aion_fast.model.blocks.SelfAttention` with an always-present mask.

    Args:
        attn: A ``SelfAttention`` module (its ``qkv``, ``q_norm``, ``k_norm``, ``proj`` are used).
        x: ``(B, N, D)``.
        allowed: ``(B, 1, 1, N)`` bool, True where the key may be attended.

    Returns:
        ``(B, N, D)``.
    """
    batch, length, dim = x.shape
    q, k, v = attn.qkv(x).view(batch, length, 3, attn.num_heads, attn.head_dim).unbind(2)
    if attn.q_norm is not None:
        q, k = attn.q_norm(q), attn.k_norm(k)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=allowed)
    return attn.proj(out.transpose(1, 2).reshape(batch, length, dim))


class EncoderGraph(nn.Module):
    """Token embeddings + encoder + mean pooling of an :class:`~aion_fast.model.AION`, with static control flow.

    Args:
        model: The transformer; its parameters are shared, not copied (the two tables are built once).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        keys = list(model.config.domains_in)
        self.layout = TokenLayout(keys, model.config.dim)
        with torch.no_grad():
            self.register_buffer(
                "token_table", torch.cat([model.encoder_embeddings[k].token_emb.weight.float() for k in keys]).clone()
            )
            self.register_buffer(
                "position_table",
                torch.cat(
                    [(model.encoder_embeddings[k].pos_emb + model.encoder_embeddings[k].mod_emb)[0] for k in keys]
                ).float(),
            )
        self.register_tokens = model.register_tokens
        self.blocks = model.encoder
        self.norm = model.encoder_norm
        self.proj = model.decoder_proj_context

    def forward(self, token_rows: Tensor, position_rows: Tensor, padding: Tensor) -> tuple[Tensor, Tensor]:
        """Embeds, encodes and pools.

        Args:
            token_rows: ``(B, N)`` int64 rows of the token table (see :class:`TokenLayout`).
            position_rows: ``(B, N)`` int64 rows of the position table.
            padding: ``(B, N)`` bool, True where absent; every object needs at least one present token.

        Returns:
            context: ``(B, R + N, D)`` decoder context (R register tokens first), as :meth:`AION.encode`.
            pooled: ``(B, D)`` mean of the context over present rows (registers included), as ``embed``.
        """
        absent = padding[..., None]
        tokens = F.embedding(token_rows, self.token_table).masked_fill(absent, 0.0)
        emb = F.embedding(position_rows, self.position_table).masked_fill(absent, 0.0)
        present = ~padding
        if self.register_tokens is not None:
            batch, count = tokens.shape[0], self.register_tokens.shape[1]
            registers = self.register_tokens.expand(batch, -1, -1)
            tokens = torch.cat([registers, tokens], dim=1)
            emb = torch.cat([torch.zeros_like(registers), emb], dim=1)
            present = torch.cat([present.new_ones(batch, count), present], dim=1)
        allowed = present[:, None, None, :]
        x = tokens + emb
        for block in self.blocks:
            x = x + _attend(block.attn, block.norm1(x), allowed)
            x = x + block.mlp(block.norm2(x))
        context = self.proj(self.norm(x)) + emb
        weights = present.to(context.dtype)[..., None]
        pooled = (context * weights).sum(dim=1) / weights.sum(dim=1)
        return context, pooled
