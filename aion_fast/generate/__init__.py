"""Generation with AION-1: ROAR sampling of a target modality given input modalities (AION-1 paper §7.1).

* :func:`aion_fast.generate` (:mod:`aion_fast.generate.api`): modality objects in, decoded posterior draws out.
* :func:`roar_generate` and :func:`roar_schedule` (:mod:`aion_fast.generate.roar`): the token-level loop.

Importing this subpackage binds ``aion_fast.generate`` to it (Python sets the parent's attribute), which would hide
the function of the same name; the module is therefore callable and forwards to :func:`generate`.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from aion_fast.generate.api import generate
from aion_fast.generate.roar import roar_generate, roar_schedule

__all__ = ["generate", "roar_generate", "roar_schedule"]


class _CallableModule(types.ModuleType):
    """This package's module type: calling it calls :func:`aion_fast.generate.api.generate`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return generate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
