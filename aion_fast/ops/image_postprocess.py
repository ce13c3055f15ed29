r"""Image decode epilogue of the image codec: 54 -> 9 projection, inverse range compression, rescale, band selection.

Inverse of :mod:`aion_fast.ops.image_preprocess` (AION-1 paper §4.1.1). From decoder output ``h`` (B, D, H, W),
projection ``weight`` (NB, D) and ``bias`` (NB,), for requested bands at channels :math:`c_1..c_C`:

.. math::

    p = h W^\top, \qquad
    \text{out}[b, i, y, x] = s\,\alpha \sinh\!\Bigl(\frac{(p_{c_i} + \text{bias}_{c_i}) / \kappa}{\alpha}\Bigr)

(range compression :math:`\alpha`, multiplier :math:`\kappa`, zero-point factor :math:`s`), one float32 op per step
in the reference's order. The projection stays a ``torch.matmul`` over all NB rows on every backend: the reference's
values depend on its BLAS float32 sums. Backends: ``torch`` (oracle), ``cpp`` (CPU float32; sinh in double, rounded
once, so the loop vectorises), ``triton`` (CUDA).

Exactness: PyTorch's CPU sinh is itself two functions (vectorised loop vs glibc ``sinhf`` tail, differing in the last
bit), so no backend can match it bit for bit; all are within 1e-6 relative of :func:`torch_image_postprocess` (the
C++ sinh within one float32 ulp of exact). Non-finite values propagate; sinh overflows beyond ~89.4 (fluxes ~1e36).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from aion_fast import dispatch
from aion_fast.dispatch import Backend

__all__ = ["image_postprocess", "torch_image_postprocess"]


def _project(h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(B, D, H, W) decoder output -> (B, H, W, NB) projection without its bias (BLAS, the reference's sums)."""
    return torch.matmul(h.permute(0, 2, 3, 1), weight.t())


# ---- PyTorch reference (oracle and fallback) -------------------------------------------------------------------------


def torch_image_postprocess(
    h: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    channels: Sequence[int],
    zeropoint_scale: float = 1.0,
    range_compression_factor: float = 0.01,
    mult_factor: float = 10.0,
) -> torch.Tensor:
    """Reference (the codec's PyTorch code): arguments as :func:`image_postprocess` in float32.

    Returns:
        (B, C, H, W) float32, contiguous.
    """
    out = _project(h, weight).add_(bias)[..., list(channels)]
    out.div_(mult_factor).div_(range_compression_factor)
    out = (torch.sinh(out) if out.requires_grad else out.sinh_()).mul_(range_compression_factor)  # autograd: no sinh_
    if zeropoint_scale != 1.0:
        out.mul_(zeropoint_scale)
    return out.permute(0, 3, 1, 2).contiguous()


# ---- C++ path (aion_fast._C), registered as a custom op so torch.compile can trace it --------------------------------

# Eager calls go straight to the ``*_impl`` function: the first call of any torch.library custom op imports
# torch._dynamo and Triton, which is slow. Under torch.compile the dispatcher calls the registered op instead.


def _image_postprocess_cpp_impl(
    h: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    channels: list[int],
    zeropoint_scale: float,
    range_compression_factor: float,
    mult_factor: float,
) -> torch.Tensor:
    """(B, D, H, W) float32 CPU decoder output -> (B, C, H, W) float32 via torch.matmul + aion_fast._C."""
    ext = dispatch.load_extension()
    projected = _project(h, weight).contiguous()
    batch, height, width, _ = projected.shape
    out = torch.empty((batch, len(channels), height, width), dtype=torch.float32)
    ext.image_postprocess(
        projected.numpy(),
        bias.contiguous().numpy(),
        torch.tensor(channels, dtype=torch.int32).numpy(),
        range_compression_factor,
        mult_factor,
        zeropoint_scale,
        out.numpy(),
    )
    return out


@torch.library.custom_op("aion_fast::image_postprocess_cpp", mutates_args=())
def _image_postprocess_cpp(
    h: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    channels: list[int],
    zeropoint_scale: float,
    range_compression_factor: float,
    mult_factor: float,
) -> torch.Tensor:
    return _image_postprocess_cpp_impl(
        h, weight, bias, channels, zeropoint_scale, range_compression_factor, mult_factor
    )


@_image_postprocess_cpp.register_fake
def _(
    h: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    channels: list[int],
    zeropoint_scale: float,
    range_compression_factor: float,
    mult_factor: float,
) -> torch.Tensor:
    return h.new_empty((h.shape[0], len(channels), h.shape[2], h.shape[3]), dtype=torch.float32)


def _run_cpp(*args) -> torch.Tensor:
    op = _image_postprocess_cpp if torch.compiler.is_compiling() else _image_postprocess_cpp_impl
    return op(*args)


def _cpp_reasons(h: torch.Tensor, *_) -> list[str]:
    reasons = dispatch.cpp_reasons(h)
    ext = dispatch.load_extension()
    if ext is not None and not hasattr(ext, "image_postprocess"):
        reasons.append("aion_fast._C was built without image_postprocess (stale build: rebuild it)")
    return reasons


# ---- Triton path (aion_fast.kernels.image_postprocess), CUDA tensors -------------------------------------------------


def _run_triton(h: torch.Tensor, weight: torch.Tensor, *args) -> torch.Tensor:
    from aion_fast.kernels.image_postprocess import image_postprocess_fwd, image_postprocess_op

    launch = image_postprocess_op if torch.compiler.is_compiling() else image_postprocess_fwd
    return launch(_project(h, weight).contiguous(), *args)


# ---- Backends and dispatch -------------------------------------------------------------------------------------------

_BACKENDS = (
    Backend("triton", lambda h, *_: dispatch.triton_reasons(h), _run_triton),
    Backend("cpp", _cpp_reasons, _run_cpp),
    Backend("torch", dispatch.no_reasons, torch_image_postprocess),
)


def image_postprocess(
    h: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    channels: Sequence[int],
    zeropoint_scale: float = 1.0,
    range_compression_factor: float = 0.01,
    mult_factor: float = 10.0,
) -> torch.Tensor:
    """Projects decoder features to bands, undoes the range compression and rescale (module docstring).

    Args:
        h: (B, D, H, W) decoder output, any float dtype (computed in float32), any memory layout; never modified.
        weight: (NB, D) projection weight (``ImageCodec.subsample_out.weight``).
        bias: (NB,) projection bias.
        channels: the C requested channels in ``[0, NB)`` (``BAND_TO_INDEX`` of the bands), in output order.
        zeropoint_scale, range_compression_factor, mult_factor: :math:`s` (> 0, :math:`10^{1.8}` for HSC),
            :math:`\\alpha` (> 0), :math:`\\kappa` (non-zero).

    Returns:
        (B, C, H, W) float32, contiguous, on the device of ``h``.

    Raises:
        ValueError: a shape, channel or parameter is invalid, or the tensors are on different devices.
        BackendUnavailableError: ``AION_FAST_BACKEND`` forces a backend that cannot run this call.
    """
    if h.ndim != 4 or not h.is_floating_point():
        raise ValueError(
            f"image_postprocess: h must be a floating (B, D, H, W) tensor, got {h.dtype} of shape {tuple(h.shape)}"
        )
    if weight.ndim != 2 or weight.shape[1] != h.shape[1] or bias.shape != (weight.shape[0],):
        raise ValueError(
            f"image_postprocess: weight must be (NB, {h.shape[1]}) and bias (NB,), got {tuple(weight.shape)} and "
            f"{tuple(bias.shape)}; pass the codec's subsample_out.weight and .bias"
        )
    num_bands = weight.shape[0]
    channels = [int(c) for c in channels]
    if not channels or len(set(channels)) != len(channels) or any(not 0 <= c < num_bands for c in channels):
        raise ValueError(f"image_postprocess: channels must be distinct values in [0, {num_bands}), got {channels}")
    if not range_compression_factor > 0 or not zeropoint_scale > 0 or mult_factor == 0:
        raise ValueError(
            f"image_postprocess: range_compression_factor ({range_compression_factor}) and zeropoint_scale "
            f"({zeropoint_scale}) must be positive and mult_factor ({mult_factor}) non-zero"
        )
    if len({h.device, weight.device, bias.device}) != 1:
        raise ValueError(
            f"image_postprocess: h, weight and bias must be on one device, got {h.device}, {weight.device} and "
            f"{bias.device}; move them with .to(device)"
        )
    tensors = [t.detach().to(torch.float32) for t in (h, weight, bias)]
    args = (*tensors, channels, float(zeropoint_scale), float(range_compression_factor), float(mult_factor))
    with dispatch.no_autocast(h.device):
        return dispatch.select("image_postprocess", _BACKENDS, *args).run(*args)
