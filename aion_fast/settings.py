"""Run-time settings of aion_fast: every environment variable the package reads while running, parsed here only.

Each is read when used (not at import), so a test or a job may change it between calls. README "Settings" lists
them with their defaults.

================================  ===========================================================================
``AION_FAST_BACKEND``             force backends, comma-separated, one per family: ops ``torch`` | ``cpp`` |
                                  ``triton``; attention ``flash`` | ``sdpa``; encoder blocks ``rows`` | ``plain``
                                  (e.g. ``triton,sdpa``). Unset: each call takes the first backend that can run it.
``AION_FAST_CPU_ROW_BLOCK``       rows per block of the CPU inference path of the encoder blocks (default 2048;
                                  ``0`` turns the path off)
``AION_FAST_NO_EXT``              do not use the C++ extension (also honoured by the build)
``AION_FAST_ASINHF_LIBM``         read by the extension: libm's ``asinhf`` instead of its AVX2 replica
``TRITON_INTERPRET``              Triton's interpreter (Triton's own rule: ``1``, ``true`` or ``on``)
================================  ===========================================================================

Replaced (no longer read): ``AION_FAST_ATTENTION`` (name ``flash`` or ``sdpa`` in ``AION_FAST_BACKEND`` instead).
"""

from __future__ import annotations

import os

import torch

__all__ = [
    "BACKEND_ENV",
    "FAMILIES",
    "cpu_row_block",
    "env_flag",
    "forced_backend",
    "raw_env",
    "triton_interpret",
]

BACKEND_ENV = "AION_FAST_BACKEND"
_BACKEND_ENV_BYTES = BACKEND_ENV.encode()
#: Backend names per dispatch family; a name belongs to one family only.
FAMILIES: dict[str, tuple[str, ...]] = {
    "ops": ("triton", "cpp", "torch"),
    "attention": ("flash", "sdpa"),
    "blocks": ("rows", "plain"),
}
_FAMILY_OF = {name: family for family, names in FAMILIES.items() for name in names}
_parsed: dict[str | None, dict[str, str]] = {}


def env_flag(name: str) -> bool:
    """Whether environment variable ``name`` is set to ``1``, ``true``, ``yes`` or ``on`` (any case)."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def triton_interpret() -> bool:
    """Whether ``TRITON_INTERPRET`` turns Triton's interpreter on, by Triton's own rule (``1``, ``true``, ``on``).

    The one parser of the variable in aion_fast: the dispatcher's choice and the kernels' ``USE_LIBDEVICE`` follow it.
    """
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on")


def _libc_getenv():
    """libc's ``getenv`` through ctypes, or None where it cannot be bound (then ``os.environ.get`` is used)."""
    if os.name != "posix":
        return None
    try:
        import ctypes

        getenv = ctypes.CDLL(None).getenv
        getenv.restype, getenv.argtypes = ctypes.c_char_p, [ctypes.c_char_p]
        return getenv
    except (OSError, AttributeError):
        return None


_getenv = _libc_getenv()


def raw_env(name: bytes) -> bytes | str | None:
    """The raw value of environment variable ``name`` (None when unset): a cheap read for per-call decisions.

    ``os.environ`` writes every change through to the process environment (``putenv``/``unsetenv``), so libc's
    ``getenv`` sees the same values; it costs a ctypes call instead of ``os.environ.get``'s Python-level mapping
    methods (several times more on a miss). Callers cache what they derive per raw value.
    """
    if _getenv is not None and not torch.compiler.is_compiling():  # dynamo traces os.environ, not ctypes
        return _getenv(name)
    return os.environ.get(name.decode())


def _parse(raw: bytes | str | None) -> dict[str, str]:
    parsed = _parsed.get(raw)
    if parsed is not None:
        return parsed
    parsed = {}
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else (raw or "")
    for item in text.split(","):
        name = item.strip().lower()
        if not name:
            continue
        family = _FAMILY_OF.get(name)
        if family is None:
            known = "; ".join(f"{', '.join(n)} ({f})" for f, n in FAMILIES.items())
            raise ValueError(
                f"{BACKEND_ENV}={text!r}: unknown backend {name!r}; expected one of {known}, comma-separated, at "
                "most one per family (or unset)"
            )
        if family in parsed and parsed[family] != name:
            raise ValueError(f"{BACKEND_ENV}={text!r} names two {family} backends; keep one")
        parsed[family] = name
    if len(_parsed) < 64:
        _parsed[raw] = parsed
    return parsed


def forced_backend(family: str = "ops") -> str | None:
    """The backend of ``family`` forced by ``AION_FAST_BACKEND`` (None: none forced).

    Cost: one environment read and a dict lookup (the parse is cached per raw value).

    Raises:
        ValueError: the variable names an unknown backend, or two of one family.
    """
    return _parse(raw_env(_BACKEND_ENV_BYTES)).get(family)


def cpu_row_block() -> int:
    """Rows per block of the encoder blocks' CPU inference path (``AION_FAST_CPU_ROW_BLOCK``, default 2048; 0: off).

    Raises:
        ValueError: the variable is not a non-negative integer.
    """
    raw = os.environ.get("AION_FAST_CPU_ROW_BLOCK", "").strip()
    if not raw:
        return 2048
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"AION_FAST_CPU_ROW_BLOCK={raw!r}: expected a non-negative integer (0 turns row blocks off)")
    return value
