"""Locating checkpoint files: a local directory laid out like polymathic-ai/aion-base, or a Hugging Face hub id.

Layout::

    <root>/config.json                      transformer config (the dict ``AION(config)`` takes)
    <root>/model.safetensors                transformer weights
    <root>/codecs/<modality name>/config.json       codec constructor arguments
    <root>/codecs/<modality name>/model.safetensors codec weights

Nothing here touches the network unless ``path_or_id`` is not an existing directory. :func:`default_model` is the
checkpoint jobs use when none is given.
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


#: Keywords of the reference's ``from_pretrained`` (huggingface_hub's ``ModelHubMixin``) passed on to
#: ``hf_hub_download``; they only matter for a hub id (a local directory is read as it is).
HUB_OPTIONS = ("revision", "cache_dir", "token", "local_files_only", "force_download")


def check_hub_options(options: dict[str, Any]) -> None:
    """Raises ``TypeError`` (as for any unexpected keyword) for a keyword that is not a hub option."""
    unknown = sorted(set(options) - set(HUB_OPTIONS))
    if unknown:
        raise TypeError(
            f"from_pretrained() got unexpected keyword argument(s) {unknown}; hub options are {HUB_OPTIONS}"
        )


def resolve_file(path_or_id: str | os.PathLike, filename: str, **hub_options: Any) -> Path:
    """Returns a local path to ``filename`` inside a checkpoint given as a directory or a hub id.

    Args:
        path_or_id: local directory, or a hub repository id such as ``"polymathic-ai/aion-base"``.
        filename: path relative to the checkpoint root, e.g. ``"codecs/image/config.json"``.
        **hub_options: for a hub id, passed to ``huggingface_hub.hf_hub_download``: ``revision`` (branch, tag or
            commit), ``cache_dir`` (a cache laid out as ``models--<org>--<name>/snapshots/<commit>/...``),
            ``token``, ``local_files_only``, ``force_download``.

    Raises:
        CheckpointNotFoundError: the file is missing locally, or the hub cannot be reached / lacks it.
        TypeError: an unknown keyword.
    """
    check_hub_options(hub_options)
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

        options = {k: v for k, v in hub_options.items() if v is not None}
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, **options))
    except Exception as error:  # noqa: BLE001 - every hub failure gets the same advice
        raise CheckpointNotFoundError(
            f"could not fetch {filename!r} from the hub repository {repo_id!r} ({type(error).__name__}: {error}). "
            f"{repo_id!r} is not a local directory either. Download the checkpoint once (e.g. "
            f"`huggingface-cli download {repo_id} --local-dir ./aion-base`) and pass that local directory, "
            f"laid out with config.json + model.safetensors at the root and codecs/<modality name>/ below."
        ) from error


def read_config(path_or_id: str | os.PathLike, filename: str = CONFIG_NAME, **hub_options: Any) -> dict[str, Any]:
    """Reads a JSON config file of a checkpoint (``hub_options``: see :func:`resolve_file`).

    Raises:
        ValueError: the file is not JSON (torn download, not a config), named.
    """
    path = resolve_file(path_or_id, filename, **hub_options)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except ValueError as error:
        raise ValueError(f"{path} is not a JSON config ({error}); download the checkpoint again.") from None


def read_weights(
    path_or_id: str | os.PathLike, filename: str = WEIGHTS_NAME, **hub_options: Any
) -> dict[str, torch.Tensor]:
    """Reads a safetensors file of a checkpoint (no pickle involved) onto the CPU.

    Raises:
        ValueError: the file is not a complete safetensors file (torn download), named.
    """
    from safetensors.torch import load_file

    path = resolve_file(path_or_id, filename, **hub_options)
    try:
        return load_file(str(path), device="cpu")
    except Exception as error:  # noqa: BLE001 - safetensors raises its own SafetensorError
        if isinstance(error, OSError):
            raise
        raise ValueError(f"{path} is not a complete safetensors file ({error}); download it again.") from None


#: Largest accepted integer codec constructor arguments, by the name's ending (first match) or, else, ``"*"``.
#: Far above every released AION-1 codec; a damaged or hostile config.json fails before anything is allocated.
CODEC_CONFIG_BOUNDS: dict[str, int] = {
    "depths": 64, "depth": 64, "layers": 64, "compressions": 16, "downsamples": 16, "consecutive": 64,
    "levels": 1024, "dims": 8192, "dim": 8192, "channels": 8192, "codebook_size": 1 << 20,
    "reservoir_size": 1 << 24, "num_pixels": 1 << 17, "num_quantizers": 4096, "*": 1 << 24,
}  # fmt: skip


def check_codec_config(config: Any, what: str) -> None:
    """Checks every integer of a codec config (lists included) against :data:`CODEC_CONFIG_BOUNDS`.

    Raises:
        ValueError: naming the field, its value and the bound.
    """
    if not isinstance(config, dict):
        raise ValueError(f"{what} must hold a JSON object of constructor arguments, got {type(config).__name__}.")
    for name, value in config.items():
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and len(value) > 4096:
            raise ValueError(f"{what}: {name} lists {len(value)} values, over the bound 4096; the config is damaged.")
        bound = next((b for suffix, b in CODEC_CONFIG_BOUNDS.items() if str(name).endswith(suffix)),
                     CODEC_CONFIG_BOUNDS["*"])  # fmt: skip
        for item in values:
            if isinstance(item, int) and not isinstance(item, bool) and not -bound <= item <= bound:
                raise ValueError(f"{what}: {name} = {item} exceeds the bound {bound} of any AION codec; the config is "
                                 f"damaged or not an AION codec's.")  # fmt: skip


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


#: The trained demo model shipped in the package (built by scripts/train_demo.sh from configs/aion-demo.yaml).
BUNDLED_DEMO_MODEL = Path(__file__).parent / "data" / "demo_model"
#: How outputs name the bundled demo model.
DEMO_MODEL_LABEL = "aion_fast-demo (trained on the 27-object bundled sample; NOT AION-1 science quality)"


def default_model() -> tuple[Path, str]:
    """The checkpoint a job uses when no ``--model`` is given, and the label its outputs carry.

    Returns:
        ``(directory, label)`` of the bundled trained demo model.

    Raises:
        CheckpointNotFoundError: The package was installed without its demo model; pass a checkpoint explicitly.
    """
    if not (BUNDLED_DEMO_MODEL / WEIGHTS_NAME).is_file():
        raise CheckpointNotFoundError(
            f"the bundled demo model is missing from {BUNDLED_DEMO_MODEL} (an install without package data); pass "
            "--model DIR_OR_HUB_ID (e.g. polymathic-ai/aion-base)"
        )
    return BUNDLED_DEMO_MODEL, DEMO_MODEL_LABEL
