r"""Lookup-free quantisation (LFQ) index ops: sign bits of latents (..., D) to indices and back.

LFQ (Yu et al. 2023, MAGVIT-v2, https://arxiv.org/abs/2310.05737), channel 0 the most significant bit:

.. math::

    \text{index} = \sum_{d=0}^{D-1} [z_d > 0]\; 2^{D-1-d}, \qquad
    \hat z_d = 2 s\, \text{bit}_{D-1-d} - s \in \{-s, +s\}

evaluated in float32 like the reference. Indices are int32, so :math:`1 \le D \le 31` (the spectrum codec: D = 10).
A NaN channel gives bit 0 (``NaN > 0`` is false), :math:`\pm 0` give 0; decode raises ``ValueError`` outside
:math:`[0, 2^D)`. Backends ``torch`` (reference), ``cpp`` (CPU, reads either layout in place) and ``triton`` (CUDA, or
``TRITON_INTERPRET=1`` when forced) all return the reference's values exactly. Eager CPU float32 calls with the
backend unset or ``cpp`` go straight to the C++ kernel, skipping selection that cannot change the result.
"""

from __future__ import annotations

from typing import Any

import torch

from aion_fast import dispatch
from aion_fast.dispatch import Backend
from aion_fast.ops.fsq import _as_odi

__all__ = ["lfq_decode", "lfq_encode", "torch_lfq_decode", "torch_lfq_encode"]

#: Largest number of channels with int32 indices.
MAX_DIM = 31


def _bit_weights(dim: int, device: torch.device) -> torch.Tensor:
    """(dim,) int64 weights 2^(dim-1), ..., 2, 1."""
    return 2 ** torch.arange(dim - 1, -1, -1, device=device)


def _check_dim(dim: int, what: str) -> None:
    if not 1 <= dim <= MAX_DIM:
        raise ValueError(f"{what}: LFQ needs 1 <= D <= {MAX_DIM} channels for int32 indices, got D={dim}")


# ---- PyTorch reference (oracle and fallback) -------------------------------------------------------------------------


def torch_lfq_encode(z: torch.Tensor) -> torch.Tensor:
    """Reference LFQ encode: (..., D) latents -> (...) int32 indices."""
    weights = _bit_weights(z.shape[-1], z.device)
    return ((z > 0).long() * weights).sum(dim=-1).to(torch.int32)


def torch_lfq_decode(indices: torch.Tensor, dim: int, scale: float = 1.0) -> torch.Tensor:
    """Reference LFQ decode: (...) indices in [0, 2**dim) -> (..., dim) float32 codes in {-s, +s}."""
    weights = _bit_weights(dim, indices.device)
    bits = ((indices.long().unsqueeze(-1) & weights) != 0).to(torch.float32)
    return bits * scale * 2 - scale


# ---- C++ path (aion_fast._C), registered as custom ops so torch.compile can trace it ---------------------------------


# Eager calls go straight to the ``*_impl`` functions: the first call of any torch.library custom op imports
# torch._dynamo and Triton, which is slow. Under torch.compile the dispatchers call the registered ops instead.


def _index_shape(z: torch.Tensor, channel_first: bool) -> tuple[int, ...]:
    return (z.shape[0], *z.shape[2:]) if channel_first else tuple(z.shape[:-1])


def _lfq_encode_cpp_impl(z: torch.Tensor, channel_first: bool, ext: Any = None, wide: bool = False) -> torch.Tensor:
    """Non-empty float32 CPU latents in either layout -> int32 (``wide``: int64) indices via aion_fast._C (read in
    place; the extension allocates the indices, wrapped without a copy)."""
    ext = ext if ext is not None else dispatch.load_extension()
    if channel_first and z.ndim == 3:  # (B, D, T): already the kernel's (O, D, I) view, indices (B, T)
        return torch.from_numpy(ext.lfq_encode_new(z.numpy(), wide=wide))
    indices = torch.from_numpy(ext.lfq_encode_new(_as_odi(z, channel_first).numpy(), wide=wide))
    return indices.reshape(_index_shape(z, channel_first))


def _lfq_encode_direct(ext: Any, z: torch.Tensor, channel_first: bool, wide: bool = False) -> torch.Tensor | None:
    """The eager fast path of :func:`lfq_encode`: same kernel and indices as the ``cpp`` backend.

    Returns None (the caller then dispatches as usual) unless ``z`` is strided, non-empty and of a supported shape.
    """
    ndim = z.ndim
    if ndim < (2 if channel_first else 1) or z.layout is not torch.strided:
        return None
    dim = z.shape[1] if channel_first else z.shape[-1]
    if not 1 <= dim <= MAX_DIM or z.numel() == 0:
        return None
    return _lfq_encode_cpp_impl(z.detach() if z.requires_grad else z, channel_first, ext, wide)


@torch.library.custom_op("aion_fast::lfq_encode_cpp", mutates_args=())
def _lfq_encode_cpp(z: torch.Tensor, channel_first: bool) -> torch.Tensor:
    return _lfq_encode_cpp_impl(z, channel_first)


@_lfq_encode_cpp.register_fake
def _(z: torch.Tensor, channel_first: bool) -> torch.Tensor:
    return z.new_empty(_index_shape(z, channel_first), dtype=torch.int32)


def _lfq_decode_cpp_impl(indices: torch.Tensor, dim: int, scale: float) -> torch.Tensor:
    """(...) int32 CPU indices -> (..., dim) float32 codes via aion_fast._C; ValueError when out of range."""
    ext = dispatch.load_extension()
    flat = indices.reshape(-1).contiguous()
    out = torch.empty((flat.shape[0], dim), dtype=torch.float32)
    n_bad = ext.lfq_decode(flat.numpy(), scale, out.numpy())
    if n_bad:
        raise ValueError(f"lfq_decode: {n_bad} indices lie outside [0, 2**{dim})")
    return out.reshape(*indices.shape, dim)


@torch.library.custom_op("aion_fast::lfq_decode_cpp", mutates_args=())
def _lfq_decode_cpp(indices: torch.Tensor, dim: int, scale: float) -> torch.Tensor:
    return _lfq_decode_cpp_impl(indices, dim, scale)


@_lfq_decode_cpp.register_fake
def _(indices: torch.Tensor, dim: int, scale: float) -> torch.Tensor:
    return indices.new_empty((*indices.shape, dim), dtype=torch.float32)


# ---- Backends and dispatch -------------------------------------------------------------------------------------------


def _cpp_decode_reasons(indices: torch.Tensor, dim: int, scale: float) -> list[str]:
    return dispatch.cpp_reasons(indices)


def _cpp_encode_reasons(z: torch.Tensor, channel_first: bool) -> list[str]:
    return dispatch.cpp_reasons(z)


def _triton_reasons(x: torch.Tensor, *_) -> list[str]:
    return dispatch.triton_reasons(x)


def _run_torch_encode(z: torch.Tensor, channel_first: bool) -> torch.Tensor:
    return torch_lfq_encode(z.movedim(1, -1) if channel_first else z)


def _run_cpp_encode(z: torch.Tensor, channel_first: bool) -> torch.Tensor:
    return (_lfq_encode_cpp if torch.compiler.is_compiling() else _lfq_encode_cpp_impl)(z, channel_first)


def _run_cpp_decode(indices: torch.Tensor, dim: int, scale: float) -> torch.Tensor:
    return (_lfq_decode_cpp if torch.compiler.is_compiling() else _lfq_decode_cpp_impl)(indices, dim, scale)


def _run_triton_encode(z: torch.Tensor, channel_first: bool) -> torch.Tensor:
    from aion_fast.kernels.lfq import lfq_encode_fwd, lfq_encode_op

    zl = z.movedim(1, -1) if channel_first else z
    return (lfq_encode_op if torch.compiler.is_compiling() else lfq_encode_fwd)(zl.reshape(-1, zl.shape[-1])).reshape(
        _index_shape(z, channel_first)
    )


def _run_triton_decode(indices: torch.Tensor, dim: int, scale: float) -> torch.Tensor:
    from aion_fast.kernels.lfq import lfq_decode_fwd, lfq_decode_op

    launch = lfq_decode_op if torch.compiler.is_compiling() else lfq_decode_fwd
    return launch(indices.reshape(-1).to(torch.int32), dim, scale).reshape(*indices.shape, dim)


_ENCODE_BACKENDS = (
    Backend("triton", _triton_reasons, _run_triton_encode),
    Backend("cpp", _cpp_encode_reasons, _run_cpp_encode),
    Backend("torch", dispatch.no_reasons, _run_torch_encode),
)

_DECODE_BACKENDS = (
    Backend("triton", _triton_reasons, _run_triton_decode),
    Backend("cpp", _cpp_decode_reasons, _run_cpp_decode),
    Backend("torch", dispatch.no_reasons, torch_lfq_decode),
)


def lfq_encode(z: torch.Tensor, channel_first: bool = True, *, dtype: torch.dtype = torch.int32) -> torch.Tensor:
    """LFQ encode: the signs of the D channels as a D-bit index (maths in the module docstring).

    Args:
        z: (B, D, *spatial) latents (``channel_first=True``, the codecs' layout), or (..., D) with
            ``channel_first=False``; 1 <= D <= 31. Any real dtype, compared in float32; never modified.
        channel_first: the channel axis is 1 (else last); never guessed from the shape.
        dtype: of the indices, ``torch.int32`` or ``torch.int64``.

    Returns:
        indices in [0, 2**D), shape ``z.shape[:-1]`` (resp. (B, *spatial)).

    Raises:
        ValueError: D is outside [1, 31], or ``z`` has too few axes.
        BackendUnavailableError: ``AION_FAST_BACKEND`` forces a backend that cannot run this call.
    """
    wide = dtype is torch.int64
    if not wide and dtype is not torch.int32:
        raise ValueError(f"lfq_encode: dtype must be torch.int32 or torch.int64, got {dtype}")
    if type(z) is torch.Tensor and z.dtype is torch.float32 and z.is_cpu and not torch.compiler.is_compiling():
        ext = dispatch.direct_extension()
        if ext is not None:
            indices = _lfq_encode_direct(ext, z, channel_first, wide)
            if indices is not None:
                return indices
    if z.ndim < (2 if channel_first else 1):
        raise ValueError(
            f"lfq_encode: z must have shape {'(B, D, ...)' if channel_first else '(..., D)'}, got {tuple(z.shape)}"
        )
    _check_dim(z.shape[1 if channel_first else -1], "lfq_encode")
    if z.is_complex():
        raise TypeError(f"lfq_encode: z must be real, got {z.dtype}")
    channel_first = bool(channel_first)
    if z.numel() == 0:
        return torch.empty(_index_shape(z, channel_first), dtype=dtype, device=z.device)
    with dispatch.no_autocast(z.device):
        z = z.detach().to(torch.float32)
        return dispatch.select("lfq_encode", _ENCODE_BACKENDS, z, channel_first).run(z, channel_first).to(dtype)


def lfq_decode(indices: torch.Tensor, dim: int, scale: float = 1.0) -> torch.Tensor:
    """LFQ decode: indices to codes in {-scale, +scale}.

    Args:
        indices: (...) integer indices in [0, 2**dim); any integer dtype.
        dim: number of channels D, 1 <= D <= 31.
        scale: codebook scale :math:`s` (finite).

    Returns:
        (..., D) float32 codes.

    Raises:
        TypeError: ``indices`` is not an integer tensor.
        ValueError: an index lies outside [0, 2**dim), or ``dim``/``scale`` is invalid.
        BackendUnavailableError: ``AION_FAST_BACKEND`` forces a backend that cannot run this call.
    """
    dim = int(dim)
    _check_dim(dim, "lfq_decode")
    scale = float(scale)
    if scale != scale or scale in (float("inf"), float("-inf")):
        raise ValueError(f"lfq_decode: scale must be finite, got {scale}")
    if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
        raise TypeError(f"lfq_decode: indices must be an integer tensor, got {indices.dtype}")
    backend = dispatch.select("lfq_decode", _DECODE_BACKENDS, indices, dim, scale)
    if backend.name != "cpp" or indices.dtype != torch.int32:  # the C++ op checks int32 indices itself
        if indices.numel():
            lo, hi = torch.aminmax(indices)
            if int(lo) < 0 or int(hi) >= 2**dim:
                raise ValueError(f"lfq_decode: indices must lie in [0, 2**{dim}), got [{int(lo)}, {int(hi)}]")
        if backend.name == "cpp":
            indices = indices.to(torch.int32)
    return backend.run(indices, dim, scale)
