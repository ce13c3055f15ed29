r"""Spectrum to latent grid, fused: cleaning, normalisation, linear interpolation onto the grid and arcsinh.

For B spectra of L pixels (flux :math:`f`, inverse variance :math:`v`, wavelengths :math:`x` strictly increasing per
row), flux scale :math:`n_b` and latent grid :math:`u_k` (AION-1 paper §4.2.1), with :math:`a` = ``input_scaling``:

.. math::

    y^{(0)}_j = \Bigl(\frac{\operatorname{clip}(\operatorname{nan\_to\_num}(f_j))}{n_b} - 1\Bigr) a, \qquad
    y^{(1)}_j = \frac{\sqrt{\operatorname{clip}(\operatorname{nan\_to\_num}(v_j), 0, v_\text{max})}}{n_b}\, a

    \text{out}[b, c, k] = \operatorname{arcsinh}\Bigl(y^{(c)}_j + (u_k - x_j)
        \frac{y^{(c)}_j - y^{(c)}_{j+1}}{x_j - x_{j+1}}\Bigr), \qquad
    j = \operatorname{clip}(\#\{j : x_j < u_k\} - 1, 0, L - 2)

and 0 where :math:`u_k` lies outside :math:`[x_0, x_{L-1}]`; the flux clip applies when ``clip_flux`` is given. One
float32 operation per step in the codec's order (the order that reproduces the reference's tokens).

Backends: ``torch`` (:func:`torch_spectrum_to_latent`, oracle and fallback); ``cpp`` (CPU, one merge pass per row
over row and grid, only the two samples around each grid point cleaned, arcsinh with libm ``asinhf``'s bits as in
ops/image_preprocess; :math:`\sqrt{v}` comes from PyTorch, see :func:`_istd`; bit-identical to the reference);
``triton`` (CUDA, binary search per grid point; only when forced, its arcsinh is not checked bit for bit on a GPU).
The caller validates wavelengths as the codec does; NaN/inf flux and ivar are cleaned, never an error.
"""

from __future__ import annotations

import torch

from aion_fast import dispatch
from aion_fast.dispatch import Backend

__all__ = [
    "interp_to_grid",
    "interpolate",
    "latent_wavelength",
    "rows_without_overlap",
    "spectrum_to_latent",
    "torch_spectrum_to_latent",
]


# ---- PyTorch reference (oracle and fallback) -------------------------------------------------------------------------


def latent_wavelength(lambda_min: float, resolution: float, num_pixels: int) -> torch.Tensor:
    """(G,) float32 CPU latent grid :math:`\\lambda_k = \\lambda_\\text{min} + k\\,\\Delta\\lambda` (Å)."""
    return torch.arange(num_pixels, dtype=torch.float32) * float(resolution) + float(lambda_min)


def interpolate(x: torch.Tensor, y: torch.Tensor, u: torch.Tensor, outside: float = 0.0) -> torch.Tensor:
    """Piecewise-linear interpolation of K channels per row, ``outside`` beyond each row's sampled range.

    x: (B, n) or shared (n,) strictly increasing, n >= 2; y: (B, K, n); u: (B, m) or (m,) sorted -> (B, K, m)
    float32 (formula in the module docstring).
    """
    batch, channels, n = y.shape
    x_rows = x.expand(batch, n) if x.ndim == 1 else x
    u_rows = u.expand(batch, u.shape[-1]) if u.ndim == 1 else u
    m = u_rows.shape[-1]
    index = torch.searchsorted(x.contiguous(), u_rows.contiguous())  # a 1-D x is searched once for every row
    left = (index - 1).clamp_(0, n - 2)
    right = left + 1
    x_left = x_rows.gather(1, left)
    x_right = x_rows.gather(1, right)
    left_k = left.unsqueeze(1).expand(batch, channels, m)
    y_left = y.gather(2, left_k)
    y_right = y.gather(2, left_k + 1)
    slope = (y_left - y_right) / (x_left - x_right).unsqueeze(1)
    values = y_left + (u_rows - x_left).unsqueeze(1) * slope
    beyond = (u_rows < x_rows[:, :1]) | (u_rows > x_rows[:, -1:])
    return values.masked_fill_(beyond.unsqueeze(1), outside)


def interp_to_grid(values: torch.Tensor, wavelength: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(B, K, L) values at (B, L) increasing wavelengths -> (B, K, G) on the (G,) grid, 0 outside each row."""
    return interpolate(wavelength, values, grid)


def rows_without_overlap(wavelength: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(B,) bool: rows of (B, L) wavelengths whose range holds no point of the (G,) grid (they resample to 0)."""
    first = torch.searchsorted(grid, wavelength[:, :1].to(grid.dtype).contiguous(), right=False)
    after_last = torch.searchsorted(grid, wavelength[:, -1:].to(grid.dtype).contiguous(), right=True)
    return (after_last <= first).squeeze(1)


def torch_spectrum_to_latent(
    flux: torch.Tensor,
    ivar: torch.Tensor,
    wavelength: torch.Tensor,
    scale: torch.Tensor,
    grid: torch.Tensor,
    input_scaling: float = 0.2,
    clip_flux: float | None = None,
    clip_ivar: float | None = 100.0,
) -> torch.Tensor:
    """Reference (the codec's PyTorch code): arguments as :func:`spectrum_to_latent` in float32 -> (B, 2, G)."""
    flux = torch.nan_to_num(flux)
    if clip_flux is not None:
        flux = torch.clamp(flux, -clip_flux, clip_flux)
    ivar = torch.clamp(torch.nan_to_num(ivar), min=0.0, max=clip_ivar)
    n = scale[:, None]
    channels = torch.stack([(flux / n - 1.0) * input_scaling, (torch.sqrt(ivar) / n) * input_scaling], 1)
    grid_values = interp_to_grid(channels, wavelength, grid)
    return torch.arcsinh(grid_values) if grid_values.requires_grad else grid_values.arcsinh_()  # autograd: no asinh_


# ---- C++ path (aion_fast._C), registered as a custom op so torch.compile can trace it --------------------------------


def _istd(ivar: torch.Tensor, clip_ivar: float | None) -> torch.Tensor:
    """(B, L) contiguous sqrt of the cleaned, clipped ivar, by PyTorch on a tensor of the reference's shape.

    PyTorch's CPU float32 sqrt is not the correctly rounded one (on the 2.13 CPU wheel many results are an ulp away
    from ``sqrtf``, and its scalar and vectorised paths disagree), so the compiled kernels take its values.
    """
    return torch.clamp(torch.nan_to_num(ivar), min=0.0, max=clip_ivar).sqrt_().contiguous()


# Eager calls go straight to the ``*_impl`` function: the first call of any torch.library custom op imports
# torch._dynamo and Triton, which is slow. Under torch.compile the dispatcher calls the registered op instead.


def _spectrum_to_latent_cpp_impl(
    flux: torch.Tensor,
    ivar: torch.Tensor,
    wavelength: torch.Tensor,
    scale: torch.Tensor,
    grid: torch.Tensor,
    input_scaling: float,
    clip_flux: float | None,
    clip_ivar: float | None,
) -> torch.Tensor:
    """(B, L) float32 CPU spectra -> (B, 2, G) float32 via aion_fast._C (the square root taken by PyTorch)."""
    ext = dispatch.load_extension()
    out = torch.empty((flux.shape[0], 2, grid.shape[0]), dtype=torch.float32)
    ext.spectrum_to_latent(
        flux.contiguous().numpy(),
        _istd(ivar, clip_ivar).numpy(),
        wavelength.contiguous().numpy(),
        scale.contiguous().numpy(),
        grid.contiguous().numpy(),
        input_scaling,
        clip_flux is not None,
        0.0 if clip_flux is None else clip_flux,
        out.numpy(),
    )
    return out


@torch.library.custom_op("aion_fast::spectrum_to_latent_cpp", mutates_args=())
def _spectrum_to_latent_cpp(
    flux: torch.Tensor,
    ivar: torch.Tensor,
    wavelength: torch.Tensor,
    scale: torch.Tensor,
    grid: torch.Tensor,
    input_scaling: float,
    clip_flux: float | None,
    clip_ivar: float | None,
) -> torch.Tensor:
    return _spectrum_to_latent_cpp_impl(flux, ivar, wavelength, scale, grid, input_scaling, clip_flux, clip_ivar)


@_spectrum_to_latent_cpp.register_fake
def _(
    flux: torch.Tensor,
    ivar: torch.Tensor,
    wavelength: torch.Tensor,
    scale: torch.Tensor,
    grid: torch.Tensor,
    input_scaling: float,
    clip_flux: float | None,
    clip_ivar: float | None,
) -> torch.Tensor:
    return flux.new_empty((flux.shape[0], 2, grid.shape[0]), dtype=torch.float32)


# ---- Backends and dispatch -------------------------------------------------------------------------------------------


def _cpp_reasons(flux: torch.Tensor, *_) -> list[str]:
    reasons = dispatch.cpp_reasons(flux)
    ext = dispatch.load_extension()
    if ext is not None and not hasattr(ext, "spectrum_to_latent"):
        reasons.append("aion_fast._C was built without spectrum_to_latent (stale build: rebuild it)")
    return reasons


def _run_cpp(*args) -> torch.Tensor:
    op = _spectrum_to_latent_cpp if torch.compiler.is_compiling() else _spectrum_to_latent_cpp_impl
    return op(*args)


def _triton_reasons(flux: torch.Tensor, *_) -> list[str]:
    reasons = dispatch.triton_reasons(flux)
    if dispatch.forced_backend() != "triton":
        reasons.append("Triton arcsinh not yet validated bit for bit on a GPU (force it with AION_FAST_BACKEND=triton)")
    return reasons


def _run_triton(flux, ivar, wavelength, scale, grid, input_scaling, clip_flux, clip_ivar) -> torch.Tensor:
    from aion_fast.kernels.spectrum_to_latent import spectrum_to_latent_fwd, spectrum_to_latent_op

    launch = spectrum_to_latent_op if torch.compiler.is_compiling() else spectrum_to_latent_fwd
    return launch(flux, _istd(ivar, clip_ivar), wavelength, scale, grid, input_scaling, clip_flux)


_BACKENDS = (
    Backend("triton", _triton_reasons, _run_triton),
    Backend("cpp", _cpp_reasons, _run_cpp),
    Backend("torch", dispatch.no_reasons, torch_spectrum_to_latent),
)


def _require_increasing(values: torch.Tensor, name: str, what: str) -> None:
    """(B, L) float32: finite and strictly increasing along each row, else a ValueError naming the rows."""
    finite = torch.isfinite(values).all(dim=-1)
    increasing = (values[:, 1:] > values[:, :-1]).all(dim=-1) & finite
    if not bool(increasing.all()):
        rows = torch.nonzero(~increasing).flatten()[:8].tolist()
        kind = "NaN/inf" if not bool(finite.all()) else "not strictly increasing"
        raise ValueError(f"spectrum_to_latent: {what} must be finite and strictly increasing; {name} rows {rows} are "
                         f"{kind}. Sort the pixels and drop or mask non-finite ones before tokenizing.")  # fmt: skip


def spectrum_to_latent(
    flux: torch.Tensor,
    ivar: torch.Tensor,
    wavelength: torch.Tensor,
    scale: torch.Tensor,
    grid: torch.Tensor,
    input_scaling: float = 0.2,
    clip_flux: float | None = None,
    clip_ivar: float | None = 100.0,
) -> torch.Tensor:
    """Cleans, normalises, resamples onto the latent grid and range-compresses spectra (module docstring).

    Args:
        flux, ivar: (B, L); any float dtype (computed in float32); never modified.
        wavelength: (B, L) wavelengths (Å), finite and strictly increasing per row, L >= 2.
        scale: (B,) or (B, 1) positive flux scale :math:`n_b`.
        grid: (G,) latent grid, increasing.
        input_scaling, clip_flux, clip_ivar: :math:`a`, :math:`f_\\text{max}`, :math:`v_\\text{max}` (None: no clip).

    Returns:
        (B, 2, G) float32 network input.

    Raises:
        ValueError: shapes disagree, L < 2, a wavelength row or the grid is not finite and strictly increasing, or
            the tensors are on different devices.
        BackendUnavailableError: ``AION_FAST_BACKEND`` forces a backend that cannot run this call.
    """
    if flux.ndim != 2 or ivar.shape != flux.shape or wavelength.shape != flux.shape:
        raise ValueError(
            f"spectrum_to_latent: flux, ivar and wavelength must share one (B, L) shape, got {tuple(flux.shape)}, "
            f"{tuple(ivar.shape)} and {tuple(wavelength.shape)}"
        )
    if flux.shape[1] < 2:
        raise ValueError(f"spectrum_to_latent: flux needs L >= 2 pixels to interpolate, got shape {tuple(flux.shape)}")
    scale = scale.reshape(-1)
    if scale.shape[0] != flux.shape[0]:
        raise ValueError(f"spectrum_to_latent: scale must have shape ({flux.shape[0]},), got {tuple(scale.shape)}")
    if grid.ndim != 1:
        raise ValueError(f"spectrum_to_latent: grid must have shape (G,), got {tuple(grid.shape)}")
    tensors = [t.detach().to(torch.float32) for t in (flux, ivar, wavelength, scale, grid)]
    if len({t.device for t in tensors}) != 1:
        raise ValueError(
            "spectrum_to_latent: flux, ivar, wavelength, scale and grid must be on one device, got "
            f"{[str(t.device) for t in tensors]}; move them with .to(device)"
        )
    # Backends differ on NaN or unordered wavelengths (searchsorted vs. a linear walk): refused here, for all alike.
    # A data-dependent check cannot be traced: under torch.compile the caller has run it eagerly (or not).
    if not torch.compiler.is_compiling():
        _require_increasing(tensors[2], "wavelength", "each row of wavelength (Angstrom)")
        _require_increasing(tensors[4][None], "grid", "grid")
    args = (*tensors, float(input_scaling), None if clip_flux is None else float(clip_flux))
    args = (*args, None if clip_ivar is None else float(clip_ivar))
    with dispatch.no_autocast(tensors[0].device):
        return dispatch.select("spectrum_to_latent", _BACKENDS, *args).run(*args)
