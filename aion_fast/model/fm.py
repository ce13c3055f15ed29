"""The AION-1 encoder-decoder transformer (a 4M-style masked multimodal model).

:class:`AION` takes the reference's config dict and state-dict names, so reference checkpoints load unchanged and
checkpoints written here load into the reference. Its outputs match the reference's within fp32 rounding, with one
deliberate difference: ``num_encoder_tokens`` defaults to *all* given tokens (the reference silently keeps 256).

Sequence layout. Inputs are concatenated modality by modality in the order of ``input_dict``. Tokens flagged in
``input_mask`` (True = absent) are moved behind the present ones (stable order), zeroed, and hidden from attention;
``num_encoder_tokens`` then keeps the first tokens of that order (:mod:`aion_fast.model.sequence`).

Stages, public as 4M's sampler uses them: :meth:`AION.embed_input_sequence` (a :class:`TokenSequence`),
:meth:`AION.encode_sequence` (context and its key mask), :meth:`AION.embed_target_sequence`,
:meth:`AION.forward_decoder`, :meth:`AION.forward_logits`; the reference's tuple-returning ``embed_inputs`` /
``embed_targets`` wrap them. Inputs are validated once, at these entries (:mod:`aion_fast.model.validation`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from aion_fast import hub
from aion_fast.model import checkpoint as ckpt
from aion_fast.model import validation
from aion_fast.model.attention import AttentionMask, PackedLayout, as_attention_mask
from aion_fast.model.blocks import BlockOptions, DecoderBlock, EncoderBlock, LayerNorm
from aion_fast.model.config import AIONConfig
from aion_fast.model.embeddings import build_decoder_embedding, build_encoder_embedding
from aion_fast.model.modality_info import GRID, MODALITY_INFO, ModalitySpec
from aion_fast.model.sequence import TokenSequence, select_present_first
from aion_fast.precision import DEFAULT_PRECISION, resolve_precision

__all__ = ["AION", "MaskedPrediction", "TokenSequence", "build_decoder_attention_mask"]

_INIT_STD = 0.02


@dataclass
class MaskedPrediction:
    """Logits of the selected decoder targets of a masked-modeling step, with the ids they should predict.

    Within a token key, rows follow the decoder sequence row-major: object by object, each object's selected
    queries in decoder order (modalities in ``target_mask`` order, then position; a sequence query ``j`` predicts
    the token ``j + 1``).

    Attributes:
        logits: Token key -> ``(n_key, vocab_size)`` logits, one row per selected target of that key (``n_key`` may
            be 0: every key of ``target_mask`` is present so each output head takes part in every step).
        targets: Token key -> ``(n_key,)`` int64 target ids, aligned with ``logits``.
    """

    logits: dict[str, Tensor]
    targets: dict[str, Tensor]


def build_decoder_attention_mask(
    compressed: Tensor, mod_mask: Tensor, causal: bool, separate_modalities: bool
) -> Tensor:
    """Expands a compressed decoder attention mask into the full ``(B, M, M)`` mask, as the reference does.

    Query ``i`` may see key ``j`` when ``j < cumsum(compressed)[i]`` (or ``j <= i`` in causal mode), and, with
    ``separate_modalities``, only if both belong to the same modality.

    Args:
        compressed: ``(B, M)`` integer or bool counts.
        mod_mask: ``(B, M)`` modality ids (before padded positions are set to -1).
        causal: Causal mode.
        separate_modalities: Restrict attention to the query's own modality.

    Returns:
        ``(B, M, M)`` bool, True where the key is hidden from the query.
    """
    batch, length = compressed.shape
    keys = torch.arange(length, device=compressed.device)
    if causal:
        hidden = (keys[None, :] > keys[:, None]).expand(batch, length, length)
    else:
        hidden = keys[None, None, :] >= compressed.long().cumsum(dim=-1)[:, :, None]
    if separate_modalities:
        hidden = hidden | (mod_mask[:, None, :] != mod_mask[:, :, None])
    return hidden


class AION(nn.Module):
    """AION-1 transformer with the reference's config, state-dict names and methods.

    Args:
        config: Reference-style config dict (see :class:`AIONConfig`), e.g. the ``config.json`` of
            ``polymathic-ai/aion-base``.

    Raises:
        ValueError: Unknown config keys or invalid values.
    """

    #: Precision :func:`aion_fast.embed` runs the encoder in when none is given (``from_pretrained(precision=)``).
    precision: str = DEFAULT_PRECISION

    def __init__(self, config: Mapping[str, Any], *, initialize_weights: bool = True, encoder_only: bool = False):
        super().__init__()
        cfg = AIONConfig.from_dict(config)
        self.config = cfg
        #: Built without the decoder (:meth:`from_pretrained` ``encoder_only=True``): embeddings only.
        self.encoder_only = bool(encoder_only)
        self.modality_info: dict[str, ModalitySpec] = {
            key: MODALITY_INFO[key] for key in sorted(set(cfg.domains_in) | set(cfg.domains_out))
        }
        dim = cfg.dim

        self.encoder_embeddings = nn.ModuleDict(
            {key: build_encoder_embedding(MODALITY_INFO[key], dim) for key in cfg.domains_in}
        )
        decoder_keys = [] if encoder_only else cfg.domains_out
        self.decoder_embeddings = nn.ModuleDict(
            {key: build_decoder_embedding(MODALITY_INFO[key], dim) for key in decoder_keys}
        )

        options = BlockOptions(
            dim=dim,
            num_heads=cfg.num_heads,
            mlp_ratio=cfg.mlp_ratio,
            qkv_bias=cfg.qkv_bias,
            proj_bias=cfg.proj_bias,
            mlp_bias=cfg.mlp_bias,
            norm_bias=cfg.norm_bias,
            gated_mlp=cfg.gated_mlp,
            qk_norm=cfg.qk_norm,
            act_layer=cfg.activation_class(),
        )
        encoder_rates, decoder_rates = _drop_path_rates(cfg)
        self.encoder = nn.ModuleList([EncoderBlock(options, rate, cfg.use_act_checkpoint) for rate in encoder_rates])
        self.encoder_norm = LayerNorm(dim, bias=cfg.norm_bias)
        self.decoder_proj_context = nn.Linear(dim, dim)
        decoder_rates = [] if encoder_only else decoder_rates
        self.decoder = nn.ModuleList([DecoderBlock(options, rate, cfg.use_act_checkpoint) for rate in decoder_rates])
        self.decoder_norm = None if encoder_only else LayerNorm(dim, bias=cfg.norm_bias)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        if cfg.num_register_tokens > 0:
            self.register_tokens = nn.Parameter(torch.zeros(1, cfg.num_register_tokens, dim))
        else:
            self.register_tokens = None

        if initialize_weights:  # from_pretrained skips it: every weight is then read from the checkpoint
            self.init_weights()
        self.tie_modality_embeddings()

    def _require_decoder(self, what: str) -> None:
        """Raises the clear error of an encoder-only model asked to decode."""
        if self.encoder_only:
            raise RuntimeError(
                f"AION.{what} needs the decoder, but this model was loaded with encoder_only=True (embeddings only); "
                "load it with AION.from_pretrained(path) to predict, generate or save."
            )

    # ------------------------------------------------------------------------------------------------------------
    # Construction helpers

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return self.mask_token.device

    def tied_modality_keys(self) -> list[str]:
        """Token keys whose modality embedding is shared by the encoder and the decoder."""
        if not self.config.share_modality_embeddings:
            return []
        outputs = set(self.config.domains_out)
        return [key for key in self.config.domains_in if key in outputs]

    def tied_parameter_groups(self) -> list[tuple[str, str]]:
        """State-dict names that refer to one tensor, as ``(encoder name, decoder name)`` pairs."""
        return [
            (f"encoder_embeddings.{key}.mod_emb", f"decoder_embeddings.{key}.mod_emb")
            for key in self.tied_modality_keys()
        ]

    def tie_modality_embeddings(self) -> None:
        """Makes the decoder use the encoder's modality embedding Parameter for keys present on both sides."""
        if self.encoder_only:
            return
        for key in self.tied_modality_keys():
            self.decoder_embeddings[key].mod_emb = self.encoder_embeddings[key].mod_emb

    def init_weights(self) -> None:
        """Random initialization of the reference (MAE-style), for training from scratch.

        Linear layers get Xavier-uniform weights (the fused ``qkv``/``kv`` matrices as if Q, K, V were separate) and
        zero biases; norms get unit weights and zero biases; embeddings, modality embeddings, the mask token and the
        register tokens get N(0, 0.02). The sin-cos position buffers are fixed.
        """
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                fan_out, fan_in = module.weight.shape
                if name.endswith(".qkv"):
                    fan_out //= 3
                elif name.endswith(".kv"):
                    fan_out //= 2
                bound = math.sqrt(6.0 / float(fan_out + fan_in))
                nn.init.uniform_(module.weight, -bound, bound)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=_INIT_STD)
        for embedding in (*self.encoder_embeddings.values(), *self.decoder_embeddings.values()):
            nn.init.normal_(embedding.mod_emb, std=_INIT_STD)
        nn.init.normal_(self.mask_token, std=_INIT_STD)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=_INIT_STD)

    # ------------------------------------------------------------------------------------------------------------
    # Modality specs

    def input_spec(self, key: str) -> ModalitySpec:
        """The spec of encoder input ``key``.

        Raises:
            ValueError: ``key`` is unknown or not an input of this model (config ``domains_in``).
        """
        return validation.input_spec(key, self.encoder_embeddings, self.config.domains_in)

    def output_spec(self, key: str) -> ModalitySpec:
        """The spec of decoder output ``key``.

        Raises:
            ValueError: ``key`` is unknown or not an output of this model (config ``domains_out``).
            RuntimeError: The model was loaded ``encoder_only``.
        """
        self._require_decoder("forward")
        return validation.output_spec(key, self.decoder_embeddings, self.config.domains_out)

    # ------------------------------------------------------------------------------------------------------------
    # Encoder side

    def embed_input_sequence(
        self,
        input_dict: Mapping[str, Tensor],
        mask: Mapping[str, Tensor] | None = None,
        num_encoder_tokens: int | None = None,
    ) -> TokenSequence:
        """Embeds and arranges encoder inputs (what :meth:`embed_inputs` returns as a tuple).

        Args:
            input_dict: Token key -> ids of shape ``(B, n)`` or ``(B,)`` (one token per object), any integer dtype.
            mask: Optional token key -> bool ``(B, n)``, True where the token is absent (padding).
            num_encoder_tokens: Keep this many tokens (present ones first); default: all.

        Returns:
            The encoder sequence, register tokens first when the model has them.

        Raises:
            ValueError: Invalid inputs (the message names the token key and the fix).
        """
        checked = validation.check_input_tokens(input_dict, mask, self.input_spec, self.device)
        batch = checked[0][1].shape[0]
        tokens, embs, paddings, mod_ids = [], [], [], []
        for key, ids, padding in checked:
            token_vectors, emb = self.encoder_embeddings[key](ids, padding)
            tokens.append(token_vectors)
            embs.append(emb.expand(batch, -1, -1))
            paddings.append(ids.new_zeros(ids.shape, dtype=torch.bool) if padding is None else padding)
            mod_ids.append(torch.full((ids.shape[1],), MODALITY_INFO[key].id, dtype=torch.int16, device=self.device))
        has_padding = any(padding is not None for _, _, padding in checked)
        sequence = select_present_first(
            torch.cat(tokens, dim=1),
            torch.cat(embs, dim=1),
            torch.cat(paddings, dim=1) if has_padding else None,
            torch.cat(mod_ids).expand(batch, -1),
            num_encoder_tokens,
        )
        return self._prepend_register_tokens(sequence)

    def _prepend_register_tokens(self, sequence: TokenSequence) -> TokenSequence:
        if self.register_tokens is None:
            return sequence
        batch = sequence.tokens.shape[0]
        count = self.register_tokens.shape[1]
        registers = self.register_tokens.expand(batch, -1, -1).to(sequence.tokens.dtype)
        padding = sequence.padding
        if padding is not None:
            padding = torch.cat([padding.new_zeros(batch, count), padding], dim=1)
        return TokenSequence(
            tokens=torch.cat([registers, sequence.tokens], dim=1),
            emb=torch.cat([torch.zeros_like(registers), sequence.emb], dim=1),
            padding=padding,
            mod_ids=torch.cat([sequence.mod_ids.new_full((batch, count), -1), sequence.mod_ids], dim=1),
        )

    def embed_inputs(
        self,
        input_dict: Mapping[str, Tensor],
        mask: Mapping[str, Tensor] | None = None,
        num_encoder_tokens: int | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Embeds and arranges encoder inputs (arguments and errors as :meth:`embed_input_sequence`).

        Returns:
            encoder_tokens: ``(B, N, D)`` token vectors, zero where absent.
            encoder_emb: ``(B, N, D)`` positional plus modality embeddings, zero where absent.
            encoder_mask: ``(B, 1, N)`` bool, True where absent.
            mod_mask: ``(B, N)`` int16 modality ids, -1 where absent.
        """
        sequence = self.embed_input_sequence(input_dict, mask, num_encoder_tokens)
        return sequence.tokens, sequence.emb, sequence.full_padding()[:, None, :], sequence.mod_mask

    def encode_sequence(self, sequence: TokenSequence) -> tuple[Tensor, AttentionMask]:
        """Encoder blocks, final norm and context projection on an encoder sequence.

        Args:
            sequence: From :meth:`embed_input_sequence` (or built alike).

        Returns:
            context: ``(B, N, D)`` decoder context, projected encoder output plus ``sequence.emb``.
            key_mask: The prepared key-padding mask the encoder used, for the decoder's cross-attention
                (:meth:`forward_decoder`'s ``encoder_mask``).
        """
        key_mask = AttentionMask.from_key_padding(sequence.padding)
        return self.encode_embeddings(sequence.tokens, sequence.emb, key_mask), key_mask

    def encode_embeddings(
        self, encoder_tokens: Tensor, encoder_emb: Tensor, encoder_mask: Tensor | AttentionMask | None = None
    ) -> Tensor:
        """Runs the encoder on the outputs of :meth:`embed_inputs`.

        Args:
            encoder_tokens: ``(B, N, D)``.
            encoder_emb: ``(B, N, D)``.
            encoder_mask: ``(B, 1, N)`` or ``(B, N)`` bool, True where absent, or a prepared mask; ``None`` if all
                present.

        Returns:
            ``(B, N, D)`` decoder context: projected encoder output plus ``encoder_emb``.
        """
        if not isinstance(encoder_mask, AttentionMask):
            padding = None if encoder_mask is None else encoder_mask.reshape(encoder_mask.shape[0], -1)
            encoder_mask = AttentionMask.from_key_padding(padding)
        x = self.forward_encoder(encoder_tokens + encoder_emb, encoder_mask)
        return self.decoder_proj_context(x) + encoder_emb

    def encode(
        self,
        input_dict: Mapping[str, Tensor],
        input_mask: Mapping[str, Tensor] | None = None,
        num_encoder_tokens: int | None = None,
    ) -> Tensor:
        """Encodes tokens into the decoder context (what the reference's ``encode`` returns).

        Args:
            input_dict: Token key -> ids ``(B, n)`` or ``(B,)``.
            input_mask: Optional token key -> bool ``(B, n)``, True where absent.
            num_encoder_tokens: Keep this many tokens (present ones first); default: all of them.

        Returns:
            ``(B, N, D)``; rows follow :meth:`embed_inputs` (absent tokens last).
        """
        return self.encode_with_padding(input_dict, input_mask, num_encoder_tokens)[0]

    def encode_with_padding(
        self,
        input_dict: Mapping[str, Tensor],
        input_mask: Mapping[str, Tensor] | None = None,
        num_encoder_tokens: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Like :meth:`encode`, also returning which output rows are padding.

        Returns:
            context: ``(B, N, D)``.
            padding: ``(B, N)`` bool, True for rows of absent tokens.
        """
        sequence = self.embed_input_sequence(input_dict, input_mask, num_encoder_tokens)
        context, _ = self.encode_sequence(sequence)
        return context, sequence.full_padding()

    # ------------------------------------------------------------------------------------------------------------
    # Decoder side

    def embed_targets(
        self, target_mask: Mapping[str, Tensor], num_decoder_tokens: int | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Builds decoder queries for the requested target positions.

        Modalities are laid out in the order of ``target_mask`` (the reference shuffles them at random; with its
        default masks the order does not change any output). Grid targets are queried by the mask token; a sequence
        target of length ``L`` gives ``L - 1`` next-token queries.

        Args:
            target_mask: Token key -> bool ``(B, n)``, True where the position is *not* a target.
            num_decoder_tokens: Keep this many queries (targets first); default: all.

        Returns:
            decoder_tokens: ``(B, M, D)``.
            decoder_emb: ``(B, M, D)``.
            decoder_mask: ``(B, 1, M)`` bool, True where not a target.
            target_ids: ``(B, M)`` int64 (zeros: the values are unknown here).
            decoder_attention_mask: ``(B, M, M)`` bool, True where the key is hidden from the query.
            mod_mask: ``(B, M)`` int16 modality ids, -1 where not a target.
        """
        self._require_decoder("embed_targets")
        selected = self.embed_target_sequence(target_mask, num_decoder_tokens)
        batch, length = selected.tokens.shape[:2]
        compressed = torch.zeros(batch, length, dtype=torch.long, device=self.device)
        attention_mask = build_decoder_attention_mask(
            compressed, selected.mod_ids, self.config.decoder_causal_mask, self.config.decoder_sep_mask
        )
        target_ids = torch.zeros(batch, length, dtype=torch.long, device=self.device)
        decoder_mask = selected.full_padding()[:, None, :]
        return selected.tokens, selected.emb, decoder_mask, target_ids, attention_mask, selected.mod_mask

    def embed_target_sequence(
        self,
        target_mask: Mapping[str, Tensor],
        num_decoder_tokens: int | None = None,
        target_tokens: Mapping[str, Tensor] | None = None,
    ) -> TokenSequence:
        """Decoder queries of :meth:`embed_targets` as a sequence, optionally with the ids they predict.

        Args:
            target_mask: Token key -> bool ``(B, n)``, True where the position is *not* a target.
            num_decoder_tokens: Keep this many queries (targets first); default: all.
            target_tokens: Optional token key -> ``(B, n)`` ids; their targets become :attr:`TokenSequence.ids`.

        Returns:
            The decoder sequence (padding True where not a target).
        """
        self._require_decoder("embed_targets")
        pieces, batch = validation.check_target_mask(target_mask, self.output_spec, self.device)
        tokens, embs, masks, mod_ids, ids = [], [], [], [], []
        for key, spec, not_target in pieces:
            embedding = self.decoder_embeddings[key]
            if spec.kind == GRID:
                length = not_target.shape[1]
                tokens.append(self.mask_token.expand(batch, length, -1))
                embs.append(embedding.query_embedding().expand(batch, -1, -1))
                masks.append(not_target)
            else:
                length = not_target.shape[1] - 1
                # The reference feeds id 0 to every next-token query (the values are unknown at this point).
                tokens.append(embedding.token_emb.weight[0].expand(batch, length, -1))
                embs.append(embedding.query_embedding(not_target)[:, :-1])
                masks.append(not_target[:, 1:] | not_target[:, :-1])
            mod_ids.append(torch.full((length,), spec.id, dtype=torch.int16, device=self.device))
            if target_tokens is not None:
                ids.append(validation.target_ids(key, spec, target_tokens, not_target.shape, self.device))
        tokens = torch.cat(tokens, dim=1)
        emb = torch.cat(embs, dim=1)
        not_target = torch.cat(masks, dim=1)
        mod_ids = torch.cat(mod_ids).expand(batch, -1)
        ids = torch.cat(ids, dim=1) if target_tokens is not None else None
        return select_present_first(tokens, emb, not_target, mod_ids, num_decoder_tokens, ids)

    def decode_embeddings(
        self,
        context: Tensor,
        encoder_mask: Tensor | None,
        decoder_tokens: Tensor,
        decoder_emb: Tensor,
        decoder_attention_mask: Tensor | None,
    ) -> Tensor:
        """Runs the decoder (the reference's ``_decode``) on prepared tensors.

        Args:
            context: ``(B, N, D)`` from :meth:`encode_embeddings`.
            encoder_mask: ``(B, 1, N)`` or ``(B, N)`` bool, True where absent; ``None`` if all present.
            decoder_tokens: ``(B, M, D)`` from :meth:`embed_targets`.
            decoder_emb: ``(B, M, D)``.
            decoder_attention_mask: ``(B, M, M)`` bool, True where hidden; ``None`` for full attention.

        Returns:
            ``(B, M, D)`` normalized decoder outputs.
        """
        padding = None if encoder_mask is None else encoder_mask.reshape(encoder_mask.shape[0], -1)
        return self.forward_decoder(
            decoder_tokens + decoder_emb,
            context,
            AttentionMask.from_key_padding(padding),
            AttentionMask.from_hidden(decoder_attention_mask),
        )

    def forward(
        self,
        input_dict: Mapping[str, Tensor],
        target_modality: str | type | Sequence[str | type],
        input_mask: Mapping[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Predicts logits for every token of the target modalities.

        Args:
            input_dict: Token key -> ids ``(B, n)`` or ``(B,)``.
            target_modality: Token key(s) or modality class(es) with a ``token_key`` (e.g.
                ``aion.modalities.Z``); grid modalities only.
            input_mask: Optional token key -> bool ``(B, n)``, True where absent.

        Returns:
            Token key -> ``(B, num_tokens, vocab_size)`` logits.
        """
        targets = validation.check_targets(target_modality, self.output_spec)
        sequence = self.embed_input_sequence(input_dict, input_mask)
        context, cross_mask = self.encode_sequence(sequence)
        batch = context.shape[0]

        queries = torch.cat([self.decoder_embeddings[key].query_embedding() for key, _ in targets], dim=1)
        queries = (self.mask_token + queries).expand(batch, -1, -1)
        self_mask = self._decoder_self_mask(targets, batch)
        hidden = self.forward_decoder(queries, context, cross_mask, self_mask)

        logits = {}
        start = 0
        for key, count in targets:
            logits[key] = self.decoder_embeddings[key](hidden[:, start : start + count])
            start += count
        return logits

    # ------------------------------------------------------------------------------------------------------------
    # The reference's layer-level methods (4M's ``forward_encoder`` / ``forward_decoder`` / ``forward_logits``)

    def forward_encoder(self, x: Tensor, encoder_mask: Tensor | AttentionMask | None = None) -> Tensor:
        """Encoder blocks and final norm (no context projection), as the reference's ``forward_encoder``.

        Args:
            x: ``(B, N, D)`` encoder tokens plus embeddings (``encoder_tokens + encoder_emb`` of :meth:`embed_inputs`).
            encoder_mask: ``(B, 1, N)`` bool, True where absent (the mask :meth:`embed_inputs` returns); ``None``
                for none.

        Returns:
            ``(B, N, D)``.
        """
        mask = as_attention_mask(encoder_mask, "encoder_mask")
        for block in self.encoder:
            x = block(x, mask)
        return self.encoder_norm(x)

    def forward_decoder(
        self,
        y: Tensor,
        context: Tensor,
        encoder_mask: Tensor | AttentionMask | None,
        decoder_attention_mask: Tensor | AttentionMask | None,
    ) -> Tensor:
        """Decoder blocks and final norm, as the reference's ``forward_decoder``.

        Args:
            y: ``(B, M, D)`` decoder tokens plus embeddings.
            context: ``(B, N, D)`` decoder context (:meth:`encode_embeddings`).
            encoder_mask: ``(B, 1, N)`` bool, True where an encoder token is absent; ``None`` for none.
            decoder_attention_mask: ``(B, M, M)`` bool, True where the key is hidden (:meth:`embed_targets`).

        Returns:
            ``(B, M, D)``.
        """
        self._require_decoder("forward_decoder")
        self_mask = as_attention_mask(decoder_attention_mask, "decoder_attention_mask")
        cross_mask = as_attention_mask(encoder_mask, "encoder_mask")
        for block in self.decoder:
            y = block(y, context, self_mask, cross_mask)
        return self.decoder_norm(y)

    def forward_logits(
        self,
        y: Tensor,
        decoder_mod_dict: Mapping[str, Any],
        decoder_mod_mask: Tensor | None,
        return_all_logits: bool = False,
    ) -> dict[str, Tensor]:
        """Logits per output modality, as the reference's ``forward_logits``.

        Args:
            y: ``(B, M, D)`` decoder output (:meth:`forward_decoder`).
            decoder_mod_dict: Token keys to compute logits for (only the keys are read).
            decoder_mod_mask: ``(B, M)`` modality id of every row (:meth:`embed_targets`' ``mod_mask``); not read
                with ``return_all_logits``.
            return_all_logits: Logits of every row ``(B, M, vocab)`` instead of the key's rows ``(n_key, vocab)``.

        Returns:
            Token key -> logits.
        """
        logits = {}
        for key in decoder_mod_dict:
            spec = self.output_spec(key)
            head = self.decoder_embeddings[key]
            logits[key] = head(y) if return_all_logits else head(y[decoder_mod_mask == spec.id])
        return logits

    def adapt_decoder_attention_mask(self, decoder_attention_mask: Tensor, mod_mask: Tensor | None = None) -> Tensor:
        """The reference's expansion of a compressed ``(B, M)`` decoder mask into ``(B, M, M)`` (True = hidden),
        following this model's ``decoder_causal_mask`` and ``decoder_sep_mask`` (see
        :func:`build_decoder_attention_mask`; ``mod_mask`` is needed with ``decoder_sep_mask``)."""
        if self.config.decoder_sep_mask and mod_mask is None:
            raise ValueError("adapt_decoder_attention_mask needs mod_mask (B, M) when the config has decoder_sep_mask")
        if mod_mask is None:
            mod_mask = torch.zeros_like(decoder_attention_mask, dtype=torch.int16)
        return build_decoder_attention_mask(
            decoder_attention_mask, mod_mask, self.config.decoder_causal_mask, self.config.decoder_sep_mask
        )

    def share_modality_embeddings(self) -> None:
        """The reference's name of :meth:`tie_modality_embeddings`."""
        self.tie_modality_embeddings()

    def no_weight_decay(self) -> set[str]:
        """Parameter names to exempt from weight decay: none, as in the reference."""
        return set()

    def get_num_layers_encoder(self) -> int:
        """Number of encoder blocks."""
        return len(self.encoder)

    def get_num_layers_decoder(self) -> int:
        """Number of decoder blocks (0 for an ``encoder_only`` model)."""
        return len(self.decoder)

    def get_num_layers(self) -> int:
        """Encoder plus decoder blocks."""
        return self.get_num_layers_encoder() + self.get_num_layers_decoder()

    # ------------------------------------------------------------------------------------------------------------
    # Freezing (the reference's fine-tuning helpers): set ``requires_grad`` on groups of parameters.

    def _side_modules(self, side: str, embeddings: bool) -> list[nn.Module]:
        blocks, norm, emb = (
            (self.encoder, self.encoder_norm, self.encoder_embeddings)
            if side == "encoder"
            else (self.decoder, self.decoder_norm, self.decoder_embeddings)
        )
        return [m for m in (blocks, norm, emb if embeddings else None) if m is not None]

    def _set_requires_grad(self, modules: Sequence[nn.Module], flag: bool) -> None:
        for module in modules:
            for param in module.parameters():
                param.requires_grad_(flag)

    def _freeze_except(self, side: str, domains: str) -> None:
        self._set_requires_grad(self._side_modules(side, embeddings=False), False)
        frozen = set(domains.split("-"))
        embeddings = self.encoder_embeddings if side == "encoder" else self.decoder_embeddings
        for key, module in embeddings.items():
            if key in frozen:
                self._set_requires_grad([module], False)

    def freeze_encoder(self, freeze_embeddings: bool = True) -> None:
        """Freezes the encoder blocks and norm, and with ``freeze_embeddings`` the encoder embeddings.

        Modality embeddings shared with the decoder are one parameter, so they freeze on both sides.
        """
        self._set_requires_grad(self._side_modules("encoder", freeze_embeddings), False)

    def unfreeze_encoder(self, unfreeze_embeddings: bool = True) -> None:
        """Undoes :meth:`freeze_encoder`."""
        self._set_requires_grad(self._side_modules("encoder", unfreeze_embeddings), True)

    def freeze_decoder(self, freeze_embeddings: bool = True) -> None:
        """Freezes the decoder blocks and norm, and with ``freeze_embeddings`` the decoder embeddings."""
        self._set_requires_grad(self._side_modules("decoder", freeze_embeddings), False)

    def unfreeze_decoder(self, unfreeze_embeddings: bool = True) -> None:
        """Undoes :meth:`freeze_decoder`."""
        self._set_requires_grad(self._side_modules("decoder", unfreeze_embeddings), True)

    def freeze_encoder_except_specific_embeddings(self, frozen_embedding_domain: str) -> None:
        """Freezes the encoder blocks and norm and the embeddings of the ``-``-joined token keys given."""
        self._freeze_except("encoder", frozen_embedding_domain)

    def freeze_decoder_except_specific_embeddings(self, frozen_embedding_domain: str) -> None:
        """Freezes the decoder blocks and norm and the embeddings of the ``-``-joined token keys given."""
        self._freeze_except("decoder", frozen_embedding_domain)

    def freeze_params_except_specific_embeddings(self, frozen_embedding_domain: str) -> None:
        """Both of the above."""
        self._freeze_except("encoder", frozen_embedding_domain)
        self._freeze_except("decoder", frozen_embedding_domain)

    def freeze_shared_params(self) -> None:
        """Freezes the encoder and decoder blocks and norms, not the embeddings."""
        self.freeze_encoder(freeze_embeddings=False)
        self.freeze_decoder(freeze_embeddings=False)

    def unfreeze_shared_params(self) -> None:
        """Undoes :meth:`freeze_shared_params`."""
        self.unfreeze_encoder(unfreeze_embeddings=False)
        self.unfreeze_decoder(unfreeze_embeddings=False)

    def unfreeze_all(self) -> None:
        """Unfreezes the encoder and decoder sides with their embeddings."""
        self.unfreeze_encoder(unfreeze_embeddings=True)
        self.unfreeze_decoder(unfreeze_embeddings=True)

    # ------------------------------------------------------------------------------------------------------------
    # Training

    def predict_masked(
        self,
        tokens: Mapping[str, Tensor],
        input_mask: Mapping[str, Tensor],
        target_mask: Mapping[str, Tensor],
        num_encoder_tokens: int | None = None,
        num_decoder_tokens: int | None = None,
        packed: bool = False,
    ) -> MaskedPrediction:
        """One masked-modeling prediction: encode the inputs, decode the targets, return their logits and ids.

        Encoder side :meth:`embed_inputs` (``input_mask`` as ``mask``), decoder side :meth:`embed_targets` with the
        true ids. Under the reference's all-hidden decoder self-attention mask each query gets the value mean of
        its object's *selected* queries only, so padding rows change nothing (the reference would average them in);
        a causal decoder uses its causal mask.

        Args:
            tokens: Token key -> ``(B, n)`` ids for every key of both masks (any value where no token exists).
            input_mask: Token key -> ``(B, n)`` bool, True where the token is NOT an encoder input.
            target_mask: Token key -> ``(B, n)`` bool, True where the token is NOT a target.
            num_encoder_tokens, num_decoder_tokens: Token budgets (present inputs / targets first); default: all.
            packed: Run the blocks on packed variable-length sequences (flash-attn varlen on GPU when installed,
                else SDPA); the padded path's result up to rounding; non-causal decoders only.

        Returns:
            The logits and target ids per token key of ``target_mask``.

        Raises:
            ValueError: Invalid tokens or masks, a key missing from ``tokens``, or ``packed`` with a causal decoder.
        """
        self._require_decoder("predict_masked")
        validation.check_masked_arguments(tokens, input_mask)
        if packed and self.config.decoder_causal_mask:
            raise ValueError("packed=True supports non-causal decoders only (decoder_causal_mask=False, as AION-1)")
        encoder = self.embed_input_sequence({key: tokens[key] for key in input_mask}, input_mask, num_encoder_tokens)
        queries = self.embed_target_sequence(target_mask, num_decoder_tokens, tokens)
        query_valid = ~queries.full_padding()
        if packed:
            hidden = self._decode_packed(encoder, queries, query_valid)
        else:
            context, cross_mask = self.encode_sequence(encoder)
            if self.config.decoder_causal_mask:
                compressed = torch.zeros(queries.mod_ids.shape, dtype=torch.long, device=self.device)
                self_mask = AttentionMask.from_hidden(
                    build_decoder_attention_mask(compressed, queries.mod_ids, True, self.config.decoder_sep_mask)
                )
            else:
                self_mask = AttentionMask(uniform=True, uniform_keys=None if queries.padding is None else query_valid)
            hidden = self.forward_decoder(queries.tokens + queries.emb, context, cross_mask, self_mask)[query_valid]
        mod_ids = queries.mod_ids[query_valid]
        ids = queries.ids[query_valid]
        logits, targets = {}, {}
        for key in target_mask:
            rows = mod_ids == MODALITY_INFO[key].id
            logits[key] = self.decoder_embeddings[key](hidden[rows])
            targets[key] = ids[rows]
        return MaskedPrediction(logits, targets)

    def _decode_packed(self, encoder: TokenSequence, queries: TokenSequence, query_valid: Tensor) -> Tensor:
        """Encoder and decoder on packed sequences; returns ``(T_targets, D)`` rows in ``query_valid`` order."""
        encoder_valid = ~encoder.full_padding()
        lengths_in, lengths_out = encoder_valid.sum(dim=1), query_valid.sum(dim=1)
        encoder_mask = AttentionMask(packed=PackedLayout.from_lengths(lengths_in))
        context = self.encode_embeddings(encoder.tokens[encoder_valid][None], encoder.emb[encoder_valid][None],
                                         encoder_mask)  # fmt: skip
        self_mask = AttentionMask(uniform=True, packed=PackedLayout.from_lengths(lengths_out))
        cross_mask = AttentionMask(packed=PackedLayout.from_lengths(lengths_out, lengths_in))
        y = (queries.tokens + queries.emb)[query_valid][None]
        return self.forward_decoder(y, context, cross_mask, self_mask)[0]

    def _decoder_self_mask(self, targets: list[tuple[str, int]], batch: int) -> AttentionMask:
        """Decoder self-attention mask for :meth:`forward`'s queries (all positions are targets).

        The reference's compressed mask is all zeros there, so outside causal mode every key is hidden from every
        query and attention is the value mean; no ``(B, M, M)`` tensor is built for that case.
        """
        if not self.config.decoder_causal_mask:
            return AttentionMask(uniform=True)
        mod_ids = torch.cat(
            [
                torch.full((count,), MODALITY_INFO[key].id, dtype=torch.int16, device=self.device)
                for key, count in targets
            ]
        )
        compressed = torch.zeros(1, mod_ids.shape[0], dtype=torch.long, device=self.device)
        hidden = build_decoder_attention_mask(compressed, mod_ids[None], True, self.config.decoder_sep_mask)
        return AttentionMask.from_hidden(hidden.expand(batch, -1, -1))

    # ------------------------------------------------------------------------------------------------------------
    # Checkpoints

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | os.PathLike,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        encoder_only: bool = False,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
        force_download: bool = False,
        map_location: torch.device | str | None = None,
        precision: str | None = None,
    ) -> AION:
        """Loads a checkpoint laid out like ``polymathic-ai/aion-base``.

        Args:
            path_or_hub_id: Local directory with ``config.json`` and ``model.safetensors``, or a Hub repository id.
            device: Target device (default CPU).
            dtype: Cast floating-point weights to this dtype (default: as stored).
            revision, cache_dir, token, local_files_only, force_download: The reference's hub keywords
                (huggingface_hub's ``ModelHubMixin.from_pretrained``), for a Hub id only.
            map_location: The reference's name of ``device`` (used when ``device`` is not given).
            encoder_only: Build and read only what embeddings need (the decoder's weights, about half, are never
                read); ``embed``/``encode`` give the full model's values, decoding, training and saving raise.
            precision: ``"fp32"`` (default, exact) or ``"bf16"``: what :func:`aion_fast.embed` runs the encoder in
                (:mod:`aion_fast.precision`), kept as ``model.precision``.

        Returns:
            The model in eval mode.

        Raises:
            aion_fast.hub.CheckpointNotFoundError: A local file is missing, or the Hub is unreachable or lacks the
                repository (a ``FileNotFoundError``; the message explains the local directory layout).
            ValueError: Config or weights do not describe a valid model (missing/unexpected names are listed).
        """
        options = {
            "revision": revision, "cache_dir": cache_dir, "token": token, "local_files_only": local_files_only,
            "force_download": force_download,
        }  # fmt: skip
        device = torch.device(next((d for d in (device, map_location) if d is not None), "cpu"))
        if device.type == "cuda" and not torch.cuda.is_available():  # else safetensors fails with a pinning error
            raise ValueError(f"device={str(device)!r} but no CUDA GPU is visible (torch.cuda.is_available() is False); "
                             f"load with device='cpu'.")  # fmt: skip
        config_file = hub.resolve_file(path_or_hub_id, hub.CONFIG_NAME, **options)
        weights_file = hub.resolve_file(path_or_hub_id, hub.WEIGHTS_NAME, **options)
        wanted = None
        if encoder_only:  # the decoder's modality embeddings are read: one may be the only copy of a tied tensor
            wanted = lambda name: not name.startswith(ckpt.DECODER_PREFIXES) or name.endswith(".mod_emb")  # noqa: E731
        config, stored, metadata = ckpt.read_checkpoint(config_file, weights_file, device, wanted)
        with torch.device("meta"):
            model = cls(config, initialize_weights=False, encoder_only=encoder_only)
        tied = model.tied_parameter_groups()
        if encoder_only:
            stored, tied = ckpt.encoder_subset(stored, metadata, tied), []
        state_dict = ckpt.resolve_state_dict(model.state_dict(), stored, metadata, tied)
        model.load_state_dict(state_dict, strict=True, assign=True)
        model.tie_modality_embeddings()
        if dtype is not None:
            model.to(dtype=dtype)
        model.precision = resolve_precision(precision, device)
        return model.eval()

    def save_pretrained(
        self,
        directory: str | os.PathLike,
        *,
        config: Mapping[str, Any] | None = None,
        repo_id: str | None = None,
        push_to_hub: bool = False,
        model_card_kwargs: dict[str, Any] | None = None,
        **push_to_hub_kwargs: Any,
    ) -> os.PathLike:
        """Writes ``config.json`` and ``model.safetensors`` loadable here and by ``aion.AION.from_pretrained``.

        Keywords as huggingface_hub's ``ModelHubMixin.save_pretrained``: ``config`` must describe this model (else
        ValueError), ``push_to_hub`` also uploads (``repo_id`` default: the directory's name; ``**push_to_hub_kwargs``
        to :meth:`push_to_hub`), ``model_card_kwargs`` is accepted and ignored. Returns the directory path.
        """
        self._require_decoder("save_pretrained")
        own = self.config.to_dict()
        if config is not None and AIONConfig.from_dict(config).to_dict() != own:
            raise ValueError(
                "save_pretrained(config=...) differs from this model's config; leave config out (the model's own "
                "config is written)"
            )
        path = ckpt.write_checkpoint(directory, own, self.state_dict())
        if push_to_hub:
            self.push_to_hub(repo_id or Path(directory).name, **push_to_hub_kwargs)
        return path

    def push_to_hub(
        self,
        repo_id: str,
        *,
        config: Mapping[str, Any] | None = None,
        commit_message: str = "Push model using huggingface_hub.",
        private: bool | None = None,
        token: str | None = None,
        branch: str | None = None,
        create_pr: bool | None = None,
        allow_patterns: list[str] | str | None = None,
        ignore_patterns: list[str] | str | None = None,
        delete_patterns: list[str] | str | None = None,
        model_card_kwargs: dict[str, Any] | None = None,
    ) -> Any:
        """Uploads the checkpoint (``config.json`` + ``model.safetensors``) to a Hub repository, creating it if needed.

        Same keywords as the reference's (huggingface_hub's ``ModelHubMixin.push_to_hub``); needs the network and a
        token with write access.

        Returns:
            The commit information returned by ``huggingface_hub.HfApi.upload_folder``.
        """
        import tempfile

        from huggingface_hub import HfApi

        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id=repo_id, private=private, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as staging:
            self.save_pretrained(staging, config=config)
            return api.upload_folder(
                repo_id=repo_id, repo_type="model", folder_path=staging, commit_message=commit_message,
                revision=branch, create_pr=create_pr, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns,
                delete_patterns=delete_patterns,
            )  # fmt: skip


def _drop_path_rates(cfg: AIONConfig) -> tuple[list[float], list[float]]:
    if cfg.shared_drop_path:
        total = cfg.encoder_depth + cfg.decoder_depth
        encoder_rates = torch.linspace(0, cfg.drop_path_rate_encoder, total, device="cpu").tolist()
        decoder_rates = torch.linspace(0, cfg.drop_path_rate_decoder, total, device="cpu").tolist()
        return encoder_rates[: cfg.encoder_depth], decoder_rates[cfg.encoder_depth :]
    return (
        torch.linspace(0, cfg.drop_path_rate_encoder, cfg.encoder_depth, device="cpu").tolist(),
        torch.linspace(0, cfg.drop_path_rate_decoder, cfg.decoder_depth, device="cpu").tolist(),
    )
