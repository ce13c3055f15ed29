"""Backend discovery and selection: one mechanism for the ops in :mod:`aion_fast.ops`, packed attention and the
encoder blocks' CPU path (:mod:`aion_fast.model.attention`, :mod:`aion_fast.model.rowblocks`).

Op backends, tried in this order for each call:

* ``triton``: Triton kernels (:mod:`aion_fast.kernels`) for CUDA tensors;
* ``cpp``: the private compiled module ``aion_fast._C`` (pybind11, CPU tensors);
* ``torch``: the fp32 PyTorch reference of each op, always available.

Each op lists a :class:`Backend` per name; a backend declares the devices and dtypes it runs and states any other
reason it cannot run a given call, :func:`select` takes the first one with no reason and caches the choice per
(op, device type, dtype, size key, forced backend). ``AION_FAST_BACKEND`` (:mod:`aion_fast.settings`) forces one
backend per family; if it cannot run the call, :class:`BackendUnavailableError` says why instead of silently
falling back.

:func:`direct_extension` lets an op's eager CPU call skip :func:`select` when its answer is known to be ``cpp``
(no other ops backend forced and the extension loaded), cached per raw value of the variable.

Importing this module is free: it neither imports ``aion_fast._C`` nor Triton, never initialises CUDA and never
touches the network. The extension is imported on first use by :func:`load_extension`; if that fails, ONE warning
is logged and the PyTorch path is used.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from aion_fast import settings

__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "Backend",
    "BackendUnavailableError",
    "available_backends",
    "clear_choices",
    "extension_error",
    "forced_backend",
    "load_extension",
    "cpp_reasons",
    "direct_extension",
    "no_autocast",
    "no_kernel",
    "no_reasons",
    "select",
    "triton_interpreter_on",
    "triton_kernel_missing",
    "triton_reasons",
]

logger = logging.getLogger("aion_fast")

#: Backend names in priority order.
BACKENDS: tuple[str, ...] = ("triton", "cpp", "torch")
#: Environment variable that forces a backend.
ENV_VAR = "AION_FAST_BACKEND"
#: Must equal ``API_VERSION`` of the compiled module (``csrc/bindings.cpp``); anything else is a stale build.
EXPECTED_API_VERSION = 8

_REBUILD_HINT = "rebuild it with `pip install -e .` (see README, Development)"
_UNSET = object()
_extension: Any = _UNSET  # ModuleType | None once loaded
_extension_error: str | None = None


class BackendUnavailableError(RuntimeError):
    """The backend forced with ``AION_FAST_BACKEND`` cannot run this call (the message gives every reason)."""


def _import_extension() -> ModuleType:
    """Imports ``aion_fast._C`` (torch first, so its libgomp is the one in the process)."""
    import torch  # noqa: F401

    return importlib.import_module("aion_fast._C")


def load_extension() -> ModuleType | None:
    """The compiled module ``aion_fast._C``, or None when it cannot be used.

    Imported on the first call and cached. On failure the reason is kept (:func:`extension_error`) and one warning
    is logged on the ``aion_fast`` logger; every op then uses its PyTorch path.

    Returns:
        The module, or None.
    """
    global _extension, _extension_error
    if _extension is not _UNSET:
        return _extension
    module: ModuleType | None = None
    try:
        module = _import_extension()
        version = getattr(module, "API_VERSION", None)
        if version != EXPECTED_API_VERSION:
            raise ImportError(
                f"stale build: aion_fast._C has API_VERSION {version}, this aion_fast expects {EXPECTED_API_VERSION}"
            )
    except Exception as exc:  # ImportError, OSError (ABI), our own CPU check: all mean "not usable"
        module = None
        _extension_error = f"{type(exc).__name__}: {exc}"
        if settings.env_flag("AION_FAST_NO_EXT"):
            _extension_error += " (AION_FAST_NO_EXT is set)"
        logger.warning(
            "aion_fast: the C++ extension aion_fast._C is unavailable (%s); using the PyTorch path. To use it, %s.",
            _extension_error,
            _REBUILD_HINT,
        )
    _extension = module
    return module


def extension_error() -> str | None:
    """Why :func:`load_extension` returned None (None if it loaded, or was not tried yet)."""
    return _extension_error


def _reset_extension_cache() -> None:
    """Forgets the cached import result (tests)."""
    global _extension, _extension_error
    _extension, _extension_error = _UNSET, None
    clear_choices()


#: direct_extension()'s answer per raw value of AION_FAST_BACKEND (None: unset).
_direct_extension: dict[Any, Any] = {}


def direct_extension() -> Any:
    """``aion_fast._C`` when an op's eager CPU call may run it without :func:`select`, else None.

    That is: no ops backend other than ``cpp`` is forced (so :func:`select` would take ``cpp`` for a CPU tensor it
    supports: ``triton`` only takes CPU tensors when forced) and the extension loads. The answer is cached per raw
    value of ``AION_FAST_BACKEND``, so a call costs one environment read and a dict lookup. The op still checks
    that the call is one its C++ path supports (CPU float32 tensor, not compiling, supported sizes) and otherwise
    goes through :func:`select`, which raises or falls back exactly as before.
    """
    raw = settings.raw_env(b"AION_FAST_BACKEND")
    module = _direct_extension.get(raw, _UNSET)
    if module is not _UNSET:
        return module
    try:
        forced = settings.forced_backend("ops")
    except ValueError:  # a bad value: the dispatcher raises it with the op's name
        forced = "invalid"
    module = load_extension() if forced in (None, "cpp") else None
    if len(_direct_extension) < 64:  # bounded whatever values a process cycles through
        _direct_extension[raw] = module
    return module


def triton_unavailable_reason() -> str | None:
    """Why Triton kernels cannot run on a GPU in this process, or None. Does not import Triton.

    Needs Triton, the kernels shipped as :mod:`aion_fast.kernels` (absent from a checkout used without
    ``pip install -e .``) and a CUDA device. The answer for the installation part is cached.
    """
    reason = _triton_install_reason()
    if reason:
        return reason
    import torch

    if not torch.cuda.is_available():  # does not initialise torch's CUDA state
        return "no CUDA device"
    return None


@functools.lru_cache(maxsize=1)
def _triton_install_reason() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    try:
        if importlib.util.find_spec("aion_fast.kernels") is None:
            raise ImportError("not found")
    except ImportError:
        return "aion_fast.kernels is not importable (install the package: pip install --no-build-isolation -e .)"
    return None


def available_backends() -> list[str]:
    """Backends usable in this process, in priority order (``torch`` is always last).

    ``cpp`` needs the extension to import (this call imports it); ``triton`` needs Triton and a CUDA device.
    Whether a backend implements a given op on given tensors is decided per call by :func:`select`.
    """
    names = []
    if triton_unavailable_reason() is None:
        names.append("triton")
    if load_extension() is not None:
        names.append("cpp")
    names.append("torch")
    return names


def forced_backend() -> str | None:
    """The ops backend named by ``AION_FAST_BACKEND`` (see :mod:`aion_fast.settings`), or None when none is.

    Raises:
        ValueError: the variable names an unknown backend.
    """
    return settings.forced_backend("ops")


@dataclass(frozen=True)
class Backend:
    """One implementation of an op (or of attention, or of an encoder block's path).

    Attributes:
        name: ``triton``, ``cpp`` or ``torch`` for ops (``flash`` / ``sdpa``, ``rows`` / ``plain`` elsewhere; see
            :data:`aion_fast.settings.FAMILIES`).
        reasons: ``reasons(*args) -> list[str]``: why this backend cannot run these arguments beyond what
            ``devices`` and ``dtypes`` declare (sizes, installation); empty: it can.
        run: ``run(*args)``, the implementation.
        devices: device types of the first argument this backend runs (None: any).
        dtypes: dtypes of the first argument it takes (None: any).
    """

    name: str
    reasons: Callable[..., list[str]]
    run: Callable[..., Any]
    devices: tuple[str, ...] | None = None
    dtypes: tuple[Any, ...] | None = None

    def not_supported_reasons(self, *args: Any) -> list[str]:
        """Why this backend cannot run ``args`` (empty list: it can): the declarations first, then ``reasons``."""
        why = []
        x = args[0] if args else None
        if self.devices is not None and getattr(x, "device", None) is not None and x.device.type not in self.devices:
            why.append(f"tensor on {x.device.type}; {self.name} runs on {', '.join(self.devices)}")
        if self.dtypes is not None and getattr(x, "dtype", None) is not None and x.dtype not in self.dtypes:
            names = ", ".join(str(d).replace("torch.", "") for d in self.dtypes)
            why.append(f"dtype {str(x.dtype).replace('torch.', '')}; {self.name} takes {names}")
        return why + self.reasons(*args)


#: Cached choices: (op, device type, dtype, size key, forced backend, interpreter) -> Backend.
_choices: dict[tuple, Backend] = {}


def select(op: str, backends: Sequence[Backend], *args: Any, key: tuple | None = (), family: str = "ops") -> Backend:
    """Picks the backend that runs ``op(*args)``.

    The choice is cached per (op, device type and dtype of ``args[0]``, ``key``, forced backend, interpreter state):
    a repeated call costs one environment read and a dict lookup. Pass in ``key`` whatever else the backends'
    reasons depend on (e.g. FSQ's levels and eps), or ``key=None`` to decide afresh on every call.

    Args:
        op: op name, for messages.
        backends: the op's implementations in priority order.
        *args: the call's arguments, passed to each ``not_supported_reasons``.
        key: hashable summary of the arguments the reasons read besides the first tensor's device and dtype.
        family: the :data:`aion_fast.settings.FAMILIES` entry whose forced backend applies.

    Returns:
        The forced backend if ``AION_FAST_BACKEND`` names one of this family, else the first that supports the call.

    Raises:
        BackendUnavailableError: the forced backend (or, unforced, every backend) cannot run the call.
        ValueError: ``AION_FAST_BACKEND`` holds an unknown name.
    """
    forced = settings.forced_backend(family)
    cache_key = None
    if key is not None:
        x = args[0]  # the op's main tensor; is_cpu / is_cuda are cheaper than building x.device
        device = "cpu" if x.is_cpu else "cuda" if x.is_cuda else x.device.type
        cache_key = (op, device, x.dtype, key, forced, forced == "triton" and settings.triton_interpret())
        hit = _choices.get(cache_key)
        if hit is not None:
            return hit
    backend = _decide(op, backends, forced, args)
    if cache_key is not None and len(_choices) < 4096:
        _choices[cache_key] = backend
    return backend


def _decide(op: str, backends: Sequence[Backend], forced: str | None, args: tuple) -> Backend:
    if forced is not None:
        for backend in backends:
            if backend.name == forced:
                reasons = backend.not_supported_reasons(*args)
                if not reasons:
                    return backend
                raise BackendUnavailableError(
                    f"{ENV_VAR}={forced} but the {forced} backend cannot run {op}: {'; '.join(reasons)}"
                )
        raise BackendUnavailableError(f"{ENV_VAR}={forced} but {op} has no {forced} implementation")
    why = []
    for backend in backends:
        reasons = backend.not_supported_reasons(*args)
        if not reasons:
            return backend
        why.append(f"{backend.name}: {'; '.join(reasons)}")
    raise BackendUnavailableError(f"no backend can run {op}: " + " | ".join(why))


def clear_choices() -> None:
    """Forgets every cached choice (after something they depend on changed, e.g. the extension was reloaded)."""
    _choices.clear()
    _direct_extension.clear()


def no_autocast(device: Any) -> contextlib.AbstractContextManager:
    """A context that disables autocast on ``device`` (a ``torch.device``) if it is on, else a no-op context."""
    import torch

    if device.type in ("cpu", "cuda") and torch.is_autocast_enabled(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


# ---- reasons shared by the ops' backends ---------------------------------------------------------------------------


def no_reasons(*_: Any) -> list[str]:
    """``not_supported_reasons`` of a backend that runs everything (the PyTorch references)."""
    return []


def cpp_reasons(x: Any) -> list[str]:
    """Why the C++ CPU ops cannot take tensor ``x`` (loads the extension on first use)."""
    reasons = []
    if x.device.type != "cpu":
        reasons.append(f"tensor on {x.device.type}; the C++ extension has no kernel for it")
    if load_extension() is None:
        reasons.append(f"the C++ extension is not available ({extension_error()})")
    return reasons


def triton_interpreter_on() -> bool:
    """Whether ``TRITON_INTERPRET`` turns Triton's interpreter on (:func:`aion_fast.settings.triton_interpret`)."""
    return settings.triton_interpret()


def triton_reasons(x: Any) -> list[str]:
    """Why a Triton kernel cannot take tensor ``x`` (device and installation only).

    A CPU tensor is taken when ``TRITON_INTERPRET`` is on and ``AION_FAST_BACKEND`` forces ``triton`` (how the tests
    run an op's Triton path through its dispatcher without a GPU); Triton is never chosen unforced for a CPU tensor.
    """
    if x.device.type == "cpu" and forced_backend() == "triton" and triton_interpreter_on():
        reason = _triton_install_reason()
        return [reason] if reason else []
    if x.device.type != "cuda":
        return ["tensor not on CUDA"]
    reason = triton_unavailable_reason()
    return [reason] if reason else []


def triton_kernel_missing(x: Any, *_: Any) -> list[str]:
    """``not_supported_reasons`` of an op that has no Triton kernel yet."""
    return ["no Triton kernel for this op yet", *triton_reasons(x)]


def no_kernel(*_: Any) -> Any:
    """``run`` of a backend that has no kernel for the op (never selected: its reasons say so)."""
    raise NotImplementedError("no kernel for this op in this backend yet")
