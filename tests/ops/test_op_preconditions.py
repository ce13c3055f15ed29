"""Item 20 of issue 19: op preconditions are checked in the public entry function, before any backend is chosen,
so the C++ and torch backends never disagree silently or fail differently on crop_size <= 0, NaN or unordered
wavelengths, or an unordered latent grid."""

from __future__ import annotations

import pytest
import torch

from aion_fast import dispatch
from aion_fast.ops.image_preprocess import image_preprocess
from aion_fast.ops.spectrum_to_latent import spectrum_to_latent

BACKENDS = [b for b in ("torch", "cpp") if b in dispatch.available_backends()]


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    monkeypatch.setenv(dispatch.ENV_VAR, request.param)
    return request.param


@pytest.mark.parametrize("crop_size", [0, -4, 2.5])
def test_bad_crop_size_is_refused_by_every_backend(backend, crop_size):
    flux = torch.rand(2, 4, 100, 100)
    with pytest.raises(ValueError, match="crop_size must be a positive integer"):
        image_preprocess(flux, [1, 2, 3, 4], [1.0] * 4, crop_size=crop_size)


def _spectra():
    wavelength = torch.linspace(3600, 9800, 400).repeat(3, 1)
    return torch.rand(3, 400), torch.ones(3, 400), wavelength, torch.ones(3), torch.linspace(3500, 10462, 800)


@pytest.mark.parametrize("fault", ["nan_wavelength", "decreasing_wavelength", "decreasing_grid", "nan_grid"])
def test_unordered_or_nan_wavelengths_are_refused_by_every_backend(backend, fault):
    flux, ivar, wavelength, scale, grid = _spectra()
    before = wavelength.clone()
    if fault == "nan_wavelength":
        wavelength[1, 10] = float("nan")
    elif fault == "decreasing_wavelength":
        wavelength[2] = wavelength[2].flip(0)
    elif fault == "decreasing_grid":
        grid = grid.flip(0)
    else:
        grid[5] = float("nan")
    name = "grid" if "grid" in fault else "wavelength rows [1]" if fault == "nan_wavelength" else "wavelength rows [2]"
    with pytest.raises(ValueError, match=name.replace("[", r"\[").replace("]", r"\]")):
        spectrum_to_latent(flux, ivar, wavelength, scale, grid)
    if fault.endswith("grid"):
        assert torch.equal(wavelength, before)  # nothing mutated


def test_valid_spectra_still_agree_between_backends(monkeypatch):
    flux, ivar, wavelength, scale, grid = _spectra()
    results = []
    for name in BACKENDS:
        monkeypatch.setenv(dispatch.ENV_VAR, name)
        results.append(spectrum_to_latent(flux, ivar, wavelength, scale, grid))
    for result in results[1:]:
        torch.testing.assert_close(result, results[0], rtol=1e-5, atol=1e-6)
