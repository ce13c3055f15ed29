"""aion_fast: a fast, trustworthy implementation of AION-1, the omnimodal foundation model for astronomy.

Same public API as the reference package ``aion`` (polymathic-aion), loading the same checkpoints:

    >>> from aion_fast import AION
    >>> from aion_fast.codecs import CodecManager
    >>> model = AION.from_pretrained("path/to/aion-base")
    >>> codecs = CodecManager(repo="path/to/aion-base")
    >>> tokens = codecs.encode(image, spectrum)
    >>> vectors = aion_fast.embed(model, tokens, pooling="mean")

Importing this package never initialises CUDA and never touches the network; heavy submodules load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> (module, attribute in it; None for the module itself), imported on first access.
_LAZY = {
    "AION": ("aion_fast.model", "AION"),
    "embed": ("aion_fast.embedding", "embed"),
    "generate": ("aion_fast.generate.api", "generate"),
    "CodecManager": ("aion_fast.codecs.manager", "CodecManager"),
    "modalities": ("aion_fast.modalities", None),
    "codecs": ("aion_fast.codecs", None),
}

__all__ = ["AION", "CodecManager", "embed", "generate", "modalities", "codecs", "__version__"]

if TYPE_CHECKING:
    from aion_fast import codecs, modalities
    from aion_fast.codecs.manager import CodecManager
    from aion_fast.embedding import embed
    from aion_fast.generate.api import generate
    from aion_fast.model import AION


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module_name, attribute = _LAZY[name]
        module = importlib.import_module(module_name)
        value = module if attribute is None else getattr(module, attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'aion_fast' has no attribute {name!r}")
