r"""Finite scalar quantisation (FSQ) index ops: encode latents (..., D) to indices, decode indices to codes.

FSQ (Mentzer et al. 2023, https://arxiv.org/abs/2309.15505), with :math:`h_d = \lfloor L_d / 2 \rfloor` and a small
:math:`\epsilon` (default ``1e-3``) that makes the outer levels reachable:

.. math::

    a_d = \frac{(L_d - 1)(1 + \epsilon)}{2}, \qquad
    o_d = \begin{cases} 0.5 & L_d \text{ even} \\ 0 & L_d \text{ odd} \end{cases}, \qquad
    s_d = \operatorname{atanh}(o_d / a_d)

    q_d = \operatorname{round}(\tanh(z_d + s_d)\, a_d - o_d), \qquad
    \hat z_d = q_d / h_d, \qquad
    \text{index} = \sum_d (\hat z_d h_d + h_d)\, \beta_d, \quad \beta = (1, L_0, L_0 L_1, \dots)

Decoding inverts the mixed-radix packing. Every step is one float32 rounding in the reference's order; the index is
int32. All backends give the reference's indices bit for bit:

* ``torch``: :func:`torch_fsq_encode` / :func:`torch_fsq_decode`, the reference itself.
* ``cpp``: no tanh at run time: compares :math:`z + s` with exact decision thresholds (:func:`decision_thresholds`).
  Fallback, one fused pass whose tanh is torch's own MKL ``vsTanh`` (``VML_HA``) bound from ``libtorch_cpu``:
  other float32 tanh implementations differ in the last bit on many inputs, which flips roundings near
  half-integers; it is checked bit for bit first (:func:`fused_tanh_unavailable_reason`), else PyTorch computes the
  tanh and C++ the rest. Levels in [2, 21] and :math:`-1 < \epsilon \le 1` only: the order-independent sum needs
  exact integer digits, :math:`(q / h) h = q` in float32, and partial sums below :math:`2^{24}`.
* ``triton``: CUDA (or ``TRITON_INTERPRET=1`` when forced); PyTorch computes the tanh on the device and the kernel
  the rest.

Eager fast path: CPU float32, not compiling, backend unset or ``cpp``, list/tuple levels the C++ path takes and a
float ``eps`` go straight to the threshold kernel, skipping validation already done once per (levels, eps).
Infinite latents map to the outermost levels; a NaN latent raises ``ValueError``, as do indices outside
:math:`[0, \prod_d L_d)` on decode.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from aion_fast import dispatch
from aion_fast.dispatch import Backend

__all__ = [
    "fsq_decode",
    "fsq_encode",
    "fused_tanh_unavailable_reason",
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

    @functools.cached_property
    def half_width_f32(self) -> torch.Tensor:
        with torch.inference_mode(False):
            return self.half_width.float()

    @functools.cached_property
    def basis_f32(self) -> torch.Tensor:
        with torch.inference_mode(False):
            return self.basis.float()

    def to(self, device: torch.device) -> _Constants:
        if device.type == "cpu":
            return self
        return _Constants(*(getattr(self, f.name).to(device) for f in dataclasses.fields(self)))


def _as_levels(levels: LevelsLike) -> tuple[int, ...]:
    if isinstance(levels, torch.Tensor):
        levels = levels.tolist()
    out = tuple(int(v) for v in levels)
    if not out or min(out) < 2:
        raise ValueError(f"FSQ levels must be a non-empty sequence of integers >= 2, got {list(out)}")
    return out


@functools.lru_cache(maxsize=64)
def _constants(levels: tuple[int, ...], eps: float) -> _Constants:
    # Cached for the process: built as normal tensors even when the first call is in inference mode, or a later
    # autograd call (codec training) could not save them for backward.
    with torch.inference_mode(False):
        return _build_constants(levels, eps)


def _build_constants(levels: tuple[int, ...], eps: float) -> _Constants:
    lv = torch.tensor(levels, dtype=torch.int32)
    half_l = (lv - 1) * (1 + eps) / 2
    offset = torch.where(lv % 2 == 1, 0.0, 0.5)
    shift = torch.atanh(offset / half_l)
    basis = torch.cumprod(torch.tensor((1,) + levels[:-1]), dim=0, dtype=torch.int32)
    return _Constants(lv, half_l, offset, shift, lv // 2, basis)


# ---- PyTorch reference (oracle and fallback) -------------------------------------------------------------------------


def torch_fsq_encode_from_tanh(tanh_z: torch.Tensor, levels: LevelsLike, eps: float = 1e-3) -> torch.Tensor:
    """Reference FSQ index from ``tanh_z`` (..., D) float32 = :math:`\\tanh(z + s)`: (...) int32 indices."""
    c = _constants(_as_levels(levels), float(eps)).to(tanh_z.device)
    bounded = tanh_z * c.half_l - c.offset
    normalized = bounded.round() / c.half_width
    digits = normalized * c.half_width + c.half_width
    return (digits * c.basis.to(digits.dtype)).sum(dim=-1).to(torch.int32)


def torch_fsq_bound(z: torch.Tensor, levels: LevelsLike, eps: float = 1e-3) -> torch.Tensor:
    """(..., D) float32 :math:`\\tanh(z_d + s_d)\\, a_d - o_d` of (..., D) latents, before rounding (differentiable)."""
    c = _constants(_as_levels(levels), float(eps)).to(z.device)
    return torch.tanh(z.float() + c.shift) * c.half_l - c.offset


def torch_fsq_encode(z: torch.Tensor, levels: LevelsLike, eps: float = 1e-3) -> torch.Tensor:
    """Reference FSQ encode in float32: (..., D) latents -> (...) int32 indices (NaN gives undefined indices)."""
    c = _constants(_as_levels(levels), float(eps)).to(z.device)
    return torch_fsq_encode_from_tanh(torch.tanh(z.float() + c.shift), levels, eps)


def torch_fsq_decode(indices: torch.Tensor, levels: LevelsLike) -> torch.Tensor:
    """Reference FSQ decode: (...) indices in [0, prod(levels)) -> (..., D) float32 codes in [-1, 1]."""
    c = _constants(_as_levels(levels), 0.0).to(indices.device)
    idx = indices.long().unsqueeze(-1)
    digits = (idx // c.basis) % c.levels
    return ((digits - c.half_width) / c.half_width).to(torch.float32)


# ---- Layout helpers --------------------------------------------------------------------------------------------------


def _index_shape(z: torch.Tensor, channel_first: bool) -> tuple[int, ...]:
    return (z.shape[0], *z.shape[2:]) if channel_first else tuple(z.shape[:-1])


def _channels_last(z: torch.Tensor, channel_first: bool) -> torch.Tensor:
    return z.movedim(1, -1) if channel_first else z


def _as_odi(z: torch.Tensor, channel_first: bool) -> torch.Tensor:
    """(O, D, I) view of non-empty latents in either layout (a copy only when leading axes cannot be merged).

    Channel-first (B, D, *S) -> (B, D, prod(S)); channels-last (..., D) -> (prod(...[:-1]), D, ...[-2]), i.e. the
    position axes become O and I and the C++ kernels read z with its own strides.
    """
    if channel_first:
        return z.reshape(z.shape[0], z.shape[1], -1)
    if z.ndim == 1:
        return z.reshape(1, -1, 1)
    return z.reshape(-1, z.shape[-2], z.shape[-1]).transpose(1, 2)


@functools.lru_cache(maxsize=64)
def _device_constants(levels: tuple[int, ...], eps: float, device: torch.device) -> _Constants:
    with torch.inference_mode(False):  # cached: normal tensors (see _constants)
        return _constants(levels, eps).to(device)


# ---- C++ path (aion_fast._C), registered as custom ops so torch.compile can trace it ---------------------------------

_tanh_status: list[str | None] = []  # [reason or None] once checked


def fused_tanh_unavailable_reason() -> str | None:
    """Why the C++ path cannot compute tanh itself (None: it can, bit-identical to ``torch.tanh``).

    Binds MKL VML's tanh from ``libtorch_cpu`` once per process and checks it bit for bit against ``torch.tanh`` on
    2^17 float32 values (random, a sweep of [-10, 10], zeros, infinities, NaN, subnormals).
    """
    if _tanh_status:
        return _tanh_status[0]
    ext = dispatch.load_extension()
    if ext is None:
        return f"the C++ extension is not available ({dispatch.extension_error()})"
    import os

    library = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    reason = ext.fsq_bind_tanh(library) or None
    if reason is None:
        g = torch.Generator().manual_seed(0)
        specials = torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan, 1e-40, -1e-40, 1e-30, 9.0, 9.1, 3e38])
        x = torch.cat([torch.randn(1 << 16, generator=g) * 4, torch.linspace(-10, 10, 1 << 16), specials])
        ours = torch.empty_like(x)
        ext.fsq_tanh(x.numpy(), ours.numpy())
        ref = torch.tanh(x)
        same = (ours.view(torch.int32) == ref.view(torch.int32)) | (torch.isnan(ours) & torch.isnan(ref))
        if not bool(same.all()):
            reason = f"the bound MKL tanh differs from torch.tanh on {int((~same).sum())} of {x.numel()} check values"
    _tanh_status.append(reason)
    return reason


def _ordered(x: torch.Tensor) -> torch.Tensor:
    """float32 -> int64 keys in the order of the values (-0.0 just below +0.0); inverse: :func:`_from_ordered`."""
    bits = x.view(torch.int32).long()
    return torch.where(bits < 0, -(bits & 0x7FFFFFFF) - 1, bits)


def _from_ordered(key: torch.Tensor) -> torch.Tensor:
    bits = torch.where(key < 0, (-(key + 1)) | -0x80000000, key)
    return bits.to(torch.int32).view(torch.float32)


@dataclass(frozen=True)
class _Thresholds:
    """Exact decision thresholds of the reference FSQ encode on this machine's ``torch.tanh`` (see
    :func:`decision_thresholds`)."""

    values: torch.Tensor  # (T,) float32, ascending within each channel
    first: torch.Tensor  # (D + 1,) int32 offsets into values
    basis: torch.Tensor  # (D,) int32
    base: int  # index of the all-lowest-level code
    shift: torch.Tensor  # (D,) float32, s_d

    @functools.cached_property
    def kernel_args(self) -> tuple:
        """(shift, values, first, basis, base) as the extension takes them (numpy views, made once)."""
        return self.shift.numpy(), self.values.numpy(), self.first.numpy(), self.basis.numpy(), self.base


@functools.lru_cache(maxsize=64)
def decision_thresholds(levels: tuple[int, ...], eps: float) -> _Thresholds | str:
    """The reference encode as comparisons: per channel, the float32 x = z + s where its level steps up.

    :math:`q_d(x) = \\operatorname{round}(\\tanh(x)\\, a_d - o_d)` (this process's ``torch.tanh``) is a
    non-decreasing step function of float32 x; a bisection over ordered float32 values (all steps at once) finds each
    step with the reference's own ops, then the 2 * 4096 values around it are checked for one clean step (and
    -0.0 / +0.0 must agree). Index = ``base + sum_d basis_d * #{thresholds_d <= x_d}``. Between the checked windows
    this relies on torch's tanh being monotone (a slow test checks all 2^32 inputs for the codecs' levels).

    Returns:
        The thresholds, or a string saying why they could not be derived (the caller then takes another path).
    """
    c = _constants(levels, eps)
    ends = torch.tensor([-math.inf, math.inf])
    ranges = [(torch.tanh(ends) * c.half_l[d] - c.offset[d]).round().long().tolist() for d in range(len(levels))]
    for d, ((lo, hi), lv) in enumerate(zip(ranges, levels, strict=True)):
        if not -lv <= lo < hi <= lv:
            return f"channel {d}: levels {lo}..{hi} outside the expected range for L={lv}"
    # one row per step (channel d, level k -> k + 1), all bisected together
    channel = torch.tensor([d for d, (lo, hi) in enumerate(ranges) for _ in range(lo, hi)])
    step = torch.tensor([k for lo, hi in ranges for k in range(lo, hi)], dtype=torch.float32)
    half_l, offset = c.half_l[channel], c.offset[channel]

    def level(x: torch.Tensor) -> torch.Tensor:  # (S, N) float32 -> the reference's levels, row s on channel[s]
        return (torch.tanh(x) * half_l[:, None] - offset[:, None]).round()

    a = _ordered(ends[:1]).expand(len(step)).clone()
    b = _ordered(ends[1:]).expand(len(step)).clone()
    while bool((b - a > 1).any()):  # invariant: level(a) <= k < level(b); 33 rounds
        mid = (a + b) // 2
        up = level(_from_ordered(mid)[:, None])[:, 0] > step
        b = torch.where(up, mid, b)
        a = torch.where(up, a, mid)
    window = torch.arange(-4096, 4097)
    around = level(_from_ordered(b[:, None] + window))
    clean = (around[:, :4096] == step[:, None]).all(dim=1) & (around[:, 4096:] == step[:, None] + 1).all(dim=1)
    if not bool(clean.all()):
        bad = int((~clean).nonzero()[0])
        return f"channel {int(channel[bad])}: the level does not step cleanly at x = {float(_from_ordered(b[bad]))}"
    values = _from_ordered(b)
    zero = values == 0
    if bool(zero.any()):
        signed = level(torch.tensor([[-0.0, 0.0]]).expand(len(step), 2))
        if bool((zero & (signed[:, 0] != signed[:, 1])).any()):
            return "-0.0 and +0.0 fall on different levels"
    first = [0]
    for lo, hi in ranges:
        first.append(first[-1] + hi - lo)
    base = sum((lo + lv // 2) * int(c.basis[d]) for d, ((lo, _), lv) in enumerate(zip(ranges, levels, strict=True)))
    return _Thresholds(values, torch.tensor(first, dtype=torch.int32), c.basis, base, c.shift)


# Eager calls go straight to the ``*_impl`` functions: the first call of any torch.library custom op imports
# torch._dynamo and Triton, which is slow. Under torch.compile the dispatchers call the registered ops instead.


def _nan_error(n_nan: int, vectors: int) -> ValueError:
    return ValueError(f"fsq_encode: z contains NaN in {n_nan} of {vectors} vectors; FSQ has no level for NaN")


def _encode_by_thresholds(
    ext: Any, z: torch.Tensor, thresholds: _Thresholds, channel_first: bool, wide: bool = False
) -> torch.Tensor:
    """Non-empty float32 CPU latents -> int32 (``wide``: int64) indices by the C++ threshold kernel (it allocates
    them); NaN raises."""
    view = z if channel_first and z.ndim == 3 else _as_odi(z, channel_first)  # (B, D, T) is already (O, D, I)
    out, n_nan = ext.fsq_encode_thresholds_new(view.numpy(), *thresholds.kernel_args, wide=wide)
    if n_nan:
        raise _nan_error(n_nan, out.size)
    indices = torch.from_numpy(out)
    return indices if view is z else indices.reshape(_index_shape(z, channel_first))


def _fsq_encode_cpp_impl(z: torch.Tensor, levels: list[int], eps: float, channel_first: bool) -> torch.Tensor:
    """Non-empty float32 CPU latents in either layout -> int32 indices via aion_fast._C; ValueError on NaN."""
    ext = dispatch.load_extension()
    thresholds = decision_thresholds(tuple(levels), eps)
    if isinstance(thresholds, _Thresholds):
        return _encode_by_thresholds(ext, z, thresholds, channel_first)
    c = _constants(tuple(levels), eps)
    shape = _index_shape(z, channel_first)
    if fused_tanh_unavailable_reason() is None:
        view = _as_odi(z, channel_first)
        out = torch.empty(view.shape[0], view.shape[2], dtype=torch.int32)
        n_nan = ext.fsq_encode(view.numpy(), c.levels.numpy(), c.shift.numpy(), c.half_l.numpy(), c.offset.numpy(),
                               out.numpy())  # fmt: skip
    else:  # PyTorch's tanh, then the rest in C++
        z2 = _channels_last(z, channel_first).reshape(-1, len(levels))
        tanh_z = torch.empty(z2.shape, dtype=torch.float32)  # contiguous whatever the layout of z
        torch.add(z2, c.shift, out=tanh_z)
        tanh_z.tanh_()
        out = torch.empty(z2.shape[0], dtype=torch.int32)
        n_nan = ext.fsq_encode_from_tanh(
            tanh_z.numpy(), c.levels.numpy(), c.half_l.numpy(), c.offset.numpy(), out.numpy()
        )
    if n_nan:
        raise _nan_error(n_nan, out.numel())
    return out.reshape(shape)


def _eps_leaves_room(levels: tuple[int, ...], eps: float) -> bool:
    """Whether every level keeps (L - 1)(1 + eps) / 2 > 0.5 for even L and eps > -1 (atanh(offset / half_l) finite)."""
    return not (eps <= -1 or any(v % 2 == 0 and (v - 1) * (1 + eps) / 2 <= 0.5 for v in levels))


@functools.lru_cache(maxsize=64)
def _direct_levels(levels: tuple, eps: float) -> tuple[int, ...] | None:
    """The validated levels when an fsq_encode(levels, eps) call may take the C++ fast path, else None."""
    try:
        lv = _as_levels(levels)
    except (TypeError, ValueError):
        return None
    if not _eps_leaves_room(lv, eps) or _exact_packing_reasons(lv, eps):
        return None
    return lv


def _fsq_encode_direct(
    ext: Any, z: torch.Tensor, levels: Any, eps: Any, channel_first: bool, wide: bool = False
) -> torch.Tensor | None:
    """The eager fast path of :func:`fsq_encode`: same kernel, indices and NaN error as the ``cpp`` backend.

    Returns None (the caller then dispatches as usual) unless ``levels`` is a list or tuple and ``eps`` a float that
    the C++ path takes, ``z`` is strided, non-empty and of a matching shape, and the thresholds exist.
    """
    if type(levels) not in (list, tuple) or type(eps) is not float or z.layout is not torch.strided:
        return None
    try:
        lv = _direct_levels(tuple(levels), eps)
    except TypeError:  # unhashable level values: the slow path says what is wrong with them
        return None
    ndim = z.ndim
    if lv is None or ndim < (2 if channel_first else 1) or z.shape[1 if channel_first else -1] != len(lv):
        return None
    thresholds = decision_thresholds(lv, eps)
    if not isinstance(thresholds, _Thresholds) or z.numel() == 0:
        return None
    return _encode_by_thresholds(ext, z.detach() if z.requires_grad else z, thresholds, channel_first, wide)


@torch.library.custom_op("aion_fast::fsq_encode_cpp", mutates_args=())
def _fsq_encode_cpp(z: torch.Tensor, levels: list[int], eps: float, channel_first: bool) -> torch.Tensor:
    return _fsq_encode_cpp_impl(z, levels, eps, channel_first)


@_fsq_encode_cpp.register_fake
def _(z: torch.Tensor, levels: list[int], eps: float, channel_first: bool) -> torch.Tensor:
    return z.new_empty(_index_shape(z, channel_first), dtype=torch.int32)


def _fsq_decode_cpp_impl(indices: torch.Tensor, levels: list[int]) -> torch.Tensor:
    """(...) int32 CPU indices -> (..., D) float32 codes via aion_fast._C; raises ValueError when out of range."""
    ext = dispatch.load_extension()
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


# ---- Triton path (aion_fast.kernels.fsq): CUDA tensors, or CPU tensors under TRITON_INTERPRET=1 when forced ----------


def _run_triton_encode(z: torch.Tensor, levels: tuple[int, ...], eps: float, channel_first: bool) -> torch.Tensor:
    from aion_fast.kernels.fsq import fsq_encode_from_tanh_fwd, fsq_encode_from_tanh_op

    c = _device_constants(levels, eps, z.device)
    z2 = _channels_last(z, channel_first).reshape(-1, len(levels))
    tanh_z = torch.empty(z2.shape, dtype=torch.float32, device=z.device)
    torch.add(z2, c.shift, out=tanh_z)
    tanh_z.tanh_()  # the device's own torch tanh, as in the reference (see the module docstring)
    if torch.compiler.is_compiling():  # the registered triton_op; NaN checked on the device, no host sync
        out, nan_rows = fsq_encode_from_tanh_op(tanh_z, c.half_l, c.offset, c.half_width_f32, c.basis_f32)
        torch._assert_async(nan_rows == 0, "fsq_encode: z contains NaN; FSQ has no level for NaN")
        return out.reshape(_index_shape(z, channel_first))
    out, nan_rows = fsq_encode_from_tanh_fwd(tanh_z, c.half_l, c.offset, c.half_width_f32, c.basis_f32)
    n_nan = int(nan_rows)  # the op's one host sync: NaN must raise before the indices are used
    if n_nan:
        raise ValueError(f"fsq_encode: z contains NaN in {n_nan} of {out.numel()} vectors; FSQ has no level for NaN")
    return out.reshape(_index_shape(z, channel_first))


def _run_triton_decode(indices: torch.Tensor, levels: tuple[int, ...]) -> torch.Tensor:
    from aion_fast.kernels.fsq import fsq_decode_fwd, fsq_decode_op

    c = _device_constants(levels, 0.0, indices.device)
    out = (fsq_decode_op if torch.compiler.is_compiling() else fsq_decode_fwd)(
        indices.reshape(-1).to(torch.int32), c.levels, c.basis
    )
    return out.reshape(*indices.shape, len(levels))


# ---- Backends and dispatch -------------------------------------------------------------------------------------------


def _exact_packing_reasons(levels: tuple[int, ...], eps: float) -> list[str]:
    reasons = []
    if max(levels) > CPP_MAX_LEVEL:
        reasons.append(f"levels above {CPP_MAX_LEVEL} ({list(levels)}) have inexact float32 digits")
    if not -1.0 < eps <= 1.0:
        reasons.append(f"eps={eps} outside (-1, 1]")
    # Largest |partial sum|: |q_d| <= L_d (for eps <= 1), so |digit_d| <= L_d + h_d.
    bound = sum((lv + lv // 2) * math.prod(levels[:i]) for i, lv in enumerate(levels))
    if bound >= 2**24:
        reasons.append(f"codebook too large for exact float32 packing (partial sums up to {bound} >= 2^24)")
    return reasons


def _cpp_encode_reasons(z: torch.Tensor, levels: tuple[int, ...], eps: float, channel_first: bool) -> list[str]:
    return dispatch.cpp_reasons(z) + _exact_packing_reasons(levels, eps)


def _triton_encode_reasons(z: torch.Tensor, levels: tuple[int, ...], eps: float, channel_first: bool) -> list[str]:
    return dispatch.triton_reasons(z) + _exact_packing_reasons(levels, eps)


def _cpp_decode_reasons(indices: torch.Tensor, levels: tuple[int, ...]) -> list[str]:
    reasons = dispatch.cpp_reasons(indices)
    if math.prod(levels) > 2**31 - 1:
        reasons.append("prod(levels) does not fit in int32")
    return reasons


def _triton_decode_reasons(indices: torch.Tensor, levels: tuple[int, ...]) -> list[str]:
    reasons = dispatch.triton_reasons(indices)
    if math.prod(levels) > 2**31 - 1:
        reasons.append("prod(levels) does not fit in int32")
    return reasons


def _run_torch_encode(z: torch.Tensor, levels: tuple[int, ...], eps: float, channel_first: bool) -> torch.Tensor:
    zl = _channels_last(z, channel_first)
    if bool(torch.isnan(zl).any()):
        n_nan = int(torch.isnan(zl).any(dim=-1).sum())
        raise ValueError(f"fsq_encode: z contains NaN in {n_nan} vectors; FSQ has no level for NaN")
    return torch_fsq_encode(zl, levels, eps)


def _run_cpp_encode(z: torch.Tensor, levels: tuple[int, ...], eps: float, channel_first: bool) -> torch.Tensor:
    op = _fsq_encode_cpp if torch.compiler.is_compiling() else _fsq_encode_cpp_impl
    return op(z, list(levels), eps, channel_first)


def _run_cpp_decode(indices: torch.Tensor, levels: tuple[int, ...]) -> torch.Tensor:
    op = _fsq_decode_cpp if torch.compiler.is_compiling() else _fsq_decode_cpp_impl
    return op(indices, list(levels))


_ENCODE_BACKENDS = (
    Backend("triton", _triton_encode_reasons, _run_triton_encode),
    Backend("cpp", _cpp_encode_reasons, _run_cpp_encode),
    Backend("torch", dispatch.no_reasons, _run_torch_encode),
)

_DECODE_BACKENDS = (
    Backend("triton", _triton_decode_reasons, _run_triton_decode),
    Backend("cpp", _cpp_decode_reasons, _run_cpp_decode),
    Backend("torch", dispatch.no_reasons, torch_fsq_decode),
)


def fsq_encode(
    z: torch.Tensor,
    levels: LevelsLike,
    eps: float = 1e-3,
    channel_first: bool = True,
    *,
    dtype: torch.dtype = torch.int32,
) -> torch.Tensor:
    """FSQ encode: latents to indices, bit-identical to the reference (maths in the module docstring).

    Args:
        z: (B, D, *spatial) latents (``channel_first=True``, the codecs' layout, read in place), or (..., D) with
            ``channel_first=False``. Any real dtype, computed in float32 whatever the autocast state; never modified.
        levels: the D level counts, each >= 2 (e.g. ``[7, 5, 5, 5, 5]`` for the image codec).
        eps: bound widening :math:`\\epsilon`.
        channel_first: the channel axis is 1 (else last); never guessed from the shape.
        dtype: of the indices, ``torch.int32`` or ``torch.int64``.

    Returns:
        indices of shape ``z.shape[:-1]`` (resp. (B, *spatial)), in [0, prod(levels)) for any ``eps`` below
        1 / (max(levels) - 1).

    Raises:
        ValueError: ``z`` contains NaN, its channel axis is not D long, or ``eps`` makes the bound degenerate.
        BackendUnavailableError: ``AION_FAST_BACKEND`` forces a backend that cannot run this call.
    """
    wide = dtype is torch.int64
    if not wide and dtype is not torch.int32:
        raise ValueError(f"fsq_encode: dtype must be torch.int32 or torch.int64, got {dtype}")
    if type(z) is torch.Tensor and z.dtype is torch.float32 and z.is_cpu and not torch.compiler.is_compiling():
        ext = dispatch.direct_extension()
        if ext is not None:
            indices = _fsq_encode_direct(ext, z, levels, eps, channel_first, wide)
            if indices is not None:
                return indices
    lv = _as_levels(levels)
    axis = 1 if channel_first else -1
    if z.ndim < (2 if channel_first else 1) or z.shape[axis] != len(lv):
        d = len(lv)
        layout = f"(B, {d}, ...) ({d} channels on axis 1" if channel_first else f"(..., {d}) ({d} channels last"
        other = "False for channels-last" if channel_first else "True for (B, D, ...)"
        raise ValueError(f"fsq_encode: z must have shape {layout}, channel_first={channel_first}) for levels "
                         f"{list(lv)}, got {tuple(z.shape)}; pass channel_first={other} latents")  # fmt: skip
    if z.is_complex():
        raise TypeError(f"fsq_encode: z must be real, got {z.dtype}")
    eps = float(eps)
    if not _eps_leaves_room(lv, eps):
        raise ValueError(f"fsq_encode: eps={eps} leaves no room for levels {list(lv)}: need (L - 1)(1 + eps) / 2 > 0.5")
    channel_first = bool(channel_first)
    if z.numel() == 0:
        return torch.empty(_index_shape(z, channel_first), dtype=dtype, device=z.device)
    with dispatch.no_autocast(z.device):
        z = z.detach().to(torch.float32)
        backend = dispatch.select("fsq_encode", _ENCODE_BACKENDS, z, lv, eps, channel_first, key=(lv, eps))
        return backend.run(z, lv, eps, channel_first).to(dtype)


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
    backend = dispatch.select("fsq_decode", _DECODE_BACKENDS, indices, lv, key=(lv,))
    if backend.name != "cpp" or indices.dtype != torch.int32:  # the C++ op checks int32 indices itself
        if indices.numel():
            lo, hi = torch.aminmax(indices)
            if int(lo) < 0 or int(hi) >= codebook:
                raise ValueError(f"fsq_decode: indices must lie in [0, {codebook}), got [{int(lo)}, {int(hi)}]")
        if backend.name == "cpp":
            indices = indices.to(torch.int32)
    return backend.run(indices, lv)
