"""Locating checkpoint files: a local directory laid out like polymathic-ai/aion-base, or a Hugging Face hub id.

Layout::

    <root>/config.json                      transformer config (the dict ``AION(config)`` takes)
    <root>/model.safetensors                transformer weights
    <root>/codecs/<modality name>/config.json       codec constructor arguments
    <root>/codecs/<modality name>/model.safetensors codec weights

Nothing here touches the network unless ``path_or_id`` is not an existing directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

DEFAULT_REPO_ID = "polymathic-ai/aion-base"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class CheckpointNotFoundError(FileNotFoundError):
    """A checkpoint file could be found neither locally nor on the hub."""


def resolve_file(path_or_id: str | os.PathLike, filename: str) -> Path:
    """Returns a local path to ``filename`` inside a checkpoint given as a directory or a hub id.

    Args:
        path_or_id: local directory, or a hub repository id such as ``"polymathic-ai/aion-base"``.
        filename: path relative to the checkpoint root, e.g. ``"codecs/image/config.json"``.

    Raises:
        CheckpointNotFoundError: the file is missing locally, or the hub cannot be reached / lacks it.
    """
    root = Path(path_or_id).expanduser()
    if root.is_dir():
        candidate = root / filename
        if not candidate.is_file():
            raise CheckpointNotFoundError(
                f"{candidate} does not exist. A checkpoint directory must be laid out like polymathic-ai/aion-base: "
                f"config.json + model.safetensors at the root and codecs/<modality name>/config.json + "
                f"model.safetensors for each codec."
            )
        return candidate
    repo_id = str(path_or_id)
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id=repo_id, filename=filename))
    except Exception as error:  # noqa: BLE001 - every hub failure gets the same advice
        raise CheckpointNotFoundError(
            f"could not fetch {filename!r} from the hub repository {repo_id!r} ({type(error).__name__}: {error}). "
            f"{repo_id!r} is not a local directory either. Download the checkpoint once (e.g. "
            f"`huggingface-cli download {repo_id} --local-dir ./aion-base`) and pass that local directory, "
            f"laid out with config.json + model.safetensors at the root and codecs/<modality name>/ below."
        ) from error


def read_config(path_or_id: str | os.PathLike, filename: str = CONFIG_NAME) -> dict[str, Any]:
    """Reads a JSON config file of a checkpoint."""
    with open(resolve_file(path_or_id, filename)) as handle:
        return json.load(handle)


def read_weights(path_or_id: str | os.PathLike, filename: str = WEIGHTS_NAME) -> dict[str, torch.Tensor]:
    """Reads a safetensors file of a checkpoint (no pickle involved) onto the CPU."""
    from safetensors.torch import load_file

    return load_file(str(resolve_file(path_or_id, filename)), device="cpu")


def write_checkpoint(directory: str | os.PathLike, config: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> Path:
    """Writes ``config.json`` and ``model.safetensors`` into ``directory`` (created if needed).

    Tensors sharing storage are written once each under every name as separate copies, so any loader (ours or the
    reference's) finds every key. Files are written to temporary names and renamed, so a crash never leaves a
    half-written checkpoint.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in state_dict.items()}
    tmp_weights = directory / (WEIGHTS_NAME + ".tmp")
    save_file(tensors, str(tmp_weights), metadata={"format": "pt"})
    tmp_config = directory / (CONFIG_NAME + ".tmp")
    tmp_config.write_text(json.dumps(config, indent=2, sort_keys=True))
    os.replace(tmp_weights, directory / WEIGHTS_NAME)
    os.replace(tmp_config, directory / CONFIG_NAME)
    return directory
