"""Validation of the token batches given to :class:`aion_fast.model.AION`, done once at its public entries.

Each check raises ``ValueError`` naming the argument and key, the expected shape or range, and the fix.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from aion_fast.model.modality_info import GRID, MODALITY_INFO, ModalitySpec

__all__ = [
    "as_padding",
    "as_token_matrix",
    "check_input_tokens",
    "check_masked_arguments",
    "check_target_mask",
    "check_targets",
    "check_token_count",
    "check_token_range",
    "input_spec",
    "output_spec",
    "target_ids",
]


def input_spec(key: str, inputs: Collection[str], domains_in: Sequence[str]) -> ModalitySpec:
    """The spec of encoder input ``key`` among a model's ``inputs`` (config ``domains_in``)."""
    if key not in MODALITY_INFO:
        raise ValueError(f"unknown token key {key!r}; known keys: {sorted(MODALITY_INFO)}")
    if key not in inputs:
        raise ValueError(
            f"{key!r} is not an input of this model (config 'domains_in' is {list(domains_in)}); "
            "drop it from input_dict or load a model trained with it"
        )
    return MODALITY_INFO[key]


def output_spec(key: str, outputs: Collection[str], domains_out: Sequence[str]) -> ModalitySpec:
    """The spec of decoder output ``key`` among a model's ``outputs`` (config ``domains_out``)."""
    if key not in MODALITY_INFO:
        raise ValueError(f"unknown token key {key!r}; known keys: {sorted(MODALITY_INFO)}")
    if key not in outputs:
        raise ValueError(f"{key!r} is not an output of this model (config 'domains_out' is {list(domains_out)})")
    return MODALITY_INFO[key]


def check_input_tokens(
    input_dict: Mapping[str, Tensor],
    mask: Mapping[str, Tensor] | None,
    spec_of: Any,
    device: torch.device,
) -> list[tuple[str, Tensor, Tensor | None]]:
    """Validates encoder inputs.

    Args:
        input_dict: Token key -> ids ``(B, n)`` or ``(B,)``, any integer dtype.
        mask: Optional token key -> bool ``(B, n)``, True where absent.
        spec_of: ``spec_of(key) -> ModalitySpec`` for an input key (raises for keys the model does not take).
        device: Where the returned tensors live.

    Returns:
        ``(key, ids (B, n) int64 with absent ids set to 0, padding (B, n) bool or None when none is absent)`` per key.
    """
    if not isinstance(input_dict, Mapping) or not input_dict:
        raise ValueError("input_dict must be a non-empty dict mapping token keys to token tensors")
    mask = {} if mask is None else mask
    if not isinstance(mask, Mapping):
        raise ValueError("input_mask must be a dict mapping token keys to bool tensors (True = absent)")
    stray = [key for key in mask if key not in input_dict]
    if stray:
        raise ValueError(f"input_mask has key(s) {stray} that are not in input_dict; mask only given modalities")

    checked = []
    batch_sizes: dict[str, int] = {}
    for key, tokens in input_dict.items():
        spec = spec_of(key)
        ids = as_token_matrix(key, tokens)
        batch_sizes[key] = ids.shape[0]
        check_token_count(spec, ids.shape[1], where="input_dict")
        padding = as_padding(key, mask.get(key), tokens.shape, ids.shape)
        ids = ids.to(device=device, dtype=torch.long)
        if padding is not None:
            padding = padding.to(device)
            if bool(padding.any()):
                ids = ids.masked_fill(padding, 0)
            else:
                padding = None
        check_token_range(spec, ids)
        checked.append((key, ids, padding))
    if len(set(batch_sizes.values())) > 1:
        raise ValueError(f"all modalities must have the same batch size, got {batch_sizes}")
    return checked


def check_target_mask(
    target_mask: Mapping[str, Tensor], spec_of: Any, device: torch.device
) -> tuple[list[tuple[str, ModalitySpec, Tensor]], int]:
    """Validates decoder target masks (``spec_of(key)`` as in :func:`check_input_tokens`, for output keys).

    Returns:
        ``(key, spec, not_target (B, n) bool on device)`` per key, and the batch size ``B``.
    """
    if not isinstance(target_mask, Mapping) or not target_mask:
        raise ValueError("target_mask must be a non-empty dict mapping token keys to bool tensors")
    pieces = []
    batch_sizes = {}
    for key, not_target in target_mask.items():
        spec = spec_of(key)
        if not isinstance(not_target, Tensor) or not_target.dtype != torch.bool or not_target.ndim != 2:
            raise ValueError(f"target_mask[{key!r}] must be a bool tensor of shape (B, n), True = not a target")
        batch_sizes[key] = not_target.shape[0]
        check_token_count(spec, not_target.shape[1], where="target_mask")
        pieces.append((key, spec, not_target.to(device)))
    if len(set(batch_sizes.values())) > 1:
        raise ValueError(f"all target modalities must have the same batch size, got {batch_sizes}")
    batch = next(iter(batch_sizes.values()))
    if batch == 0:
        raise ValueError("target_mask describes an empty batch (B = 0)")
    return pieces, batch


def check_targets(target_modality: Any, spec_of: Any) -> list[tuple[str, int]]:
    """Validates :meth:`AION.forward`'s ``target_modality``; returns ``(key, num_tokens)`` per grid target."""
    if isinstance(target_modality, str) or not isinstance(target_modality, Sequence):
        target_modality = [target_modality]
    if not target_modality:
        raise ValueError("target_modality is empty; name at least one output token key, e.g. ['tok_z']")
    targets = []
    for target in target_modality:
        key = target if isinstance(target, str) else getattr(target, "token_key", None)
        if not isinstance(key, str):
            raise ValueError(f"target_modality entries must be token keys or modality classes, got {target!r}")
        spec = spec_of(key)
        if spec.kind != GRID:
            raise ValueError(
                f"{key!r} is a sequence modality; forward() predicts grid modalities only. "
                "Build its queries with embed_targets() and decode_embeddings() instead"
            )
        claimed = getattr(target, "num_tokens", spec.num_tokens)
        if claimed != spec.num_tokens:
            raise ValueError(f"{key!r} has {spec.num_tokens} tokens per object, but the target claims {claimed}")
        if any(key == seen for seen, _ in targets):
            raise ValueError(f"target_modality lists {key!r} twice")
        targets.append((key, spec.num_tokens))
    return targets


def check_masked_arguments(tokens: Any, input_mask: Any) -> None:
    """Validates :meth:`AION.predict_masked`'s ``tokens`` and ``input_mask`` containers."""
    if not isinstance(tokens, Mapping):
        raise ValueError("tokens must be a dict mapping token keys to (B, n) id tensors")
    if not isinstance(input_mask, Mapping) or not input_mask:
        raise ValueError("input_mask must be a non-empty dict mapping token keys to bool tensors (True = hidden)")
    missing = [key for key in input_mask if key not in tokens]
    if missing:
        raise ValueError(f"input_mask names {missing} but tokens has no such key; pass their ids in tokens")


def as_token_matrix(key: str, tokens: Any) -> Tensor:
    """Checks type, dtype and rank of one modality's ids and returns them as ``(B, n)``."""
    if not isinstance(tokens, Tensor):
        raise ValueError(
            f"input_dict[{key!r}] must be a torch.Tensor of token ids, got {type(tokens).__name__}; "
            "convert it with torch.as_tensor(...)"
        )
    if tokens.dtype == torch.bool or tokens.is_floating_point() or tokens.is_complex():
        raise ValueError(
            f"input_dict[{key!r}] has dtype {tokens.dtype}; token ids must be integers "
            "(pass the codec's token output, or cast with .long() if the values are exact integers)"
        )
    if tokens.ndim not in (1, 2):
        raise ValueError(
            f"input_dict[{key!r}] has shape {tuple(tokens.shape)}; expected (B, n) or (B,); "
            "flatten grids with tokens.reshape(B, -1)"
        )
    if tokens.shape[0] == 0:
        raise ValueError(f"input_dict[{key!r}] is an empty batch (B = 0); pass at least one object")
    return tokens if tokens.ndim == 2 else tokens[:, None]


def check_token_count(spec: ModalitySpec, count: int, where: str) -> None:
    """Grid modalities take exactly their token count; sequences between 1 and their position table's length."""
    if spec.kind == GRID:
        if count != spec.num_tokens:
            raise ValueError(
                f"{where}[{spec.key!r}] has {count} tokens per object; {spec.key} must have exactly "
                f"{spec.num_tokens} tokens per object (grid {spec.grid_shape[0]}x{spec.grid_shape[1]}); "
                "mark missing ones in the mask instead of dropping them"
            )
    elif not 1 <= count <= spec.position_table_length:
        raise ValueError(
            f"{where}[{spec.key!r}] has {count} tokens per object; {spec.key} sequences must have between 1 and "
            f"{spec.position_table_length} tokens (the model was trained on up to {spec.max_length})"
        )


def target_ids(
    key: str, spec: ModalitySpec, target_tokens: Mapping[str, Tensor], shape: torch.Size, device: torch.device
) -> Tensor:
    """The ids the queries of one target key predict: ``(B, n)`` for grids, ``(B, n - 1)`` next tokens for sequences."""
    if key not in target_tokens:
        raise ValueError(f"target_mask names {key!r} but tokens has no such key; pass its ids in tokens")
    ids = as_token_matrix(key, target_tokens[key])
    if ids.shape != shape:
        raise ValueError(
            f"tokens[{key!r}] has shape {tuple(ids.shape)} but target_mask[{key!r}] has shape {tuple(shape)}; "
            "the mask needs one entry per token"
        )
    ids = ids.to(device=device, dtype=torch.long)
    check_token_range(spec, ids)
    return ids if spec.kind == GRID else ids[:, 1:]


def as_padding(key: str, padding: Any, token_shape: torch.Size, ids_shape: torch.Size) -> Tensor | None:
    """Checks one modality's mask and returns it as ``(B, n)`` bool."""
    if padding is None:
        return None
    if not isinstance(padding, Tensor) or padding.dtype != torch.bool:
        raise ValueError(
            f"input_mask[{key!r}] must be a bool tensor (True = token absent), got "
            f"{padding.dtype if isinstance(padding, Tensor) else type(padding).__name__}"
        )
    if padding.shape != token_shape and padding.shape != ids_shape:
        raise ValueError(
            f"input_mask[{key!r}] has shape {tuple(padding.shape)} but input_dict[{key!r}] has shape "
            f"{tuple(token_shape)}; the mask needs one entry per token"
        )
    return padding.reshape(ids_shape)


def check_token_range(spec: ModalitySpec, ids: Tensor) -> None:
    """Token ids must lie in ``[0, vocab_size)`` of their modality."""
    low, high = (int(value) for value in torch.aminmax(ids))
    if low < 0 or high >= spec.vocab_size:
        raise ValueError(
            f"input_dict[{spec.key!r}] has token ids in [{low}, {high}], outside [0, {spec.vocab_size}) for "
            f"{spec.key}; pass ids from the matching codec, and flag padding (e.g. a codec pad value) in input_mask"
        )
