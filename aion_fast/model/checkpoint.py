"""Transformer weights in the layout of ``polymathic-ai/aion-base`` (files are located by :mod:`aion_fast.hub`).

A checkpoint has ``config.json`` (the reference's config dict) and ``model.safetensors`` at its root; codec weights
live under ``codecs/<modality name>/`` and are not read here. Weights are read with :mod:`safetensors` only (no
pickle).

safetensors cannot store two names for one tensor, so the reference's ``save_pretrained`` keeps one name of every
tied tensor (the modality embeddings shared by encoder and decoder) and records ``{dropped name: kept name}`` in the
file's metadata. :func:`resolve_state_dict` restores the dropped names; :func:`shareable_state_dict` drops them the
same way when saving.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from aion_fast.hub import CONFIG_NAME, WEIGHTS_NAME

__all__ = [
    "read_checkpoint",
    "resolve_state_dict",
    "shareable_state_dict",
    "write_checkpoint",
]


def read_checkpoint(
    config_file: Path,
    weights_file: Path,
    device: torch.device | str = "cpu",
    wanted: Callable[[str], bool] | None = None,
) -> tuple[dict[str, Any], dict[str, Tensor], dict[str, str]]:
    """Reads a config and safetensors weights.

    Args:
        config_file: Path of ``config.json``.
        weights_file: Path of ``model.safetensors``.
        device: Where to place the tensors.
        wanted: Reads only the tensors whose name it accepts (the others are never read from disk); None = all.

    Returns:
        The config dict, the stored tensors by name, and the file's string metadata.
    """
    try:
        with open(config_file, encoding="utf-8") as handle:
            config = json.load(handle)
    except ValueError as error:
        raise ValueError(f"{config_file} is not a JSON config ({error}); download the checkpoint again.") from None
    tensors: dict[str, Tensor] = {}
    try:
        with safe_open(str(weights_file), framework="pt", device=str(device)) as weights:
            metadata = dict(weights.metadata() or {})
            for name in weights.keys():
                if wanted is None or wanted(name):
                    tensors[name] = weights.get_tensor(name)
    except Exception as error:  # noqa: BLE001 - safetensors raises its own SafetensorError for a torn file
        if isinstance(error, (OSError, ValueError)):
            raise
        raise ValueError(f"{weights_file} is not a complete safetensors file ({error}); download it again.") from None
    return config, tensors, metadata


#: State-dict prefixes of the decoder side, which an encoder-only model (``AION.from_pretrained(encoder_only=True)``)
#: neither builds nor reads; ``mask_token`` and ``decoder_proj_context`` (the encoder's context projection) stay.
DECODER_PREFIXES = ("decoder.", "decoder_embeddings.", "decoder_norm.")


def encoder_subset(
    stored: Mapping[str, Tensor], metadata: Mapping[str, str], tied_groups: Iterable[tuple[str, str]]
) -> dict[str, Tensor]:
    """The encoder side of a stored state dict, for an encoder-only model.

    A tied modality embedding may be stored under its decoder name only (safetensors keeps one name per shared
    tensor); the encoder name then takes that tensor, directly or through the metadata's alias.

    Args:
        stored: Tensors read from the checkpoint (decoder modality embeddings included, the rest of the decoder
            may be absent).
        metadata: The checkpoint's ``{dropped name: kept name}`` entries.
        tied_groups: ``(encoder name, decoder name)`` pairs of the full model.

    Returns:
        The stored tensors without decoder names, encoder twins filled in.
    """
    subset = {name: tensor for name, tensor in stored.items() if not name.startswith(DECODER_PREFIXES)}
    for encoder_name, decoder_name in tied_groups:
        if encoder_name in subset:
            continue
        for source in (decoder_name, metadata.get(encoder_name)):
            if source is not None and source in stored:
                subset[encoder_name] = stored[source]
                break
    return subset


def resolve_state_dict(
    expected: Mapping[str, Tensor],
    stored: Mapping[str, Tensor],
    metadata: Mapping[str, str],
    tied_groups: Iterable[tuple[str, ...]],
) -> dict[str, Tensor]:
    """Completes a stored state dict whose tied duplicates were dropped, and checks it against the model.

    A missing name is filled from the name the metadata maps it to, or else from a stored member of its tied group.

    Args:
        expected: The model's own state dict (names and shapes; values unused, may be on the meta device).
        stored: Tensors read from the checkpoint.
        metadata: The checkpoint's ``{dropped name: kept name}`` entries (other entries are ignored).
        tied_groups: Groups of names the model ties to one tensor.

    Returns:
        A state dict with exactly the expected names.

    Raises:
        ValueError: Names missing or unexpected after re-tying, shape mismatches, or tied copies that differ.
    """
    resolved = dict(stored)
    twins: dict[str, tuple[str, ...]] = {}
    for group in tied_groups:
        for name in group:
            twins[name] = group
        present = [name for name in group if name in stored]
        for first, other in zip(present, present[1:], strict=False):
            if stored[first].shape != stored[other].shape or not torch.equal(stored[first], stored[other]):
                raise ValueError(f"checkpoint stores different values for the tied tensors {first!r} and {other!r}")

    for name in expected:
        if name in resolved:
            continue
        alias = metadata.get(name)
        if alias in stored:
            resolved[name] = stored[alias]
            continue
        source = next((twin for twin in twins.get(name, ()) if twin in stored), None)
        if source is not None:
            resolved[name] = stored[source]

    missing = sorted(set(expected) - set(resolved))
    unexpected = sorted(set(resolved) - set(expected))
    if missing or unexpected:
        raise ValueError(
            "checkpoint does not match the model built from its config.json: "
            f"missing {missing or 'nothing'}; unexpected {unexpected or 'nothing'}"
        )
    mismatched = [
        f"{name}: checkpoint {tuple(resolved[name].shape)} vs model {tuple(expected[name].shape)}"
        for name in expected
        if resolved[name].shape != expected[name].shape
    ]
    if mismatched:
        raise ValueError("checkpoint tensor shapes do not match the model: " + "; ".join(mismatched))
    return resolved


def shareable_state_dict(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Drops all but one name of every group of tensors sharing storage, as safetensors requires.

    Within a group the alphabetically first name is kept (the reference keeps ``decoder_embeddings.*`` over
    ``encoder_embeddings.*`` the same way).

    Args:
        state_dict: A module's state dict, possibly with tied entries.

    Returns:
        The deduplicated, contiguous tensors and the ``{dropped name: kept name}`` metadata.
    """
    groups: dict[tuple[torch.device, int], list[str]] = {}
    for name, tensor in state_dict.items():
        key = (tensor.device, tensor.untyped_storage().data_ptr())
        groups.setdefault(key, []).append(name)
    kept: dict[str, Tensor] = {}
    dropped: dict[str, str] = {}
    for names in groups.values():
        first, *rest = sorted(names)
        shared_whole = all(
            state_dict[name].shape == state_dict[first].shape
            and state_dict[name].stride() == state_dict[first].stride()
            and state_dict[name].storage_offset() == state_dict[first].storage_offset()
            for name in rest
        )
        if not shared_whole:
            for name in names:
                kept[name] = state_dict[name].detach().clone().contiguous()
            continue
        kept[first] = state_dict[first].detach().contiguous()
        for name in rest:
            dropped[name] = first
    return kept, dropped


def write_checkpoint(directory: str | os.PathLike, config: Mapping[str, Any], state_dict: Mapping[str, Tensor]) -> Path:
    """Writes ``config.json`` and ``model.safetensors`` into ``directory`` (created if needed), via temporary names.

    Args:
        directory: Target directory.
        config: JSON-serializable config dict.
        state_dict: Tensors to store; tied entries are stored once with metadata naming the dropped aliases.

    Returns:
        The directory path.
    """
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    tensors, dropped = shareable_state_dict(state_dict)
    tensors = {name: tensor.to("cpu") for name, tensor in tensors.items()}
    partial_weights = target / (WEIGHTS_NAME + ".partial")
    partial_config = target / (CONFIG_NAME + ".partial")
    save_file(tensors, str(partial_weights), metadata={"format": "pt", **dropped})
    partial_config.write_text(json.dumps(dict(config), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(partial_weights, target / WEIGHTS_NAME)
    os.replace(partial_config, target / CONFIG_NAME)
    return target


def checkpoint_digest(directory: str | os.PathLike) -> str:
    """SHA-256 (16 hex digits) of every tensor of a checkpoint directory (transformer and codecs), by file and name.

    Hashes tensor contents rather than file bytes: safetensors writes its header's metadata in no fixed order.

    Raises:
        ValueError: A ``*.safetensors`` file is torn or not safetensors.
    """
    import hashlib

    from safetensors.numpy import load_file

    digest = hashlib.sha256()
    for path in sorted(Path(directory).rglob("*.safetensors")):
        try:
            tensors = load_file(str(path))
        except Exception as error:  # noqa: BLE001 - safetensors raises its own SafetensorError for a torn file
            if isinstance(error, OSError):
                raise
            raise ValueError(f"{path} is not a complete safetensors file ({error}); download it again.") from None
        for name, array in sorted(tensors.items()):
            digest.update(f"{path.relative_to(directory)}:{name}:{array.dtype}:{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()[:16]
