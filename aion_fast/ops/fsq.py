r"""Finite scalar quantisation (FSQ) index ops: encode latents to indices, decode indices to codes.

FSQ (Mentzer et al. 2023, https://arxiv.org/abs/2309.15505) squashes each of the D channels of a latent
vector to a fixed number of levels :math:`L_d` and packs the levels into one integer. With :math:`h_d =
\lfloor L_d / 2 \rfloor` and a small :math:`\epsilon` (default ``1e-3``) that makes the outer levels reachable:

.. math::

    a_d = \frac{(L_d - 1)(1 + \epsilon)}{2}, \qquad
    o_d = \begin{cases} 0.5 & L_d \text{ even} \\ 0 & L_d \text{ odd} \end{cases}, \qquad
    s_d = \operatorname{atanh}(o_d / a_d)

    b_d = \tanh(z_d + s_d)\, a_d - o_d, \qquad
    q_d = \operatorname{round}(b_d) \text{ (half to even)}, \qquad
    \hat z_d = q_d / h_d \in [-1, 1]

    \text{index} = \sum_d (\hat z_d h_d + h_d)\, \beta_d, \qquad \beta = (1, L_0, L_0 L_1, \dots)

and decoding inverts the mixed-radix packing: digit :math:`c_d = \lfloor \text{index} / \beta_d \rfloor \bmod L_d`,
code :math:`\hat z_d = (c_d - h_d) / h_d`.

Every step is float32, one rounding per operation, in the order above, exactly as the reference AION-1 quantiser
evaluates it; the index is truncated to int32. Backends must reproduce the reference indices bit for bit:

* ``torch``: :func:`torch_fsq_encode` / :func:`torch_fsq_decode`, the reference itself.
* ``cpp``: ``aion_fast._C``. PyTorch computes :math:`\tanh(z + s)` (its vectorised tanh and libm's ``tanhf``
  differ in the last bit on ~0.05% of inputs, which flips the rounding of values that land within an ulp of a
  half-integer), then one fused C++ pass replays the rest operation by operation (compiled without FMA
  contraction). The per-row sum is order-independent only while every digit is an exact integer and every partial
  sum is below :math:`2^{24}`, so the C++ path takes levels in [2, 21] (:math:`(q / h) h = q` holds exactly in
  float32 for those, not for e.g. L = 22) and :math:`-1 < \epsilon \le 1`; anything else runs on ``torch``.
* ``triton``: CUDA tensors; no kernel yet.

NaN/inf policy (encode): :math:`\tanh(\pm\infty) = \pm 1`, so infinite latents map to the outermost levels like
any large value. A NaN latent has no level (the reference would return an arbitrary out-of-range index), so every
backend raises ``ValueError`` naming ``z``. Decode raises ``ValueError`` for indices outside
:math:`[0, \prod_d L_d)`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from aion_fast import _backend
from aion_fast._backend import Backend

__all__ = [
    "fsq_decode",
    "fsq_encode",
    "torch_fsq_bound",
    "torch_fsq_decode",
    "torch_fsq_encode",
    "torch_fsq_encode_from_tanh",
]

LevelsLike = Sequence[int] | torch.Tensor

#: Largest level count whose float32 digit arithmetic (q / h) * h + h is exact for every reachable q.
CPP_MAX_LEVEL = 21


@dataclass(frozen=True)
class _Constants:
    """Per-channel FSQ constants, (D,) CPU tensors computed with the reference's own float32 expressions."""

    levels: torch.Tensor  # int32
    half_l: torch.Tensor  # float32, a_d
    offset: torch.Tensor  # float32, o_d
    shift: torch.Tensor  # float32, s_d
    half_width: torch.Tensor  # int32, h_d
    basis: torch.Tensor  # int32, beta_d

    def to(self, device: torch.device) -> _Constants:
        if device.type == "cpu":
            return self
        return _Constants(*(t.to(device) for t in vars(self).values()))


def _as_levels(levels: LevelsLike) -> tuple[int, ...]:
    if isinstance(levels, torch.Tensor):
        levels = levels.tolist()
    out = tuple(int(v) for v in levels)
    if not out or min(out) < 2:
        raise ValueError(f"FSQ levels must be a non-empty sequence of integers >= 2, got {list(out)}")
    return out


@functools.lru_cache(maxsize=64)
def _constants(levels: tuple[int, ...], eps: float) -> _Constants:
    lv = torch.tensor(levels, dtype=torch.int32)
    half_l = (lv - 1) * (1 + eps) / 2
    offset = torch.where(lv % 2 == 1, 0.0, 0.5)
    shift = torch.atanh(offset / half_l)
    basis = torch.cumprod(torch.tensor((1,) + levels[:-1]), dim=0, dtype=torch.int32)
    return _Constants(lv, half_l, offset, shift, lv // 2, basis)


# ---------------------------------------------------------------------------------------------------------------------
# PyTorch reference (oracle and fallback)
# ---------------------------------------------------------------------------------------------------------------------


def torch_fsq_encode_from_tanh(tanh_z: torch.Tensor, levels: LevelsLike, eps: float = 1e-3) -> torch.Tensor:
    """Reference FSQ index from :math:`t = \\tanh(z + s)` (everything after the tanh).

    Args:
        tanh_z: (..., D) float32, ``tanh(z + shift)``.
        levels: the D level counts.
        eps: bound widening :math:`\\epsilon`.

    Returns:
        (...) int32 indices.
    """
    c = _constants(_as_levels(levels), float(eps)).to(tanh_z.device)
    bounded = tanh_z * c.half_l - c.offset
    normalized = bounded.round() / c.half_width
    digits = normalized * c.half_width + c.half_width
    return (digits * c.basis.to(digits.dtype)).sum(dim=-1).to(torch.int32)


def torch_fsq_bound(z: torch.Tensor, levels: LevelsLike, eps: float = 1e-3) -> torch.Tensor:
    """The bounded latents :math:`b_d = \\tanh(z_d + s_d)\\, a_d - o_d` before rounding (differentiable in ``z``).

    Args:
        z: (..., D) latents, channels last; cast to float32.
        levels: the D level counts.
        eps: bound widening :math:`\\epsilon`.

    Returns:
        (..., D) float32; the quantizer's straight-through ``quantize`` rounds these.
    """
    c = _constants(_as_levels(levels), float(eps)).to(z.device)
    return torch.tanh(z.float() + c.shift) * c.half_l - c.offset


def torch_fsq_encode(z: torch.Tensor, levels: LevelsLike, eps: float = 1e-3) -> torch.Tensor:
    """Reference FSQ encode in float32 (see the module docstring for the maths).

    Args:
        z: (..., D) latents, channels last; cast to float32.
        levels: the D level counts.
        eps: bound widening :math:`\\epsilon`.

    Returns:
        (...) int32 indices. NaN latents give undefined indices here; :func:`fsq_encode` rejects them.
    """
    c = _constants(_as_levels(levels), float(eps)).to(z.device)
    return torch_fsq_encode_from_tanh(torch.tanh(z.float() + c.shift), levels, eps)


def torch_fsq_decode(indices: torch.Tensor, levels: LevelsLike) -> torch.Tensor:
    """Reference FSQ decode.

    Args:
        indices: (...) integer indices in [0, prod(levels)).
        levels: the D level counts.

    Returns:
        (..., D) float32 codes :math:`(c_d - h_d) / h_d` in [-1, 1].
    """
    c = _constants(_as_levels(levels), 0.0).to(indices.device)
    idx = indices.long().unsqueeze(-1)
    digits = (idx // c.basis) % c.levels
    return ((digits - c.half_width) / c.half_width).to(torch.float32)


# ---------------------------------------------------------------------------------------------------------------------
# C++ path (aion_fast._C), registered as custom ops so torch.compile can trace it
# ---------------------------------------------------------------------------------------------------------------------


# Eager calls go straight to the ``*_impl`` functions: the first call of any torch.library custom op imports
# torch._dynamo (and with it Triton), ~2 s. Under torch.compile the dispatchers call the registered ops instead.


def _fsq_encode_cpp_impl(z: torch.Tensor, levels: list[int], eps: float) -> torch.Tensor:
    """(..., D) float32 CPU latents -> (...) int32 indices via aion_fast._C; raises ValueError on NaN."""
    ext = _backend.load_extension()
    c = _constants(tuple(levels), eps)
    d = len(levels)
    z2 = z.reshape(-1, d)
    tanh_z = torch.empty(z2.shape, dtype=torch.float32)  # contiguous whatever the layout of z
    torch.add(z2, c.shift, out=tanh_z)
    tanh_z.tanh_()
    out = torch.empty(z2.shape[0], dtype=torch.int32)
    n_nan = ext.fsq_encode_from_tanh(tanh_z.numpy(), c.levels.numpy(), c.half_l.numpy(), c.offset.numpy(), out.numpy())
    if n_nan:
        raise ValueError(f"fsq_encode: z contains NaN in {n_nan} of {z2.shape[0]} vectors; FSQ has no level for NaN")
    return out.reshape(z.shape[:-1])


@torch.library.custom_op("aion_fast::fsq_encode_cpp", mutates_args=())
def _fsq_encode_cpp(z: torch.Tensor, levels: list[int], eps: float) -> torch.Tensor:
    return _fsq_encode_cpp_impl(z, levels, eps)


@_fsq_encode_cpp.register_fake
def _(z: torch.Tensor, levels: list[int], eps: float) -> torch.Tensor:
    return z.new_empty(z.shape[:-1], dtype=torch.int32)


def _fsq_decode_cpp_impl(indices: torch.Tensor, levels: list[int]) -> torch.Tensor:
    """(...) int32 CPU indices -> (..., D) float32 codes via aion_fast._C; raises ValueError when out of range."""
    ext = _backend.load_extension()
    c = _constants(tuple(levels), 0.0)
    flat = indices.reshape(-1).contiguous()
    out = torch.empty((flat.shape[0], len(levels)), dtype=torch.float32)
    n_bad = ext.fsq_decode(flat.numpy(), c.levels.numpy(), out.numpy())
    if n_bad:
        raise ValueError(f"fsq_decode: {n_bad} indices lie outside [0, {math.prod(levels)})")
    return out.reshape(*indices.shape, len(levels))


@torch.library.custom_op("aion_fast::fsq_decode_cpp", mutates_args=())
def _fsq_decode_cpp(indices: torch.Tensor, levels: list[int]) -> torch.Tensor:
    return _fsq_decode_cpp_impl(indices, levels)


@_fsq_decode_cpp.register_fake
def _(indices: torch.Tensor, levels: list[int]) -> torch.Tensor:
    return indices.new_empty((*indices.shape, len(levels)), dtype=torch.float32)


# ---------------------------------------------------------------------------------------------------------------------
# Backends and dispatch
# ---------------------------------------------------------------------------------------------------------------------


def _cpp_encode_reasons(z: torch.Tensor, levels: tuple[int, ...], eps: float) -> list[str]:
    reasons = _backend.cpp_reasons(z)
    if max(levels) > CPP_MAX_LEVEL:
        reasons.append(f"levels above {CPP_MAX_LEVEL} ({list(levels)}) have inexact float32 digits")
    if not -1.0 < eps <= 1.0:
        reasons.append(f"eps={eps} outside (-1, 1]")
    # Largest |partial sum|: |q_d| <= L_d (for eps <= 1), so |digit_d| <= L_d + h_d.
    bound = sum((lv + lv // 2) * math.prod(levels[:i]) for i, lv in enumerate(levels))
    if bound >= 2**24:
        reasons.append(f"codebook too large for exact float32 packing (partial sums up to {bound} >= 2^24)")
    return reasons


def _cpp_decode_reasons(indices: torch.Tensor, levels: tuple[int, ...]) -> list[str]:
    reasons = _backend.cpp_reasons(indices)
    if math.prod(levels) > 2**31 - 1:
        reasons.append("prod(levels) does not fit in int32")
    return reasons


def _run_torch_encode(z: torch.Tensor, levels: tuple[int, ...], eps: float) -> torch.Tensor:
    if bool(torch.isnan(z).any()):
        n_nan = int(torch.isnan(z).any(dim=-1).sum())
        raise ValueError(f"fsq_encode: z contains NaN in {n_nan} vectors; FSQ has no level for NaN")
    return torch_fsq_encode(z, levels, eps)


def _run_cpp_encode(z: torch.Tensor, levels: tuple[int, ...], eps: float) -> torch.Tensor:
    op = _fsq_encode_cpp if torch.compiler.is_compiling() else _fsq_encode_cpp_impl
    return op(z, list(levels), eps)


def _run_cpp_decode(indices: torch.Tensor, levels: tuple[int, ...]) -> torch.Tensor:
    op = _fsq_decode_cpp if torch.compiler.is_compiling() else _fsq_decode_cpp_impl
    return op(indices, list(levels))


_ENCODE_BACKENDS = (
    Backend("triton", _backend.triton_kernel_missing, _backend.no_kernel),
    Backend("cpp", _cpp_encode_reasons, _run_cpp_encode),
    Backend("torch", _backend.no_reasons, _run_torch_encode),
)

_DECODE_BACKENDS = (
    Backend("triton", _backend.triton_kernel_missing, _backend.no_kernel),
    Backend("cpp", _cpp_decode_reasons, _run_cpp_decode),
    Backend("torch", _backend.no_reasons, torch_fsq_decode),
)


def fsq_encode(z: torch.Tensor, levels: LevelsLike, eps: float = 1e-3) -> torch.Tensor:
    """FSQ encode: latents to indices, bit-identical to the reference (maths in the module docstring).

    Args:
        z: (..., D) latents, channels last (move the channel axis before calling; layout is the caller's
            business). Any real dtype, computed in float32 whatever the autocast state; may be non-contiguous;
            never modified.
        levels: the D level counts, each >= 2 (e.g. ``[7, 5, 5, 5, 5]`` for the image codec).
        eps: bound widening :math:`\\epsilon`.

    Returns:
        (...) int32 indices, in [0, prod(levels)) for any ``eps`` below 1 / (max(levels) - 1).

    Raises:
        ValueError: ``z`` contains NaN, its last axis is not D long, or ``eps`` makes the bound degenerate.
        BackendUnavailableError: ``AION_FAST_BACKEND`` forces a backend that cannot run this call.
    """
    lv = _as_levels(levels)
    if z.ndim == 0 or z.shape[-1] != len(lv):
        raise ValueError(f"fsq_encode: z must have shape (..., {len(lv)}) for levels {list(lv)}, got {tuple(z.shape)}")
    if z.is_complex():
        raise TypeError(f"fsq_encode: z must be real, got {z.dtype}")
    eps = float(eps)
    if any(v % 2 == 0 and (v - 1) * (1 + eps) / 2 <= 0.5 for v in lv) or eps <= -1:  # atanh(offset / half_l) finite
        raise ValueError(f"fsq_encode: eps={eps} leaves no room for levels {list(lv)}: need (L - 1)(1 + eps) / 2 > 0.5")
    with _backend.no_autocast(z.device):
        z = z.detach().to(torch.float32)
        backend = _backend.select("fsq_encode", _ENCODE_BACKENDS, z, lv, eps)
        return backend.run(z, lv, eps)


def fsq_decode(indices: torch.Tensor, levels: LevelsLike) -> torch.Tensor:
    """FSQ decode: indices to normalised codes.

    Args:
        indices: (...) integer indices in [0, prod(levels)); any integer dtype.
        levels: the D level counts.

    Returns:
        (..., D) float32 codes :math:`(c_d - h_d) / h_d` in [-1, 1].

    Raises:
        TypeError: ``indices`` is not an integer tensor.
        ValueError: an index lies outside [0, prod(levels)).
        BackendUnavailableError: ``AION_FAST_BACKEND`` forces a backend that cannot run this call.
    """
    lv = _as_levels(levels)
    if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
        raise TypeError(f"fsq_decode: indices must be an integer tensor, got {indices.dtype}")
    codebook = math.prod(lv)
    backend = _backend.select("fsq_decode", _DECODE_BACKENDS, indices, lv)
    if backend.name != "cpp" or indices.dtype != torch.int32:  # the C++ op checks int32 indices itself
        if indices.numel():
            lo, hi = torch.aminmax(indices)
            if int(lo) < 0 or int(hi) >= codebook:
                raise ValueError(f"fsq_decode: indices must lie in [0, {codebook}), got [{int(lo)}, {int(hi)}]")
        if backend.name == "cpp":
            indices = indices.to(torch.int32)
    return backend.run(indices, lv)
