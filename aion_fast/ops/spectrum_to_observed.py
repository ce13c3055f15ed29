r"""Spectrum decode epilogue, fused: latent grid -> requested wavelengths, flux scale and bad-pixel mask.

Counterpart of :mod:`aion_fast.ops.spectrum_to_latent` (AION-1 paper §4.2). From the decoder's normalised flux
:math:`y^{(0)}` and optional bad-pixel logit :math:`y^{(1)}` on the grid :math:`u_0 < \dots < u_{G-1}`, at requested
wavelengths :math:`w_m` with flux scale :math:`n_b = \max(10^{\hat\nu_b} - 1, 0.1)`:

.. math::

    v^{(c)}_m = y^{(c)}_j + (w_m - u_j)\,\frac{y^{(c)}_j - y^{(c)}_{j+1}}{u_j - u_{j+1}}, \qquad
    j = \operatorname{clip}(\#\{k : u_k < w_m\} - 1, 0, G - 2)

(0 outside :math:`[u_0, u_{G-1}]`), :math:`\text{flux} = (v^{(0)} + 1)\,n_b`,
:math:`\text{mask} = \operatorname{round}(\sigma(v^{(1)})) \ne 0`; float32, in the reference's order, no inverse
arcsinh (the reference has none). Backends: ``torch`` (oracle), ``cpp`` (CPU, segment found in O(1) on the uniform
grid, corrected against the stored float32 values so the count equals ``searchsorted``'s), ``triton`` (CUDA).

Exactness: the flux is bit-identical everywhere. The mask skips the sigmoid: :math:`v \le 0` gives 0 and
:math:`v > 10^{-6}` gives 1 (:math:`\sigma(v)` exceeds 1/2 by more than its rounding error); in :math:`(0, 10^{-6}]`
PyTorch's answer depends on the last bit of its ``exp``, so kernels flag those and PyTorch recomputes the mask. NaN
logits and NaN wavelengths give True (and a NaN flux); wavelengths need not be sorted.
"""

from __future__ import annotations

import torch

from aion_fast import dispatch
from aion_fast.dispatch import Backend
from aion_fast.ops.spectrum_to_latent import interpolate

__all__ = ["interp_from_grid", "spectrum_to_observed", "torch_spectrum_to_observed"]


# ---- PyTorch reference (oracle and fallback) -------------------------------------------------------------------------


def interp_from_grid(values: torch.Tensor, grid: torch.Tensor, wavelength: torch.Tensor) -> torch.Tensor:
    """(B, K, G) values on the (G,) grid -> (B, K, M) at (B, M) sorted wavelengths, 0 outside the grid."""
    return interpolate(grid, values, wavelength)


def _torch_mask(logits: torch.Tensor) -> torch.Tensor:
    """(B, M) logits -> (B, M) bool, ``round(sigmoid(.))`` on a contiguous tensor as the reference evaluates it."""
    return torch.round(torch.sigmoid(logits.contiguous())).bool()


def torch_spectrum_to_observed(
    values: torch.Tensor,
    grid: torch.Tensor,
    wavelength: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference (the codec's PyTorch code): arguments as :func:`spectrum_to_observed` in float32."""
    if wavelength is not None:
        values = interp_from_grid(values, grid, wavelength)
    flux = values[:, 0]
    if scale is not None:
        flux = (flux + 1.0) * scale[:, None]
    if values.shape[1] == 2:
        mask = _torch_mask(values[:, 1])
    else:
        mask = torch.zeros(flux.shape, dtype=torch.bool, device=flux.device)
    return flux.contiguous(), mask


def _recompute_mask(values: torch.Tensor, grid: torch.Tensor, wavelength: torch.Tensor | None) -> torch.Tensor:
    """The reference's mask, for the rare calls where a kernel met logits in the undecided band (0, 1e-6]."""
    logits = values[:, 1:2]
    if wavelength is not None:
        logits = interp_from_grid(logits, grid, wavelength)
    return _torch_mask(logits[:, 0])


# ---- C++ path (aion_fast._C), registered as a custom op so torch.compile can trace it --------------------------------

# Eager calls go straight to the ``*_impl`` function: the first call of any torch.library custom op imports
# torch._dynamo and Triton, which is slow. Under torch.compile the dispatcher calls the registered op instead.


def _spectrum_to_observed_cpp_impl(
    values: torch.Tensor, grid: torch.Tensor, wavelength: torch.Tensor | None, scale: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K, G) float32 CPU values -> flux (B, M) float32, mask (B, M) bool via aion_fast._C."""
    ext = dispatch.load_extension()
    values, grid = values.contiguous(), grid.contiguous()
    wavelength = None if wavelength is None else wavelength.contiguous()
    points = grid.shape[0] if wavelength is None else wavelength.shape[1]
    flux = torch.empty((values.shape[0], points), dtype=torch.float32)
    mask = torch.empty((values.shape[0], points), dtype=torch.bool)
    undecided = ext.spectrum_to_observed(
        values.numpy(),
        grid.numpy(),
        None if wavelength is None else wavelength.numpy(),
        None if scale is None else scale.contiguous().numpy(),
        flux.numpy(),
        mask.numpy(),
    )
    if undecided:
        mask = _recompute_mask(values, grid, wavelength)
    return flux, mask


@torch.library.custom_op("aion_fast::spectrum_to_observed_cpp", mutates_args=())
def _spectrum_to_observed_cpp(
    values: torch.Tensor, grid: torch.Tensor, wavelength: torch.Tensor | None, scale: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    return _spectrum_to_observed_cpp_impl(values, grid, wavelength, scale)


@_spectrum_to_observed_cpp.register_fake
def _(
    values: torch.Tensor, grid: torch.Tensor, wavelength: torch.Tensor | None, scale: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    points = grid.shape[0] if wavelength is None else wavelength.shape[1]
    shape = (values.shape[0], points)
    return values.new_empty(shape, dtype=torch.float32), values.new_empty(shape, dtype=torch.bool)


def _run_cpp(*args) -> tuple[torch.Tensor, torch.Tensor]:
    op = _spectrum_to_observed_cpp if torch.compiler.is_compiling() else _spectrum_to_observed_cpp_impl
    return op(*args)


def _cpp_reasons(values: torch.Tensor, *_) -> list[str]:
    reasons = dispatch.cpp_reasons(values)
    ext = dispatch.load_extension()
    if ext is not None and not hasattr(ext, "spectrum_to_observed"):
        reasons.append("aion_fast._C was built without spectrum_to_observed (stale build: rebuild it)")
    return reasons


# ---- Triton path (aion_fast.kernels.spectrum_to_observed), CUDA tensors ----------------------------------------------


def _run_triton(values, grid, wavelength, scale) -> tuple[torch.Tensor, torch.Tensor]:
    from aion_fast.kernels.spectrum_to_observed import spectrum_to_observed_fwd, spectrum_to_observed_op

    if torch.compiler.is_compiling():  # the registered triton_op; no host sync: the reference mask where undecided
        flux, mask, undecided = spectrum_to_observed_op(values, grid, wavelength, scale)
        return flux, torch.where(undecided, _recompute_mask(values, grid, wavelength), mask)
    flux, mask, undecided = spectrum_to_observed_fwd(values, grid, wavelength, scale)
    if bool(undecided.any()):
        mask = _recompute_mask(values, grid, wavelength)
    return flux, mask


# ---- Backends and dispatch -------------------------------------------------------------------------------------------

_BACKENDS = (
    Backend("triton", lambda values, *_: dispatch.triton_reasons(values), _run_triton),
    Backend("cpp", _cpp_reasons, _run_cpp),
    Backend("torch", dispatch.no_reasons, torch_spectrum_to_observed),
)


def spectrum_to_observed(
    values: torch.Tensor,
    grid: torch.Tensor,
    wavelength: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resamples decoded spectra onto requested wavelengths, rescales the flux and rounds the mask (module docstring).

    Args:
        values: (B, K, G) decoder output on the latent grid, K = 1 (flux) or 2 (flux, mask logit); any float dtype
            (computed in float32); never modified.
        grid: (G,) latent grid (Å), increasing, G >= 2.
        wavelength: (B, M) or (M,) requested wavelengths (Å), any order; None for the grid itself.
        scale: (B,) or (B, 1) flux scale :math:`n_b`, or None for the normalised flux.

    Returns:
        flux (B, M) float32 and mask (B, M) bool (True = predicted bad), contiguous.

    Raises:
        ValueError: shapes disagree or the tensors are on different devices.
        BackendUnavailableError: ``AION_FAST_BACKEND`` forces a backend that cannot run this call.
    """
    if values.ndim != 3 or values.shape[1] not in (1, 2):
        raise ValueError(
            f"spectrum_to_observed: values must have shape (B, K, G) with K = 1 (flux) or 2 (flux, mask logit), "
            f"got {tuple(values.shape)}"
        )
    batch, _, points = values.shape
    if grid.ndim != 1 or grid.shape[0] != points or points < 2:
        raise ValueError(
            f"spectrum_to_observed: grid must have shape ({points},) (the values' last axis, >= 2), got "
            f"{tuple(grid.shape)}"
        )
    tensors = [values, grid]
    if wavelength is not None:
        wavelength = torch.as_tensor(wavelength)
        if wavelength.ndim == 1:
            wavelength = wavelength.expand(batch, -1)
        if wavelength.ndim != 2 or wavelength.shape[0] != batch:
            raise ValueError(
                f"spectrum_to_observed: wavelength must have shape (M,) or ({batch}, M) for {batch} spectra, got "
                f"{tuple(wavelength.shape)}"
            )
        tensors.append(wavelength)
    if scale is not None:
        scale = scale.reshape(-1)
        if scale.shape[0] != batch:
            raise ValueError(f"spectrum_to_observed: scale must have shape ({batch},), got {tuple(scale.shape)}")
        tensors.append(scale)
    if len({t.device for t in tensors}) != 1:
        raise ValueError(
            "spectrum_to_observed: values, grid, wavelength and scale must be on one device, got "
            f"{[str(t.device) for t in tensors]}; move them with .to(device)"
        )
    values, grid = (t.detach().to(torch.float32) for t in (values, grid))
    wavelength = None if wavelength is None else wavelength.detach().to(torch.float32)
    scale = None if scale is None else scale.detach().to(torch.float32)
    args = (values, grid, wavelength, scale)
    with dispatch.no_autocast(values.device):
        return dispatch.select("spectrum_to_observed", _BACKENDS, *args).run(*args)
