"""Loading exported directories: ONNX Runtime-backed embedder and codecs, and the PyTorch INT8 format.

An exported directory (written by :func:`aion_fast.export.export`) holds::

    export.json                 format, precision, aion_fast version, files, calibration and accuracy summary
    config.json                 the transformer's config (as in a checkpoint)
    encoder.onnx                (format "onnx") token embeddings + encoder + pooling
    model.safetensors           (format "torch") the transformer weights, quantized when loaded
    codecs/<name>/...           every codec's config and weights (preprocessing, quantizers, decoders, scalars)
    codecs/image/network.onnx   (format "onnx") image codec network, INT8 when precision is int8
    codecs/spectrum/network.onnx

:func:`load_exported` returns ``(model, codecs)``: ``model`` works with :func:`aion_fast.embed` and exposes
``config``; ``codecs`` is a :class:`~aion_fast.codecs.CodecManager` whose image / spectrum codecs run their network
through ONNX Runtime.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from aion_fast.codecs.base import Codec
from aion_fast.codecs.manager import CodecManager
from aion_fast.modalities import Modality

__all__ = [
    "FORMAT_VERSION",
    "METADATA_NAME",
    "SUPPORTED",
    "ExportFormatError",
    "OnnxEmbedder",
    "OnnxCodecManager",
    "is_exported",
    "load_exported",
    "load_for_encoding",
    "onnx_backed_codec",
    "read_export_metadata",
]

METADATA_NAME = "export.json"
FORMAT_VERSION = 1
#: format -> precisions it supports.
SUPPORTED: dict[str, tuple[str, ...]] = {"onnx": ("fp32", "int8"), "torch": ("int8", "fp8")}
#: codec folder -> ONNX file of its network inside the exported directory.
CODEC_NETWORK_FILES = {"image": "codecs/image/network.onnx", "spectrum": "codecs/spectrum/network.onnx"}


class ExportFormatError(ValueError):
    """An exported directory, format or precision that this aion_fast cannot use."""


def check_format(fmt: str, precision: str) -> None:
    """Raises :class:`ExportFormatError` unless ``(fmt, precision)`` is supported."""
    if fmt not in SUPPORTED:
        raise ExportFormatError(f"format {fmt!r} is not supported; choose one of {sorted(SUPPORTED)}")
    if precision not in SUPPORTED[fmt]:
        raise ExportFormatError(
            f"precision {precision!r} is not supported for format {fmt!r}; choose one of {list(SUPPORTED[fmt])}"
        )


def is_exported(path: str | os.PathLike | None) -> bool:
    """True when ``path`` is a local directory holding an ``export.json``."""
    return path is not None and Path(path, METADATA_NAME).is_file()


def _major(version: str) -> str:
    return str(version).split(".")[0]


def read_export_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Reads and checks ``export.json``.

    Raises:
        ExportFormatError: missing file, another aion_fast major version, unknown format version, format or precision.
    """
    import aion_fast

    file = Path(path, METADATA_NAME)
    if not file.is_file():
        raise ExportFormatError(f"{path} is not an exported model: {METADATA_NAME} is missing (run aion-fast export)")
    metadata = json.loads(file.read_text())
    written = str(metadata.get("aion_fast_version", "?"))
    if _major(written) != _major(aion_fast.__version__):
        raise ExportFormatError(
            f"{path} was exported by aion_fast {written}, this is aion_fast {aion_fast.__version__}: exported models "
            f"load only within one major version ({_major(aion_fast.__version__)}.x); export the checkpoint again "
            "with this version (aion-fast export --model CHECKPOINT ...)"
        )
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ExportFormatError(
            f"{path}: export format_version {metadata.get('format_version')!r} is not {FORMAT_VERSION}; export again"
        )
    check_format(str(metadata.get("format")), str(metadata.get("precision")))
    return metadata


def _session(path: Path, threads: int | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    return ort.InferenceSession(str(path), options, providers=providers)


class OnnxEmbedder:
    """The embedding path of an exported AION model run by ONNX Runtime (works with :func:`aion_fast.embed`).

    Args:
        encoder_file: ``encoder.onnx`` (fp32 or INT8).
        config: The transformer's config dict.
        threads: ONNX Runtime intra-op threads (default: its own choice).
    """

    def __init__(self, encoder_file: str | os.PathLike, config: Mapping[str, Any], threads: int | None = None):
        from aion_fast.export.graphs import TokenLayout
        from aion_fast.model.config import AIONConfig

        self.config = AIONConfig.from_dict(dict(config))
        self.layout = TokenLayout(list(self.config.domains_in), self.config.dim)
        self.encoder_file = Path(encoder_file)
        self.session = _session(self.encoder_file, threads)
        self.device = torch.device("cpu")

    def eval(self) -> OnnxEmbedder:
        """No-op (inference only), for drop-in use where a module is expected."""
        return self

    def to(self, *args: Any, **kwargs: Any) -> OnnxEmbedder:
        """No-op: ONNX Runtime decides where the graph runs; outputs are CPU tensors."""
        return self

    def run(self, token_rows: Tensor, position_rows: Tensor, padding: Tensor) -> tuple[Tensor, Tensor]:
        """Runs the graph on prepared inputs; returns ``context (B, R+N, D)`` and ``pooled (B, D)`` CPU tensors."""
        context, pooled = self.session.run(
            None,
            {
                "token_rows": token_rows.numpy(),
                "position_rows": position_rows.numpy(),
                "padding": padding.numpy(),
            },
        )
        return torch.from_numpy(context), torch.from_numpy(pooled)

    def embed_tokens(
        self,
        tokens: Mapping[str, Tensor],
        pooling: str = "mean",
        input_mask: Mapping[str, Tensor] | None = None,
        num_encoder_tokens: int | None = None,
    ) -> Tensor:
        """What :func:`aion_fast.embed` returns for an AION model, computed by the exported graph.

        Returns:
            ``(B, D)`` for ``"mean"``; ``(B, N, D)`` for ``"none"`` (present tokens first).

        Raises:
            ValueError: Invalid tokens or masks, or objects with no present token (``"mean"``).
        """
        if pooling not in ("mean", "none"):
            raise ValueError(f"pooling must be 'mean' or 'none', got {pooling!r}")
        rows, positions, padding = self.layout.prepare(tokens, input_mask, num_encoder_tokens)
        empty = torch.nonzero((~padding).sum(dim=1) == 0).flatten().tolist()
        if empty and (pooling == "mean" or self.config.num_register_tokens == 0):
            raise ValueError(
                f"batch row(s) {empty} have no present token (every token is masked in input_mask, or "
                "num_encoder_tokens keeps none); drop those objects or give them at least one token"
            )
        context, pooled = self.run(rows, positions, padding)
        return pooled if pooling == "mean" else context


def _to_numpy(x: Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())


class _OnnxNetwork(nn.Module):
    """Runs one single-input ONNX graph on a tensor, returning a float32 tensor on the input's device."""

    def __init__(self, file: Path, threads: int | None = None):
        super().__init__()
        self.file = file
        self.session = _session(file, threads)
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: Tensor) -> Tensor:
        out = self.session.run(None, {self.input_name: _to_numpy(x)})[0]
        return torch.from_numpy(out).to(x.device)


def onnx_backed_codec(codec: Codec, network_file: str | os.PathLike, threads: int | None = None) -> Codec:
    """A copy of a codec with an exportable network (image, spectrum) whose encoder network runs the ONNX graph.

    Preprocessing, validation, quantizer and decoder are the codec's own (so tokens come from its FSQ / LFQ code);
    only :meth:`~aion_fast.codecs.base.Codec.encoder_network` is replaced. The caller's codec is unchanged.

    Raises:
        ValueError: ``codec`` has no exportable network (``network_name`` is None).
    """
    if codec.network_name is None:
        raise ValueError(
            f"only codecs with an exportable network (image, spectrum) run ONNX, got {type(codec).__name__}"
        )
    patched = codec.with_encoder_network(_OnnxNetwork(Path(network_file), threads))
    patched.onnx_network_file = str(network_file)
    return patched


class OnnxCodecManager(CodecManager):
    """A :class:`CodecManager` over an exported directory: image / spectrum codecs run their ONNX networks.

    Args:
        directory: the exported directory.
        device: where the PyTorch parts run and tokens are returned.
        threads: ONNX Runtime intra-op threads.
    """

    def __init__(self, directory: str | os.PathLike, device: str | torch.device = "cpu", threads: int | None = None):
        super().__init__(device=device, repo=directory)
        self.directory = Path(directory)
        self.threads = threads

    def load_codec(self, codec_class: type[Codec], modality_type: type[Modality]) -> Codec:
        """The codec of ``modality_type``, ONNX-backed where the directory has its network."""
        codec = super().load_codec(codec_class, modality_type)
        network = self.directory / CODEC_NETWORK_FILES.get(codec.network_name or "", "-")
        return onnx_backed_codec(codec, network, self.threads) if network.is_file() else codec


def _torch_model(directory: Path, metadata: dict[str, Any], device: torch.device) -> nn.Module:
    from aion_fast.export.torch_int8 import quantize_torch
    from aion_fast.model import AION

    model = AION.from_pretrained(directory, device=device)
    return quantize_torch(model, method=metadata["torch_method"], inplace=True)


def load_exported(
    path: str | os.PathLike, device: str | torch.device = "cpu", threads: int | None = None
) -> tuple[Any, CodecManager]:
    """Loads an exported directory.

    Args:
        path: directory written by :func:`aion_fast.export.export`.
        device: device of the PyTorch parts (codec preprocessing, quantizers; the whole model for format "torch").
        threads: ONNX Runtime intra-op threads.

    Returns:
        ``(model, codecs)``: ``model`` for :func:`aion_fast.embed` (an :class:`OnnxEmbedder` or a quantized
        :class:`~aion_fast.model.AION`); ``codecs`` a :class:`CodecManager` on ``device``.

    Raises:
        ExportFormatError: not an exported directory, another major version, unsupported format or precision.
    """
    from aion_fast.hub import read_config

    directory = Path(path)
    metadata = read_export_metadata(directory)
    device = torch.device(device)
    if metadata["format"] == "torch":
        return _torch_model(directory, metadata, device), CodecManager(device=device, repo=directory)
    model = OnnxEmbedder(directory / metadata["files"]["encoder"], read_config(directory), threads)
    return model, OnnxCodecManager(directory, device=device, threads=threads)


def load_for_encoding(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[Any, CodecManager]:
    """What ``aion-fast encode --model EXPORTED_DIR`` loads: see :func:`load_exported`."""
    return load_exported(path, device)
