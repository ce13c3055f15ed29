"""The codec interface (modality batch <-> token indices, as public stages) and its checkpoint I/O in the aion-base
hub layout."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import inspect
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aion_fast import hub
from aion_fast.codecs.registry import codec_class_for
from aion_fast.modalities import Modality
from aion_fast.quantizers import Quantizer
from aion_fast.tensor_utils import as_normal_tensor

#: ``torch.nn.init`` functions that only randomise weights (every one returns its tensor unchanged when skipped).
_RANDOM_INIT_FUNCTIONS = (
    "uniform_", "normal_", "trunc_normal_", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_",
    "kaiming_normal_", "orthogonal_", "sparse_",
)  # fmt: skip


@contextlib.contextmanager
def _skip_random_init():
    """Within the block, ``torch.nn.init``'s random initialisers leave tensors as allocated.

    Used while a codec is built only to receive a checkpoint's weights: every parameter and persistent buffer is then
    overwritten by ``load_state_dict`` (missing keys are an error), so drawing random weights first is wasted time
    (a third of loading a small codec). Deterministic initialisers (``zeros_``, ``ones_``, ``constant_``) still run.
    Not thread-safe: it swaps module attributes of ``torch.nn.init`` for the duration of the block.
    """
    saved = {name: getattr(nn.init, name) for name in _RANDOM_INIT_FUNCTIONS}
    try:
        for name in saved:
            setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, function in saved.items():
            setattr(nn.init, name, function)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


class Codec(nn.Module, ABC):
    """Turns a batch of one modality into int64 tokens and back, through six public stages.

    ``encode(x) = quantize(encode_latents(preprocess(x)))`` and
    ``decode(z) = postprocess(decode_latents(dequantize(z)))``; :meth:`preprocess` validates the raw batch (the one
    check of an encode) and :meth:`decode` the tokens. The value types between stages are codec-specific (each
    codec's methods state their shapes); ``encode_latents``/``decode_latents`` default to the identity (scalars).
    With autograd enabled, :meth:`preprocess`, :meth:`encode_latents`, :meth:`decode_latents` and :meth:`postprocess`
    are differentiable (training calls them); ``encode``/``decode`` run under ``torch.inference_mode``.
    Concrete codecs record their constructor arguments automatically (``config``), which is what
    ``save_pretrained`` writes to ``codecs/<modality name>/config.json``. Codecs never modify their inputs.
    """

    config: dict[str, Any]

    #: Name of the exportable encoder network (its export sub-folder, e.g. ``"image"``), None for codecs without one.
    network_name: str | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__:
            return
        init = cls.__init__
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self, *args, **kw):
            if "config" not in self.__dict__:  # the outermost constructor records the call
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                arguments = dict(bound.arguments)
                arguments.pop("self")
                extra = arguments.pop(
                    next((p.name for p in signature.parameters.values() if p.kind is p.VAR_KEYWORD), ""), {}
                )
                self.__dict__["config"] = _jsonable({**arguments, **extra})
            init(self, *args, **kw)

        cls.__init__ = recording_init

    # ------------------------------------------------------------------ interface

    @property
    @abstractmethod
    def modality(self) -> type[Modality]:
        """The modality class (or base class) this codec encodes."""

    @property
    @abstractmethod
    def quantizer(self) -> Quantizer:
        """The quantizer turning latents into indices."""

    def check_input(self, x: Modality) -> None:
        """Raises ``ValueError`` unless ``x`` is a batch of this codec's modality."""
        if not isinstance(x, self.modality):
            raise ValueError(
                f"{type(self).__name__} encodes {self.modality.__name__} batches, got {type(x).__name__}; "
                f"use the codec of that modality (CodecManager picks it for you)."
            )

    # ------------------------------------------------------------------ stages

    @abstractmethod
    def preprocess(self, x: Modality) -> Any:
        """Raw modality batch -> network input, after validating ``x`` (:meth:`check_input` and the codec's checks)."""

    def encode_latents(self, inputs: Any) -> Any:
        """Network input -> continuous latents, the quantizer's input (default: identity)."""
        return inputs

    def quantize(self, latents: Any) -> torch.Tensor:
        """Continuous latents -> int64 token indices, through :attr:`quantizer`."""
        return self.quantizer.encode(latents).long()

    def dequantize(self, tokens: torch.Tensor) -> Any:
        """Token indices -> dequantized latents, through :attr:`quantizer`."""
        return self.quantizer.decode(tokens)

    def decode_latents(self, latents: Any) -> Any:
        """Dequantized latents -> network output (default: identity)."""
        return latents

    @abstractmethod
    def postprocess(self, outputs: Any, **metadata: Any) -> Modality:
        """Network output -> modality batch (``metadata``: what :meth:`decode` was given, e.g. bands)."""

    # ------------------------------------------------------------------ composed

    def encode(self, x: Modality) -> torch.Tensor:
        """Tokenizes a batch: ``quantize(encode_latents(preprocess(x)))``.

        Returns:
            int64 tokens of shape (B, num_tokens).
        """
        with torch.inference_mode():
            tokens = self.quantize(self.encode_latents(self.preprocess(x)))
        return as_normal_tensor(tokens)

    def encode_batches(
        self, batches: Sequence[Modality], preprocessed: Sequence[Any] | None = None
    ) -> list[torch.Tensor]:
        """Tokens of several batches of this codec's modality, one tensor per batch, each equal to :meth:`encode`.

        Codecs override it where batches can share work (one network pass for spectra of several lengths; images
        already preprocessed by the DALI loader). ``preprocessed`` is per batch an optional codec-specific input
        (see :meth:`aion_fast.codecs.image.ImageCodec.encode_batches`); codecs without one ignore it.
        """
        return [self.encode(batch) for batch in batches]

    def check_tokens(self, z: torch.Tensor) -> None:
        """Raises ``ValueError`` unless ``z`` can be decoded (default: no check; codecs with a fixed token count
        check the shape)."""

    def decode(self, z: torch.Tensor, **metadata: Any) -> Modality:
        """Reconstructs a batch from (B, num_tokens) integer tokens: ``postprocess(decode_latents(dequantize(z)))``."""
        self.check_tokens(z)
        with torch.inference_mode():
            decoded = self.postprocess(self.decode_latents(self.dequantize(z.to(self.device))), **metadata)
        for field in dataclasses.fields(decoded):
            setattr(decoded, field.name, as_normal_tensor(getattr(decoded, field.name)))
        return decoded

    # ------------------------------------------------------------------ exportable encoder network

    def network_input(self, inputs: Any) -> torch.Tensor:
        """The tensor the exportable encoder network receives, from :meth:`preprocess`'s output."""
        raise ValueError(f"{type(self).__name__} has no exportable encoder network (network_name is None).")

    def encoder_network(self) -> nn.Module:
        """The module between :meth:`network_input` and the latents (parameters shared with the codec), for export."""
        raise ValueError(f"{type(self).__name__} has no exportable encoder network (network_name is None).")

    def network_example(self, batch: int = 2) -> torch.Tensor:
        """A random input of :meth:`encoder_network` with ``batch`` rows (for tracing)."""
        raise ValueError(f"{type(self).__name__} has no exportable encoder network (network_name is None).")

    def with_encoder_network(self, network: nn.Module) -> Codec:
        """A shallow copy of this codec (parameters shared; this codec unchanged) whose :meth:`encode_latents` runs
        ``network`` (e.g. an ONNX Runtime session) in place of :meth:`encoder_network`."""
        if self.network_name is None:
            raise ValueError(f"{type(self).__name__} has no exportable encoder network to replace.")
        patched = copy.copy(self)
        patched._modules = dict(self._modules)
        patched._parameters = dict(self._parameters)
        patched._buffers = dict(self._buffers)
        object.__setattr__(patched, "replaced_network", network)  # not a submodule: the state dict stays the codec's
        return patched

    def network(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The encoder network :meth:`encode_latents` runs: the replacement, else the codec's own."""
        replaced = self.__dict__.get("replaced_network")
        return self.encoder_network() if replaced is None else replaced

    @property
    def device(self) -> torch.device:
        """Device of the codec's parameters and buffers."""
        for tensor in (*self.parameters(), *self.buffers()):
            return tensor.device
        return torch.device("cpu")

    # ------------------------------------------------------------------ checkpoints

    @classmethod
    def remap_state_dict(cls, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Maps key names of older checkpoints to this class's names (identity by default)."""
        return state_dict

    @staticmethod
    def folder(modality: type[Modality]) -> str:
        """Checkpoint sub-folder of a modality's codec, relative to the checkpoint root."""
        return f"codecs/{modality.name}"

    @classmethod
    def check_modality(cls, modality: type[Modality]) -> None:
        """Checks that ``modality`` is tokenized by this codec class, before anything is read.

        Raises:
            ValueError: ``modality`` is not a modality class with a codec (the reference's type).
            TypeError: ``modality`` belongs to another codec class (e.g. ``ImageCodec`` asked for
                ``LegacySurveyCatalog``), as in the reference.
        """
        expected = codec_class_for(modality) if isinstance(modality, type) and issubclass(modality, Modality) else None
        if expected is None:
            raise ValueError(
                f"modality={modality!r} has no codec; pass a modality class such as aion_fast.modalities.Z "
                f"(see aion_fast.codecs.config.MODALITY_CODEC_MAPPING)."
            )
        if not issubclass(cls, expected):
            raise TypeError(
                f"{modality.__name__} is tokenized by {expected.__name__}, not {cls.__name__}; call "
                f"{expected.__name__}.from_pretrained(..., modality={modality.__name__}) (or use CodecManager)."
            )

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | os.PathLike,
        modality: type[Modality],
        device: str | torch.device | None = None,
        **hub_options: Any,
    ) -> Codec:
        """Loads the codec of ``modality`` from a checkpoint directory or hub id.

        Reads ``codecs/<modality.name>/config.json`` (constructor arguments) and ``model.safetensors``.

        Args:
            path_or_id: checkpoint directory or hub repository id.
            modality: the modality class whose codec to load.
            device: where to put the codec (default CPU).
            **hub_options: for a hub id, the reference's hub keywords (``revision``, ``cache_dir``, ``token``,
                ``local_files_only``, ``force_download``; see :func:`aion_fast.hub.resolve_file`).

        Raises:
            TypeError: ``modality`` belongs to another codec class (checked before any file is read).
            CheckpointNotFoundError: files missing locally and not reachable on the hub.
            ValueError: the config does not fit this codec class, or weights are missing/unexpected.
        """
        cls.check_modality(modality)
        hub.check_hub_options(hub_options)
        folder = cls.folder(modality)
        config = hub.read_config(path_or_id, f"{folder}/{hub.CONFIG_NAME}", **hub_options)
        hub.check_codec_config(config, f"{folder}/{hub.CONFIG_NAME}")
        try:
            with _skip_random_init():  # every parameter is loaded below (a missing one raises)
                codec = cls(**config)
        except TypeError as error:
            raise ValueError(f"{folder}/config.json does not fit {cls.__name__}: {error}") from error
        state = cls.remap_state_dict(hub.read_weights(path_or_id, f"{folder}/{hub.WEIGHTS_NAME}", **hub_options))
        result = codec.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"weights in {folder}/model.safetensors do not match {cls.__name__}: "
                f"missing {result.missing_keys[:10]}, unexpected {result.unexpected_keys[:10]}."
            )
        codec.source = str(path_or_id)
        if device is not None and torch.device(device).type != "cpu":  # built and loaded on the CPU already
            codec = codec.to(device)
        return codec.eval()

    def save_pretrained(self, directory: str | os.PathLike, modality: type[Modality] | None = None) -> Path:
        """Writes the codec under ``<directory>/codecs/<modality name>/`` (config.json + model.safetensors)."""
        modality = modality or self.modality
        return hub.write_checkpoint(Path(directory) / self.folder(modality), self.config, self.state_dict())
