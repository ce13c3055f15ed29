"""CodecManager: loads each modality's codec once from a checkpoint and tokenizes / reconstructs batches."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
from pathlib import Path
from typing import Any

import torch

from aion_fast.codecs.base import Codec
from aion_fast.codecs.registry import codec_class_for
from aion_fast.hub import DEFAULT_REPO_ID
from aion_fast.modalities import Modality
from aion_fast.precision import precision_context, resolve_precision
from aion_fast.tensor_utils import as_normal_tensor


class ModalityTypeError(TypeError):
    """An object is not a modality batch, or no codec exists for its type."""


class TokenKeyError(ValueError):
    """The tokens dict lacks the key of the modality to decode."""


class CodecManager:
    """Tokenizes modality batches with the codecs of one checkpoint.

    Each codec is loaded on first use, moved to ``device`` once and kept there; image modalities share the image
    codec and spectrum modalities the spectrum codec, as in the checkpoint layout.

    Args:
        device: where codecs run and tokens are returned.
        repo: checkpoint directory laid out like polymathic-ai/aion-base, or a hub id (default: the hub's
            ``polymathic-ai/aion-base``).
        precision: ``"fp32"`` (default: the exact path, tokens equal the reference's) or ``"bf16"``: the codec
            networks under bf16 autocast, quantization in float32 (:mod:`aion_fast.precision`).
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        repo: str | os.PathLike = DEFAULT_REPO_ID,
        precision: str | None = None,
    ):
        if isinstance(device, (str, os.PathLike)) and Path(device).is_dir():
            raise ValueError(
                f"CodecManager got a directory {str(device)!r} as device; pass it as repo=... "
                f"(CodecManager(repo='{device}', device='cpu'))."
            )
        self.device = torch.device(device)
        self.repo = repo
        self.precision = resolve_precision(precision, self.device)
        self._codecs: dict[tuple[type[Codec], str], Codec] = {}
        # The reference's cached loader by modality class (its tests call ``_load_codec.cache_info()`` and
        # ``.cache_clear()``), here one cache per manager. Clearing it keeps the loaded codecs (``_codecs``, shared by
        # the modalities of one checkpoint folder), as the reference keeps them in its second, per-class cache.
        self._load_codec = functools.lru_cache(maxsize=None)(self._load_codec_uncached)

    def codec(self, modality_type: type[Modality]) -> Codec:
        """Returns the (cached) codec of a modality class, loading it on first use.

        Raises:
            ModalityTypeError: ``modality_type`` is not a modality class with a codec (a ``TypeError``).
        """
        return self._load_codec(modality_type)

    def _load_codec_uncached(self, modality_type: type[Modality]) -> Codec:
        if not (isinstance(modality_type, type) and issubclass(modality_type, Modality)):
            raise ModalityTypeError(f"expected a modality class such as DESISpectrum, got {modality_type!r}.")
        codec_class = codec_class_for(modality_type)
        if codec_class is None:
            raise ModalityTypeError(f"no codec is defined for modality {modality_type.__name__}.")
        key = (codec_class, codec_class.folder(modality_type))
        if key not in self._codecs:
            self._codecs[key] = self.load_codec(codec_class, modality_type)
        return self._codecs[key]

    def load_codec(self, codec_class: type[Codec], modality_type: type[Modality]) -> Codec:
        """Loads (uncached) the codec of ``modality_type`` from :attr:`repo`; subclasses override it to adapt
        codecs as they are loaded (e.g. :class:`aion_fast.export.runtime.OnnxCodecManager`)."""
        return codec_class.from_pretrained(self.repo, modality=modality_type, device=self.device)

    def missing_codec(self, modality_type: type[Modality]) -> str | None:
        """None when the checkpoint holds a codec for ``modality_type`` (nothing is loaded), else the reason it
        does not (no codec class for the modality, or no ``codecs/<name>/config.json`` in the checkpoint)."""
        from aion_fast.hub import CheckpointNotFoundError, resolve_file

        codec_class = codec_class_for(modality_type)
        if codec_class is None:
            return f"no codec is defined for {modality_type.__name__}"
        if any(key[0] is codec_class and key[1] == codec_class.folder(modality_type) for key in self._codecs):
            return None
        try:
            resolve_file(self.repo, f"{codec_class.folder(modality_type)}/config.json")
        except CheckpointNotFoundError:
            return f"the checkpoint has no {codec_class.folder(modality_type)}/config.json"
        return None

    @torch.no_grad()
    def encode(self, *modalities: Modality) -> dict[str, torch.Tensor]:
        """Tokenizes several modality batches describing the same objects.

        Args:
            *modalities: modality instances, at most one per modality type, all with the same batch size.

        Returns:
            dict token_key -> int64 tokens on ``self.device``.

        Raises:
            ValueError: two inputs of one modality (the reference silently keeps only the last one), or
                batch sizes that differ.
        """
        tokens: dict[str, torch.Tensor] = {}
        batch_sizes: dict[str, int] = {}
        for modality in modalities:
            if not isinstance(modality, Modality):
                raise ModalityTypeError(f"CodecManager.encode takes modality instances, got {type(modality).__name__}.")
            key = modality.token_key
            if key in tokens:
                raise ValueError(
                    f"two inputs of modality {type(modality).__name__} ({key}) were given; concatenate them into "
                    f"one batch, or call encode once per batch."
                )
            batch_sizes[type(modality).__name__] = modality.batch_size
            codec = self._load_codec(type(modality))
            with precision_context(self.precision, codec.device):
                tokens[key] = as_normal_tensor(codec.encode(modality).to(self.device))
        if len(set(batch_sizes.values())) > 1:
            raise ValueError(
                f"modalities describe different numbers of objects {batch_sizes}; give the same objects in the same "
                f"order for every modality (use input masks for missing ones)."
            )
        return tokens

    def encode_batches(self, batches: list[Modality], preprocessed: list[Any] | None = None) -> list[torch.Tensor]:
        """Tokens of several batches of ONE modality (e.g. spectra of different lengths), one tensor per batch.

        Each equals ``encode(batch)[token_key]``; the codec shares work across batches where it can (one network pass
        for spectra; DALI-preprocessed images enter after preprocessing, see ``ImageCodec.encode_batches``).

        Raises:
            ValueError: the batches are of different modalities, or ``preprocessed`` has another length.
        """
        kinds = {type(batch) for batch in batches}
        if len(kinds) != 1 or not isinstance(batches[0], Modality):
            raise ValueError(
                f"encode_batches takes batches of one modality, got {sorted(k.__name__ for k in kinds)}; call it once "
                f"per modality."
            )
        if preprocessed is not None and len(preprocessed) != len(batches):
            raise ValueError(f"preprocessed has {len(preprocessed)} entries for {len(batches)} batches; give one each.")
        codec = self.codec(kinds.pop())
        with precision_context(self.precision, codec.device):
            encoded = codec.encode_batches(batches, preprocessed)
        return [as_normal_tensor(t.to(self.device)) for t in encoded]

    @torch.no_grad()
    def decode(self, tokens: dict[str, torch.Tensor], modality_type: type[Modality], **metadata: Any) -> Modality:
        """Reconstructs a modality from its tokens.

        Args:
            tokens: dict token_key -> tokens (e.g. from ``encode`` or from generation).
            modality_type: the class to reconstruct, e.g. ``LegacySurveyImage``.
            **metadata: codec options, e.g. ``bands=[...]`` for images, ``wavelength=...`` for spectra.
        """
        codec = self._load_codec(modality_type)
        key = modality_type.token_key
        if key not in tokens:
            raise TokenKeyError(
                f"tokens has no {key!r} entry to decode {modality_type.__name__}; keys: {list(tokens)}."
            )
        if "modality" in inspect.signature(codec.decode).parameters:  # image and spectrum codecs serve 2 surveys
            metadata = {"modality": modality_type, **metadata}
        decoded = codec.decode(tokens[key].to(codec.device), **metadata)
        fields = {
            f: as_normal_tensor(getattr(decoded, f)) for f in (field.name for field in dataclasses.fields(decoded))
        }
        return modality_type(**fields)
