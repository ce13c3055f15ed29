"""Codec configuration under the reference's module path (``aion.codecs.config``): the hub repository holding the
codecs and the table from modality classes to codec classes.

Importing this module imports every codec class (as the reference's does); ``aion_fast.codecs`` itself stays lazy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from aion_fast import modalities as _modalities
from aion_fast.codecs.base import Codec
from aion_fast.codecs.registry import codec_class_for
from aion_fast.hub import DEFAULT_REPO_ID

__all__ = ["HF_REPO_ID", "MODALITY_CODEC_MAPPING", "CodecHFConfig", "CodecType"]

#: Hub repository of the released checkpoint; its ``codecs/<modality name>/`` folders hold the codecs.
HF_REPO_ID = DEFAULT_REPO_ID

CodecType = TypeVar("CodecType", bound=type[Codec])


@dataclass
class CodecHFConfig:
    """Where a codec class is loaded from: its class and the hub repository id."""

    codec_class: type[Codec]
    repo_id: str


def _mapping() -> dict[type[_modalities.Modality], type[Codec]]:
    """Every public modality class that has a codec (the base ``Image`` and ``Spectrum`` included, as in the
    reference), in the order of ``aion_fast.modalities.__all__``."""
    table = {}
    for name in _modalities.__all__:
        cls = getattr(_modalities, name)
        if isinstance(cls, type) and issubclass(cls, _modalities.Modality) and cls is not _modalities.Modality:
            codec_class = codec_class_for(cls)
            if codec_class is not None:
                table[cls] = codec_class
    return table


#: Modality class -> codec class (``ImageCodec``, ``SpectrumCodec``, ``ScalarCodec``, ...).
MODALITY_CODEC_MAPPING: dict[type[_modalities.Modality], type[Codec]] = _mapping()
