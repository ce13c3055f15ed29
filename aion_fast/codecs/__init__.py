"""Codecs ("tokenizers"): one per modality class, turning observations into tokens and tokens back into data."""

from __future__ import annotations

import importlib
from typing import Any

from aion_fast.codecs.registry import _CODEC_MODULES

_LAZY = {**_CODEC_MODULES, "Codec": "aion_fast.codecs.base", "CodecManager": "aion_fast.codecs.manager"}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'aion_fast.codecs' has no attribute {name!r}")
