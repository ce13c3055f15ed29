"""``aion_fast.generate``: posterior draws of a target modality given observed modalities (AION-1 paper §7.1)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from aion_fast.generate.roar import check_schedule, roar_generate, roar_schedule
from aion_fast.modalities import Modality, Scalar

__all__ = ["generate"]


def generate(
    model,
    codecs,
    inputs: Sequence[Modality] | Mapping[str, Tensor],
    target: type[Modality],
    num_samples: int = 1,
    *,
    decay: float = 0.9,
    schedule: Sequence[int] | None = None,
    max_steps: int | None = None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 0.0,
    seed: int = 0,
    object_ids: Tensor | None = None,
    input_mask: Mapping[str, Tensor] | None = None,
    **decode_options: Any,
) -> Modality:
    """Draws ``num_samples`` samples of ``target`` per object with ROAR and decodes them with the target's codec.

    Example::

        z = aion_fast.generate(model, codecs, inputs=[flux_g, flux_r, flux_i, flux_z], target=Z, num_samples=50)
        z.value  # (B, 50) redshift draws per object

    Args:
        model: An :class:`aion_fast.AION`.
        codecs: A :class:`aion_fast.codecs.CodecManager` (encodes ``inputs`` when they are modalities, decodes
            the draws).
        inputs: Modality instances describing the same ``B`` objects, or already tokenized inputs (token key ->
            ``(B, n)`` ids).
        target: The modality class to draw (e.g. ``aion_fast.modalities.Z``); must be a decoder output of ``model``.
        num_samples: Draws per object (>= 1).
        decay: ROAR decay ``r`` in [0, 1) of :func:`aion_fast.generate.roar_schedule` (ignored with ``schedule``).
        schedule: Explicit tokens per step, summing to the target's token count.
        max_steps: Optional cap on the number of steps of the decay schedule (the last one reveals the rest).
        temperature: Sampling temperature (>= 0; 0 is greedy: argmax).
        top_k: Keep the ``top_k`` most likely tokens (0: off).
        top_p: Nucleus mass in [0, 1] (0: off).
        seed: Random seed in [0, 2^64); together with ``object_ids`` it fixes every draw.
        object_ids: ``(B,)`` int64 ids keying each object's random stream (default ``arange(B)``); stable ids make
            an object's draws independent of how the catalogue is split into batches.
        input_mask: Optional token key -> ``(B, n)`` bool, True where an input token is absent.
        **decode_options: Passed to the target's codec ``decode`` (e.g. ``wavelength=`` for spectra, ``bands=`` for
            images); tensors with a leading ``B`` axis and at least 2 dims are repeated for the draws.

    Draws are limited to the ids the target's codec decodes (its codebook may be smaller than the model's
    vocabulary, e.g. ``tok_z``: 1025 logits, 1024 codes); the logits beyond it are masked before temperature,
    top-k and top-p.

    Returns:
        An instance of ``target`` whose tensor fields have shape ``(B, num_samples, ...)`` (e.g. ``Z.value``
        ``(B, S)``; ``DESISpectrum.flux`` ``(B, S, pixels)``). It is built from the codec's validated ``(B·S, ...)``
        output, reshaped; its own per-batch validation is not re-run on the extra axis.

    Raises:
        ValueError: Invalid arguments (target not an output of the model, num_samples < 1, decay outside [0, 1),
            top_p outside [0, 1], negative temperature or top_k, bad schedule); the message names the argument.
    """
    key = getattr(target, "token_key", None)
    if not (isinstance(target, type) and issubclass(target, Modality)) or not key:
        raise ValueError(f"target must be a modality class such as aion_fast.modalities.Z, got {target!r}")
    if key not in model.decoder_embeddings:
        raise ValueError(
            f"target {target.__name__} ({key}) is not a decoder output of this model (config 'domains_out' is "
            f"{list(model.config.domains_out)}); pick one of those"
        )
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples={num_samples!r} must be an integer >= 1")
    if not (isinstance(temperature, (int, float)) and temperature >= 0):
        raise ValueError(f"temperature={temperature!r} must be a number >= 0 (0 = greedy argmax)")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k={top_k!r} must be an integer >= 0 (0 = off)")
    if not (isinstance(top_p, (int, float)) and 0.0 <= top_p <= 1.0):
        raise ValueError(f"top_p={top_p!r} must lie in [0, 1] (0 = off)")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**64:
        raise ValueError(f"seed={seed!r} must be an integer in [0, 2^64)")
    num_positions = model.output_spec(key).num_tokens
    if schedule is not None:
        steps = check_schedule(schedule, num_positions)
    else:
        steps = roar_schedule(num_positions, decay=decay, max_steps=max_steps)

    if isinstance(inputs, Mapping):
        input_tokens = dict(inputs)
    else:
        inputs = list(inputs)
        if not inputs:
            raise ValueError("inputs is empty; give at least one observed modality to condition on")
        input_tokens = codecs.encode(*inputs)
    if key in input_tokens:
        raise ValueError(f"inputs include the target {target.__name__} ({key}); drop it from inputs")
    input_tokens = {k: v.to(model.device) for k, v in input_tokens.items()}

    # Only ids the target's codec can decode are drawn (tok_z: 1025 logits, 1024 redshift codes).
    num_codes = codecs.codec(target).quantizer.codebook_size
    tokens = roar_generate(
        model, input_tokens, key, num_samples, steps, input_mask=input_mask, temperature=temperature,
        top_k=top_k, top_p=top_p, seed=seed, object_ids=object_ids, num_codes=num_codes,
    )  # fmt: skip
    batch = tokens.shape[0]
    flat = tokens.reshape(batch * num_samples, -1)
    options = {
        name: value.repeat_interleave(num_samples, dim=0)
        if isinstance(value, Tensor) and value.ndim >= 2 and value.shape[0] == batch
        else value
        for name, value in decode_options.items()
    }
    decoded = codecs.decode({key: flat}, target, **options)
    return _with_sample_axis(decoded, batch, num_samples)


def _with_sample_axis(decoded: Modality, batch: int, samples: int) -> Modality:
    """The decoded ``(B·S, ...)`` modality with every batch-leading tensor field reshaped to ``(B, S, ...)``."""
    result = object.__new__(type(decoded))
    for field in dataclasses.fields(decoded):
        value = getattr(decoded, field.name)
        if isinstance(value, Tensor) and value.ndim >= 1 and value.shape[0] == batch * samples:
            trailing = value.shape[1:]
            if isinstance(decoded, Scalar) and decoded.num_tokens == 1 and tuple(trailing) == (1,):
                trailing = ()  # one value per draw: (B, S), not (B, S, 1)
            value = value.reshape(batch, samples, *trailing)
        object.__setattr__(result, field.name, value)
    return result
