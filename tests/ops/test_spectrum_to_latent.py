"""spectrum_to_latent: every backend must equal the spectrum codec's PyTorch resampling bit for bit (float32)."""

from __future__ import annotations

import pytest
import torch

from aion_fast.ops.spectrum_to_latent import (
    interp_to_grid,
    latent_wavelength,
    spectrum_to_latent,
    torch_spectrum_to_latent,
)

GRID = latent_wavelength(3500.0, 0.8, 8704)


def spectra(batch: int, length: int, start: float, step: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """Continuum + line + noise on per-row shifted grids; NaN, +-inf, negative and huge ivar at a few pixels."""
    g = torch.Generator().manual_seed(seed)
    offsets = torch.rand(batch, 1, generator=g) * 30
    wavelength = (start + offsets + step * torch.arange(length, dtype=torch.float32)).contiguous()
    flux = 2 + torch.sin(wavelength / 300) + torch.randn(batch, length, generator=g) * 0.5
    ivar = torch.rand(batch, length, generator=g) * 50
    flux[:, 3 % length] = float("nan")
    flux[-1, 9 % length] = float("inf")
    flux[0, 20 % length] = -float("inf")
    ivar[:, 4 % length] = float("nan")
    ivar[0, 5 % length] = -3.0
    ivar[-1, 6 % length] = 1e6
    scale = torch.rand(batch, generator=g) * 5 + 0.1
    return {"flux": flux, "ivar": ivar, "wavelength": wavelength, "scale": scale}


def assert_bitwise_equal(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.shape == ref.shape and ours.dtype == ref.dtype == torch.float32
    same = (ours == ref) | (torch.isnan(ours) & torch.isnan(ref))
    assert bool(same.all()), f"{int((~same).sum())}/{ours.numel()} values differ, first at {(~same).nonzero()[0]}"


# DESI (0.8 A from 3600 A), SDSS-like (log-ish spacing approximated by ~1.5 A), short and off-grid rows
CASES = [(3, 7081, 3600.0, 0.8), (1, 3840, 3800.0, 1.6), (7, 4646, 3550.0, 1.4), (3, 7, 5000.0, 3.3)]


@pytest.mark.parametrize(("batch", "length", "start", "step"), CASES)
@pytest.mark.parametrize(("clip_flux", "clip_ivar"), [(None, 100.0), (3.0, None)])
def test_matches_reference_exactly(backend, batch, length, start, step, clip_flux, clip_ivar):
    s = spectra(batch, length, start, step, seed=length)
    before = {k: v.clone() for k, v in s.items()}
    ours = spectrum_to_latent(**s, grid=GRID, clip_flux=clip_flux, clip_ivar=clip_ivar)
    ref = torch_spectrum_to_latent(**s, grid=GRID, clip_flux=clip_flux, clip_ivar=clip_ivar)
    assert_bitwise_equal(ours, ref)
    for key, value in s.items():
        assert torch.equal(value, before[key]) or torch.equal(value.isnan(), before[key].isnan()), key


def test_grid_points_on_knots_and_edges(backend):
    """Rows sampled exactly at grid values (every grid point is a knot) and rows ending exactly on grid points."""
    wavelength = torch.stack([GRID[100:1100], GRID[2001:3001] + 0.25])
    flux = torch.randn(2, 1000)
    ivar = torch.rand(2, 1000)
    scale = torch.tensor([1.0, 0.3])
    ours = spectrum_to_latent(flux, ivar, wavelength, scale, GRID)
    assert_bitwise_equal(ours, torch_spectrum_to_latent(flux, ivar, wavelength, scale, GRID))
    assert not bool(ours[0, :, :100].any()) and not bool(ours[0, :, 1100:].any())


def test_non_contiguous_inputs(backend):
    s = spectra(3, 4646, 3550.0, 1.4)
    wide = {k: torch.stack([v, v], dim=-1)[..., 0] if v.ndim == 2 else v for k, v in s.items()}
    assert not wide["flux"].is_contiguous()
    assert_bitwise_equal(spectrum_to_latent(**wide, grid=GRID), torch_spectrum_to_latent(**s, grid=GRID))


def test_bad_shapes_raise_value_error():
    s = spectra(2, 50, 4000.0, 1.0)
    with pytest.raises(ValueError, match="share one"):
        spectrum_to_latent(s["flux"], s["ivar"][:, :-1], s["wavelength"], s["scale"], GRID)
    with pytest.raises(ValueError, match="L >= 2"):
        spectrum_to_latent(*(s[k][:, :1] for k in ("flux", "ivar", "wavelength")), s["scale"], GRID)
    with pytest.raises(ValueError, match=r"scale must have shape \(2,\)"):
        spectrum_to_latent(s["flux"], s["ivar"], s["wavelength"], s["scale"][:1], GRID)


def test_compiles_with_torch_compile(backend):
    if backend != "cpp":
        pytest.skip("the registered custom op is the C++ path")
    s = spectra(2, 700, 4000.0, 1.0)
    compiled = torch.compile(lambda f, v, w, n: spectrum_to_latent(f, v, w, n, GRID) + 1.0, fullgraph=True)
    ref = torch_spectrum_to_latent(**s, grid=GRID) + 1.0
    assert_bitwise_equal(compiled(s["flux"], s["ivar"], s["wavelength"], s["scale"]), ref)


def test_bfloat16_inputs_are_upcast_exactly(backend):
    """bf16 flux and ivar are upcast exactly: bit-identical to float32 inputs holding the same values."""
    s = spectra(3, 4646, 3550.0, 1.4, seed=9)
    low = {k: (v.bfloat16() if k in ("flux", "ivar") else v) for k, v in s.items()}
    ref = torch_spectrum_to_latent(**{k: v.float() for k, v in low.items()}, grid=GRID)
    assert_bitwise_equal(spectrum_to_latent(**low, grid=GRID), ref)


def test_interp_to_grid_is_bitwise_the_references():
    from aion.codecs.modules.spectrum import interp1d

    g = torch.Generator().manual_seed(0)
    steps = torch.rand(3, 4646, generator=g) + 0.2
    wavelength = 3400.0 + torch.cumsum(steps, dim=1) * 1.7  # 3400 .. ~10500 A, irregular
    values = torch.randn(3, 2, 4646, generator=g)
    ours = interp_to_grid(values, wavelength, GRID)
    for channel in range(2):
        expected = interp1d(wavelength, values[:, channel], GRID.expand(3, -1).contiguous())
        assert torch.equal(ours[:, channel], expected)
