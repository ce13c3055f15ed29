"""spectrum_to_observed: every backend equals the spectrum codec's PyTorch decode epilogue bit for bit (flux, mask)."""

from __future__ import annotations

import pytest
import torch

from aion_fast import dispatch
from aion_fast.ops.spectrum_to_latent import latent_wavelength
from aion_fast.ops.spectrum_to_observed import interp_from_grid, spectrum_to_observed, torch_spectrum_to_observed

GRID = latent_wavelength(3500.0, 0.8, 8704)


def decoded(batch: int, channels: int = 2, seed: int = 0) -> torch.Tensor:
    """(B, K, G) decoder-like output: smooth normalised flux plus noise; logits of both signs, some exact zeros."""
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(batch, channels, GRID.shape[0], generator=g)
    values[:, 0] = torch.sin(GRID / 200) * 0.3 + values[:, 0] * 0.05
    if channels == 2:
        values[:, 1, ::97] = 0.0
    return values


def observed(batch: int, length: int, start: float, step: float, seed: int = 0) -> torch.Tensor:
    """(B, L) increasing wavelengths, per-row shifted; rows may start below / end above the latent grid."""
    g = torch.Generator().manual_seed(seed)
    offsets = torch.rand(batch, 1, generator=g) * 30
    return (start + offsets + step * torch.arange(length, dtype=torch.float32)).contiguous()


def assert_same(ours: tuple[torch.Tensor, torch.Tensor], ref: tuple[torch.Tensor, torch.Tensor]) -> None:
    (flux, mask), (ref_flux, ref_mask) = ours, ref
    assert flux.dtype == ref_flux.dtype == torch.float32 and mask.dtype == ref_mask.dtype == torch.bool
    assert flux.shape == ref_flux.shape == mask.shape and flux.is_contiguous() and mask.is_contiguous()
    same = (flux == ref_flux) | (flux.isnan() & ref_flux.isnan())
    assert bool(same.all()), f"{int((~same).sum())}/{flux.numel()} flux values differ, first at {(~same).nonzero()[0]}"
    assert torch.equal(mask, ref_mask), f"{int((mask != ref_mask).sum())} mask values differ"


# DESI (0.8 A from 3600 A), SDSS-like (log-ish ~1.5 A), rows crossing both grid ends, short rows
CASES = [(3, 7081, 3600.0, 0.8), (1, 3840, 3800.0, 1.6), (7, 4646, 3400.0, 1.6), (3, 7, 3490.0, 3.3)]


@pytest.mark.parametrize(("batch", "length", "start", "step"), CASES)
@pytest.mark.parametrize("channels", [1, 2])
def test_matches_reference_exactly(backend, batch, length, start, step, channels):
    values = decoded(batch, channels, seed=length)
    wavelength = observed(batch, length, start, step, seed=length)
    scale = torch.rand(batch) * 5 + 0.1
    before = values.clone(), wavelength.clone()
    for n in (scale, None):
        ours = spectrum_to_observed(values, GRID, wavelength, n)
        assert_same(ours, torch_spectrum_to_observed(values, GRID, wavelength, n))
    assert torch.equal(values, before[0]) and torch.equal(wavelength, before[1])


@pytest.mark.parametrize("channels", [1, 2])
def test_on_the_latent_grid(backend, channels):
    values = decoded(3, channels, seed=11)
    scale = torch.tensor([0.1, 1.0, 7.5])
    for n in (scale, None):
        assert_same(spectrum_to_observed(values, GRID, None, n), torch_spectrum_to_observed(values, GRID, None, n))


def test_knots_edges_unsorted_and_non_finite_wavelengths(backend):
    """Grid values exactly, the two ends, just outside them, unsorted points, NaN and +-inf."""
    special = torch.tensor([GRID[0], GRID[-1], GRID[1], GRID[-2], 3499.99, 10462.41, float("nan"), float("inf")])
    row = torch.cat([GRID[::37], special, -torch.tensor([float("inf")]), GRID[4000:5000:3].flip(0) + 0.4])
    wavelength = torch.stack([row, row.flip(0)])
    values = decoded(2, 2, seed=12)
    scale = torch.tensor([2.0, 0.5])
    assert_same(
        spectrum_to_observed(values, GRID, wavelength, scale),
        torch_spectrum_to_observed(values, GRID, wavelength, scale),
    )
    flux, mask = spectrum_to_observed(values, GRID, wavelength, scale)
    nan_at = torch.isnan(wavelength)
    assert bool(flux[nan_at].isnan().all()) and bool(mask[nan_at].all())  # NaN wavelength: NaN flux, True mask


def test_undecided_mask_logits_replay_pytorch(backend):
    """Logits in (0, 1e-6], where round(sigmoid(.)) depends on PyTorch's exp, still give the reference's mask."""
    values = decoded(2, 2, seed=13)
    tiny = torch.logspace(-10, -3, GRID.shape[0])
    values[0, 1] = tiny
    values[1, 1] = -tiny
    wavelength = observed(2, 8000, 3480.0, 0.87)
    for w in (wavelength, None):
        ours = spectrum_to_observed(values, GRID, w, None)
        ref = torch_spectrum_to_observed(values, GRID, w, None)
        assert_same(ours, ref)
        assert bool(ref[1][0].any()) and not bool(ref[1][0].all())  # the range holds both answers
        assert not bool(ref[1][1].any())


def test_layouts_dtypes_and_1d_wavelength(backend):
    values = decoded(3, 2, seed=14)
    wavelength = observed(1, 2000, 4000.0, 1.1)[0]
    scale = torch.rand(3, 1) + 0.5
    ref = torch_spectrum_to_observed(values, GRID, wavelength.expand(3, -1), scale[:, 0])
    strided = values.transpose(1, 2).contiguous().transpose(1, 2)
    assert not strided.is_contiguous()
    assert_same(spectrum_to_observed(strided, GRID, wavelength, scale), ref)
    assert_same(spectrum_to_observed(values.double(), GRID.double(), wavelength.double(), scale.double()), ref)


def test_bfloat16_values_are_upcast_exactly(backend):
    values = decoded(2, 2, seed=15).bfloat16()
    wavelength = observed(2, 500, 5000.0, 1.3)
    ref = torch_spectrum_to_observed(values.float(), GRID, wavelength, None)
    assert_same(spectrum_to_observed(values, GRID, wavelength), ref)


def test_bad_arguments_raise_value_error():
    values = decoded(2, 2)
    with pytest.raises(ValueError, match=r"\(B, K, G\) with K = 1"):
        spectrum_to_observed(values[:, :1].expand(2, 3, -1), GRID)
    with pytest.raises(ValueError, match=r"grid must have shape \(8704,\)"):
        spectrum_to_observed(values, GRID[:-1])
    with pytest.raises(ValueError, match=r"wavelength must have shape \(M,\) or \(2, M\)"):
        spectrum_to_observed(values, GRID, torch.zeros(3, 10))
    with pytest.raises(ValueError, match=r"scale must have shape \(2,\)"):
        spectrum_to_observed(values, GRID, None, torch.ones(3))


def test_compiles_with_torch_compile(backend):
    if backend != "cpp":
        pytest.skip("the registered custom op is the C++ path")
    values = decoded(2, 2, seed=16)
    wavelength = observed(2, 700, 4000.0, 1.0)
    scale = torch.tensor([1.0, 2.0])

    def decode(v, w, n):
        flux, mask = spectrum_to_observed(v, GRID, w, n)
        return flux * 2.0, mask

    flux, mask = torch.compile(decode, fullgraph=True)(values, wavelength, scale)
    ref_flux, ref_mask = torch_spectrum_to_observed(values, GRID, wavelength, scale)
    assert_same((flux, mask), (ref_flux * 2.0, ref_mask))


def test_triton_backend_refuses_cpu_tensors(monkeypatch):
    monkeypatch.setenv(dispatch.ENV_VAR, "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # with the interpreter on, forced Triton takes CPU tensors
    with pytest.raises(dispatch.BackendUnavailableError, match="not on CUDA"):
        spectrum_to_observed(decoded(1, 2), GRID)


def test_interp_from_grid_is_bitwise_the_references():
    from aion.codecs.modules.spectrum import interp1d

    g = torch.Generator().manual_seed(0)
    steps = torch.rand(3, 4646, generator=g) + 0.2
    wavelength = 3400.0 + torch.cumsum(steps, dim=1) * 1.7  # 3400 .. ~10500 A, irregular
    latent = torch.randn(3, 1, GRID.shape[0], generator=g)
    back = interp_from_grid(latent, GRID, wavelength)
    assert torch.equal(back[:, 0], interp1d(GRID.expand(3, -1).contiguous(), latent[:, 0], wavelength))
