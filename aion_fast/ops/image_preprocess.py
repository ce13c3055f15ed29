r"""Fused image preprocessing of the image codec: crop, clip, rescale, arcsinh and band placement in one pass.

Band :math:`i` of a (B, C, H, W) survey batch goes to channel :math:`c_i` of the ``num_bands`` layout (AION-1 paper
§4.1.1); each pixel of the central S x S window becomes, one float32 op at a time in this order (the order that
reproduces the reference's tokens),

.. math::

    v = \min(\max(x, -m_i), m_i) / s, \qquad
    \text{out}[b, y, x, c_i] = \kappa\,\bigl(\alpha \operatorname{arcsinh}(v / \alpha)\bigr)

(clip :math:`m_i`, zero-point divisor :math:`s`, range compression :math:`\alpha`, multiplier :math:`\kappa`;
absent channels 0). Output (B, S, S, num_bands), channels-last for the codec's projection, which stays a
``torch.matmul``: the tokens depend on its BLAS float32 sums.

Backends: ``torch`` (:func:`torch_image_preprocess`, oracle and fallback); ``cpp`` (CPU float32, bit-identical:
arcsinh must equal libm's ``asinhf``, which glibc does not round correctly, so csrc/asinhf/ replicates glibc 2.36's
algorithm in AVX2 after a one-time self-check, else calls libm per element; ``AION_FAST_ASINHF_LIBM=1`` forces libm,
``aion_fast._C.asinhf_vector_verified()`` says which); ``triton`` (CUDA, only when forced with
``AION_FAST_BACKEND=triton``: its arcsinh is not checked bit for bit against CUDA's and decides tokens).
A window holding NaN or inf raises ``ValueError`` naming the batch rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from aion_fast import dispatch
from aion_fast.dispatch import Backend

__all__ = [
    "center_crop",
    "crop_origin",
    "image_preprocess",
    "range_compress_",
    "require_finite",
    "torch_image_preprocess",
]


def crop_origin(height: int, width: int, size: int, what: str = "image") -> tuple[int, int]:
    """Top-left corner ``((H - size) // 2, (W - size) // 2)`` of the central window (odd margins leave the extra
    pixel at the bottom and right): the one definition of the crop, used by the codecs and the data readers.

    Raises:
        ValueError: the image is smaller than ``size`` in either axis.
    """
    if height < size or width < size:
        raise ValueError(
            f"{what} is {height}x{width} pixels but the codec needs at least {size}x{size} (it encodes the central "
            f"{size}x{size} window); cut larger stamps or pad the images to {size}x{size}."
        )
    return (height - size) // 2, (width - size) // 2


def center_crop(x: torch.Tensor, size: int, what: str = "image") -> torch.Tensor:
    """Central ``size`` x ``size`` window of the last two axes of ``x`` (..., H, W), as a view (no copy)."""
    top, left = crop_origin(*x.shape[-2:], size, what)
    return x[..., top : top + size, left : left + size]


def require_finite(x: torch.Tensor, what: str) -> None:
    """Raises ``ValueError`` naming the batch rows of ``x`` (B, ...) that hold a NaN or an infinity (one host sync)."""
    finite = torch.isfinite(x).flatten(1).all(dim=1)
    if not bool(finite.all()):
        rows = torch.nonzero(~finite).flatten().tolist()
        shown = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
        raise ValueError(
            f"{what} has non-finite values (NaN or inf) in the encoded window of {len(rows)} object(s), batch rows "
            f"[{shown}]; tokens of such objects would be meaningless. Replace bad pixels before encoding (e.g. "
            f"torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), or the local sky level) or drop those objects."
        )


def range_compress_(x: torch.Tensor, range_compression_factor: float = 0.01, mult_factor: float = 10.0) -> torch.Tensor:
    r"""In place: :math:`x \leftarrow \kappa\,\alpha \operatorname{arcsinh}(x / \alpha)`; returns ``x``."""
    return x.div_(range_compression_factor).asinh_().mul_(range_compression_factor).mul_(mult_factor)


# ---- PyTorch reference (oracle and fallback) -------------------------------------------------------------------------


def torch_image_preprocess(
    flux: torch.Tensor,
    channels: Sequence[int],
    clamp_max: Sequence[float],
    zeropoint_scale: float = 1.0,
    range_compression_factor: float = 0.01,
    mult_factor: float = 10.0,
    crop_size: int = 96,
    num_bands: int = 9,
    what: str = "flux",
) -> torch.Tensor:
    """Reference (maths in the module docstring): arguments as :func:`image_preprocess`, computed in float32.

    Returns:
        (B, S, S, num_bands) float32, contiguous, absent channels 0.
    """
    window = center_crop(flux, crop_size, what).to(torch.float32)
    require_finite(window, what)
    bounds = torch.tensor(list(clamp_max), dtype=torch.float32, device=window.device).view(-1, 1, 1)
    x = torch.clamp(window, -bounds, bounds)
    if zeropoint_scale != 1.0:
        x.div_(zeropoint_scale)
    if x.requires_grad:  # autograd has no in-place asinh; the out-of-place one gives the same values
        x = torch.asinh(x.div_(range_compression_factor)).mul_(range_compression_factor).mul_(mult_factor)
    else:
        range_compress_(x, range_compression_factor, mult_factor)
    b, _, height, width = x.shape
    out = x.new_zeros(b, height, width, num_bands)
    out[..., list(channels)] = x.permute(0, 2, 3, 1)
    return out


# ---- C++ path (aion_fast._C), registered as a custom op so torch.compile can trace it --------------------------------

# Eager calls go straight to the ``*_impl`` function: the first call of any torch.library custom op imports
# torch._dynamo and Triton, which is slow. Under torch.compile the dispatcher calls the registered op instead.


def _image_preprocess_cpp_impl(
    flux: torch.Tensor,
    channels: list[int],
    clamp_max: list[float],
    zeropoint_scale: float,
    range_compression_factor: float,
    mult_factor: float,
    crop_size: int,
    num_bands: int,
    what: str,
) -> torch.Tensor:
    """(B, C, H, W) float32 CPU images -> (B, S, S, num_bands) float32 via aion_fast._C; ValueError on NaN/inf."""
    ext = dispatch.load_extension()
    batch, _, height, width = flux.shape
    top, left = crop_origin(height, width, crop_size)
    if not flux.is_contiguous():  # copy only the window
        flux = flux[..., top : top + crop_size, left : left + crop_size].contiguous()
        top = left = 0
    out = torch.empty((batch, crop_size, crop_size, num_bands), dtype=torch.float32)
    nonfinite = torch.empty(batch, dtype=torch.int32)
    n_bad = ext.image_preprocess(
        flux.numpy(),
        top,
        left,
        crop_size,
        torch.tensor(channels, dtype=torch.int32).numpy(),
        torch.tensor(clamp_max, dtype=torch.float32).numpy(),
        zeropoint_scale,
        range_compression_factor,
        mult_factor,
        out.numpy(),
        nonfinite.numpy(),
    )
    if n_bad:
        window = flux[..., top : top + crop_size, left : left + crop_size]
        require_finite(window, what)  # raises, naming the rows
        raise AssertionError("aion_fast._C.image_preprocess reported non-finite rows that torch does not see")
    return out


@torch.library.custom_op("aion_fast::image_preprocess_cpp", mutates_args=())
def _image_preprocess_cpp(
    flux: torch.Tensor,
    channels: list[int],
    clamp_max: list[float],
    zeropoint_scale: float,
    range_compression_factor: float,
    mult_factor: float,
    crop_size: int,
    num_bands: int,
    what: str,
) -> torch.Tensor:
    return _image_preprocess_cpp_impl(
        flux, channels, clamp_max, zeropoint_scale, range_compression_factor, mult_factor, crop_size, num_bands, what
    )


@_image_preprocess_cpp.register_fake
def _(
    flux: torch.Tensor,
    channels: list[int],
    clamp_max: list[float],
    zeropoint_scale: float,
    range_compression_factor: float,
    mult_factor: float,
    crop_size: int,
    num_bands: int,
    what: str,
) -> torch.Tensor:
    return flux.new_empty((flux.shape[0], crop_size, crop_size, num_bands), dtype=torch.float32)


# ---- Triton path (aion_fast.kernels.image_preprocess), CUDA tensors --------------------------------------------------


def _run_triton(flux: torch.Tensor, *args) -> torch.Tensor:
    from aion_fast.kernels.image_preprocess import image_preprocess_fwd, image_preprocess_op

    if torch.compiler.is_compiling():  # the registered triton_op; non-finite values checked on the device
        out, nonfinite = image_preprocess_op(flux, *args[:7])
        torch._assert_async(nonfinite.sum() == 0, f"{args[7]}: non-finite values inside the crop window")
        return out
    out, nonfinite = image_preprocess_fwd(flux, *args[:7])  # args[7]: the name for messages
    if bool(nonfinite.any()):  # the op's one host sync: NaN/inf must raise before tokens are made
        require_finite(center_crop(flux, args[5], args[7]), args[7])
    return out


def _triton_reasons(flux: torch.Tensor, *_) -> list[str]:
    reasons = dispatch.triton_reasons(flux)
    if dispatch.forced_backend() != "triton":
        reasons.append("Triton arcsinh not yet validated bit for bit on a GPU (force it with AION_FAST_BACKEND=triton)")
    return reasons


# ---- Backends and dispatch -------------------------------------------------------------------------------------------


def _cpp_reasons(flux: torch.Tensor, *_) -> list[str]:
    reasons = dispatch.cpp_reasons(flux)
    ext = dispatch.load_extension()
    if ext is not None and not hasattr(ext, "image_preprocess"):
        reasons.append("aion_fast._C was built without image_preprocess (stale build: rebuild it)")
    return reasons


def _run_cpp(flux: torch.Tensor, *args) -> torch.Tensor:
    op = _image_preprocess_cpp if torch.compiler.is_compiling() else _image_preprocess_cpp_impl
    return op(flux, *args)


_BACKENDS = (
    Backend("triton", _triton_reasons, _run_triton),
    Backend("cpp", _cpp_reasons, _run_cpp),
    Backend("torch", dispatch.no_reasons, torch_image_preprocess),
)


def image_preprocess(
    flux: torch.Tensor,
    channels: Sequence[int],
    clamp_max: Sequence[float],
    zeropoint_scale: float = 1.0,
    range_compression_factor: float = 0.01,
    mult_factor: float = 10.0,
    crop_size: int = 96,
    num_bands: int = 9,
    device: torch.device | str | None = None,
    what: str = "flux",
) -> torch.Tensor:
    """Crop, clip, rescale, range-compress and place a batch of images (maths in the module docstring).

    Args:
        flux: (B, C, H, W) floating images of one survey, H, W >= ``crop_size``; any float dtype (computed in
            float32); may be non-contiguous; never modified.
        channels: the C target channels in ``[0, num_bands)``, distinct (``BAND_TO_INDEX`` of the bands).
        clamp_max: the C per-band clip bounds (``BAND_CLAMP_MAX`` of the bands), positive.
        zeropoint_scale, range_compression_factor, mult_factor: :math:`s`, :math:`\\alpha` (both > 0), :math:`\\kappa`.
        crop_size, num_bands: side ``S`` of the central window; channels of the output layout (9 for AION-1).
        device: where to compute (default: the device of ``flux``); only the window is moved.
        what: name of ``flux`` in error messages, e.g. ``"LegacySurveyImage.flux"``.

    Returns:
        (B, S, S, num_bands) float32, contiguous (channels last), absent channels 0.

    Raises:
        ValueError: a shape, channel or parameter is invalid, the image is smaller than ``crop_size``, or the
            window holds NaN/inf (the batch rows are named).
        BackendUnavailableError: ``AION_FAST_BACKEND`` forces a backend that cannot run this call.
    """
    if isinstance(crop_size, bool) or not isinstance(crop_size, int) or crop_size < 1:
        raise ValueError(f"image_preprocess: crop_size must be a positive integer (96 for AION-1), got {crop_size!r}")
    if flux.ndim != 4:
        raise ValueError(f"image_preprocess: {what} must have shape (B, C, H, W), got {tuple(flux.shape)}")
    if not flux.is_floating_point():
        raise ValueError(f"image_preprocess: {what} must be a floating tensor, got {flux.dtype}; cast it to float32")
    channels = [int(c) for c in channels]
    clamp_max = [float(m) for m in clamp_max]
    n_bands_in = flux.shape[1]
    if len(channels) != n_bands_in or len(clamp_max) != n_bands_in:
        raise ValueError(
            f"image_preprocess: {what} has {n_bands_in} bands but got {len(channels)} channels and {len(clamp_max)} "
            f"clamp bounds; pass one of each per band."
        )
    if len(set(channels)) != len(channels) or any(not 0 <= c < num_bands for c in channels):
        raise ValueError(f"image_preprocess: channels must be distinct values in [0, {num_bands}), got {channels}")
    if any(not m > 0 for m in clamp_max):
        raise ValueError(f"image_preprocess: clamp_max must be positive, got {clamp_max}")
    if not range_compression_factor > 0 or not zeropoint_scale > 0:
        raise ValueError(
            f"image_preprocess: range_compression_factor ({range_compression_factor}) and zeropoint_scale "
            f"({zeropoint_scale}) must be positive"
        )
    target = torch.device(device) if device is not None else flux.device
    flux = flux.detach()
    if flux.device != target or flux.dtype != torch.float32:  # move / cast the window only
        flux = center_crop(flux, crop_size, what).to(device=target, dtype=torch.float32)
    else:
        center_crop(flux, crop_size, what)  # size check with the codec's message
    args = (
        channels,
        clamp_max,
        float(zeropoint_scale),
        float(range_compression_factor),
        float(mult_factor),
        int(crop_size),
        int(num_bands),
        what,
    )
    with dispatch.no_autocast(flux.device):
        backend = dispatch.select("image_preprocess", _BACKENDS, flux, *args)
        return backend.run(flux, *args)
