r"""ROAR (random-order autoregressive) generation of one target modality, all chains batched together.

Schedule (AION-1 paper §7.1, after 4M): with :math:`|Q_t|` target positions still unknown before step
:math:`t = 1, 2, \dots`, step :math:`t` reveals

.. math::  \rho_t = \max\bigl(1, \lfloor r^t |Q_t| \rfloor\bigr) \quad (\text{at most } |Q_t|)

positions, the first :math:`\rho_t` of a fresh random permutation of the unknown ones, sampled once from the
decoder's categorical outputs given the inputs plus everything revealed so far; when ``max_steps`` is given, step
``max_steps`` reveals the rest. The paper's formula is taken literally with :math:`t` counting from 1 (from 0 it
would reveal everything at once): a decay :math:`r` near 1 finishes in a few calls (r = 0.9: 5 calls for
:math:`|Q| = 273`, 6 for 576), :math:`r = 0` reveals one token per call (plain random-order autoregression). An
explicit list of per-step counts can be given instead.

Batching. The ``S = num_samples`` draws of ``B`` objects run as ``R = B·S`` chains, object-major (chain
``b·S + s``), in one decoder call per step. What does not change is computed once: the input modalities' token and
position embeddings (per object, not per chain), the target's query embeddings, and, before anything is revealed,
the encoder output (per object); when the first step reveals every position, the decoder too runs once per object
and its logits are shared by that object's chains (:func:`aion_fast.ops.roar_step` reads them per group).

Decoder self-attention follows the model's trained semantics, the same as :meth:`aion_fast.AION.forward`: with the
reference's compressed mask every key is hidden, so each query attends uniformly to the values of the step's queries
(see :mod:`aion_fast.model.fm`). A one-step generation at temperature 0 therefore equals the argmax of ``forward``.
The reference's ``GenerationSampler`` instead lets the step's queries attend to each other with softmax attention
(``decoder_attention_mask=None``); the two agree whenever a step queries one position (e.g. redshift).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from aion_fast.model.attention import AttentionMask
from aion_fast.model.modality_info import GRID
from aion_fast.model.sequence import TokenSequence
from aion_fast.ops.roar import MAX_STEPS, roar_step

__all__ = ["check_schedule", "roar_generate", "roar_schedule"]


def roar_schedule(num_positions: int, decay: float = 0.9, max_steps: int | None = None) -> list[int]:
    r"""Tokens revealed at each ROAR step: :math:`\rho_t = \max(1, \lfloor r^t |Q_t| \rfloor)`, t = 1, 2, ...

    Args:
        num_positions: :math:`|Q|`, the number of target positions (>= 1).
        decay: :math:`r \in [0, 1)`.
        max_steps: Optional cap on the number of steps; the last one reveals the rest.

    Returns:
        Per-step counts, each >= 1, summing to ``num_positions``; its length is the number of decoder calls.

    Raises:
        ValueError: ``num_positions < 1``, ``decay`` outside [0, 1) or ``max_steps < 1``.
    """
    if isinstance(num_positions, bool) or not isinstance(num_positions, int) or num_positions < 1:
        raise ValueError(f"num_positions={num_positions!r} must be an integer >= 1")
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"decay={decay!r} must lie in [0, 1) (the fraction decays as decay**t)")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
        raise ValueError(f"max_steps={max_steps!r} must be a positive integer or None")
    counts, unknown, step = [], num_positions, 1
    while unknown:
        if max_steps is not None and step == max_steps:
            reveal = unknown
        else:
            reveal = min(unknown, max(1, math.floor(decay**step * unknown)))
        counts.append(reveal)
        unknown -= reveal
        step += 1
    return counts


def check_schedule(schedule: Sequence[int], num_positions: int) -> list[int]:
    """Validates an explicit per-step schedule: positive integers summing to ``num_positions``.

    Raises:
        ValueError: The message gives the sum expected and the fix.
    """
    counts = list(schedule) if isinstance(schedule, Sequence) and not isinstance(schedule, str) else None
    if not counts or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in counts):
        raise ValueError(f"schedule must be a non-empty list of positive integers (tokens per step), got {schedule!r}")
    if sum(counts) != num_positions:
        raise ValueError(
            f"schedule {counts} reveals {sum(counts)} tokens but the target has {num_positions} positions; make the "
            "counts sum to it (or pass decay= for the paper's schedule)"
        )
    if len(counts) > MAX_STEPS - 1:
        raise ValueError(f"schedule has {len(counts)} steps; at most {MAX_STEPS - 1} are supported")
    return counts


@torch.no_grad()
def roar_generate(
    model,
    input_tokens: Mapping[str, Tensor],
    target_key: str,
    num_samples: int,
    schedule: Sequence[int],
    *,
    input_mask: Mapping[str, Tensor] | None = None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 0.0,
    seed: int = 0,
    object_ids: Tensor | None = None,
    num_codes: int | None = None,
) -> Tensor:
    """Draws ``num_samples`` token sets of a grid target per object with ROAR (no argument defaults hidden).

    Args:
        model: An :class:`aion_fast.AION` (non-causal decoder; every released checkpoint is).
        input_tokens: Token key -> ``(B, n)`` ids of the conditioning modalities (the target excluded).
        target_key: Token key of the target, a grid output of the model (e.g. ``"tok_z"``).
        num_samples: Draws per object, ``S >= 1``.
        schedule: Tokens revealed per step (see :func:`roar_schedule`, :func:`check_schedule`).
        input_mask: Optional token key -> ``(B, n)`` bool, True where an input token is absent.
        temperature, top_k, top_p: Sampler settings (see :func:`aion_fast.ops.roar_step`).
        seed: Generator seed in [0, 2^64).
        object_ids: ``(B,)`` int64 identifiers keying each object's random stream (default ``arange(B)``); pass
            stable ids (e.g. catalogue ids) to get the same draws for an object whatever the batch it is in.
        num_codes: Size of the target codec's codebook when it is smaller than the model's vocabulary (``tok_z``:
            1025 logits, 1024 redshift codes): only ids below it are drawn. The logits beyond it are dropped
            before temperature, top-k and top-p, which is the same as setting them to -inf (zero weight, never in
            the top-k or the nucleus), identically for every backend of :func:`aion_fast.ops.roar_step`.

    Returns:
        ``(B, S, L)`` int64 target tokens.

    Raises:
        ValueError: Invalid arguments (the message names the argument and the fix).
    """
    if model.config.decoder_causal_mask:
        raise ValueError("roar_generate needs a non-causal decoder (config decoder_causal_mask=False)")
    spec = model.output_spec(target_key)
    if spec.kind != GRID:
        raise ValueError(f"target {target_key!r} is a sequence modality; ROAR generates grid modalities only")
    if target_key in input_tokens:
        raise ValueError(f"{target_key!r} is both an input and the target; drop it from the inputs")
    length = spec.num_tokens
    schedule = check_schedule(schedule, length)
    if len(schedule) > 1 and target_key not in model.encoder_embeddings:
        raise ValueError(
            f"{target_key!r} is not an input of this model, so revealed tokens cannot be fed back; use a one-step "
            f"schedule [{length}]"
        )
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples={num_samples!r} must be an integer >= 1")

    fixed = model.embed_input_sequence(input_tokens, input_mask)  # (B, N, D) tokens and embeddings
    batch, device = fixed.tokens.shape[0], fixed.tokens.device
    samples = num_samples
    rows = batch * samples
    if object_ids is None:
        object_ids = torch.arange(batch, dtype=torch.int64)
    if not isinstance(object_ids, Tensor) or object_ids.shape != (batch,) or object_ids.dtype != torch.int64:
        raise ValueError(f"object_ids must be an int64 tensor of shape ({batch},), one id per object")
    chain_objects = object_ids.to(device).repeat_interleave(samples)
    chain_samples = torch.arange(samples, dtype=torch.int64, device=device).repeat(batch)

    tokens = torch.zeros(rows, length, dtype=torch.int64, device=device)
    absent = torch.ones(rows, length, dtype=torch.bool, device=device)
    revealed = torch.zeros(rows, length, dtype=torch.bool, device=device)
    vocab = spec.vocab_size
    if num_codes is not None:
        if isinstance(num_codes, bool) or not isinstance(num_codes, int) or num_codes < 1:
            raise ValueError(f"num_codes={num_codes!r} must be a positive integer (the target codec's codebook size)")
        vocab = min(vocab, num_codes)
    common = {"seed": int(seed), "temperature": float(temperature), "top_k": top_k, "top_p": float(top_p)}
    no_logits = torch.empty(rows, 0, vocab, device=device)
    no_positions = torch.empty(rows, 0, dtype=torch.int64, device=device)
    positions = roar_step(no_logits, no_positions, tokens, absent, revealed, chain_objects, chain_samples,
                          step=0, next_step=0, next_count=schedule[0], **common)  # fmt: skip

    queries_all = (model.mask_token + model.decoder_embeddings[target_key].query_embedding())[0]  # (L, D)
    uniform = AttentionMask(uniform=True)
    target_embedding = model.encoder_embeddings[target_key] if len(schedule) > 1 else None
    done = 0
    for step, count in enumerate(schedule):
        if step == 0:
            context, cross_mask = model.encode_sequence(fixed)
        else:
            context, cross_mask = _encode_with_revealed(model, target_embedding, fixed, tokens, absent, done, samples)
        if step == 0 and count == length:
            # Every chain queries every position: one decoder pass per object, logits shared by its S chains.
            positions = torch.arange(length, device=device).expand(rows, -1).contiguous()
            hidden = model.forward_decoder(queries_all.expand(batch, -1, -1), context, cross_mask, uniform)
        else:
            if step == 0:
                context = context.repeat_interleave(samples, dim=0)
                cross_mask = _repeat_mask(cross_mask, samples)
            hidden = model.forward_decoder(queries_all[positions], context, cross_mask, uniform)
        logits = model.forward_logits(hidden, {target_key: None}, None, return_all_logits=True)[target_key]
        logits = logits[..., :vocab].float().contiguous()
        next_count = schedule[step + 1] if step + 1 < len(schedule) else 0
        positions = roar_step(logits, positions, tokens, absent, revealed, chain_objects, chain_samples,
                              step=step, next_step=step + 1, next_count=next_count, **common)  # fmt: skip
        done += count
    return tokens.reshape(batch, samples, length)


def _repeat_mask(mask: AttentionMask, samples: int) -> AttentionMask:
    """Repeats a per-object key mask for the ``samples`` consecutive chains of each object."""
    if mask.allowed is None:
        return mask
    hidden = ~mask.allowed[:, 0, 0].repeat_interleave(samples, dim=0)  # (R, N) key padding
    return AttentionMask.from_key_padding(hidden)


def _encode_with_revealed(model, target_embedding, fixed: TokenSequence, tokens, absent, done, samples):
    """Encoder context and key mask of every chain: the fixed inputs plus the ``done`` target tokens revealed so far.

    Only the revealed target positions enter the encoder (all chains have revealed the same number).
    """
    rows = tokens.shape[0]
    order = torch.sort(absent.to(torch.uint8), dim=1, stable=True).indices[:, :done]  # revealed positions first
    vectors, emb = target_embedding(tokens.gather(1, order))  # (R, done, D), (1, L, D)
    emb = emb.expand(rows, -1, -1).gather(1, order[..., None].expand(-1, -1, emb.shape[-1]))
    enc_tokens = torch.cat([fixed.tokens.repeat_interleave(samples, dim=0), vectors], dim=1)
    enc_emb = torch.cat([fixed.emb.repeat_interleave(samples, dim=0), emb], dim=1)
    padding = None
    if fixed.padding is not None:
        padding = torch.cat([fixed.padding.repeat_interleave(samples, dim=0), absent.new_zeros(rows, done)], dim=1)
    mod_ids = torch.full(enc_tokens.shape[:2], -1, dtype=torch.int16, device=enc_tokens.device)  # not read
    return model.encode_sequence(TokenSequence(enc_tokens, enc_emb, padding, mod_ids))
