"""``spectrum_to_observed`` throughput (latent grid -> observed wavelengths, flux scale, mask): the reference
``aion`` code vs aion_fast's PyTorch path (``torch``) vs its C++ path (``cpp``).

Every aion_fast result is checked bit-identical to the reference's (flux and mask) before timing.
"""

from __future__ import annotations

import pytest
import shapes
import torch

pytest.importorskip("aion", reason="needs the reference package aion (polymathic-aion): pip install -e .[test]")
from aion.codecs.modules.spectrum import LatentSpectralGrid as RefLatentGrid
from conftest import OP_IMPLS, op_batch, run_timed

from aion_fast.ops import spectrum_to_observed
from aion_fast.ops.spectrum_to_latent import latent_wavelength


@pytest.mark.parametrize("impl_env", OP_IMPLS, indirect=True)
@pytest.mark.parametrize("pixels", [shapes.DESI_PIXELS, *shapes.SDSS_PIXELS])
def test_spectrum_to_observed(benchmark, record, bench_device, impl_env, pixels):
    batch = op_batch(bench_device)
    g = torch.Generator().manual_seed(0)
    values = torch.randn(batch, 2, shapes.SPECTRUM_GRID["num_pixels"], generator=g).to(bench_device)
    level = (torch.rand(batch, generator=g) * 2).to(bench_device)
    wavelength = shapes.desi_spectra(batch, pixels)["wavelength"].to(bench_device)
    grid = latent_wavelength(**shapes.SPECTRUM_GRID).to(bench_device)
    ref_grid = RefLatentGrid(**shapes.SPECTRUM_GRID).to(bench_device)
    benchmark.group = f"spectrum_to_observed B={batch} 2x8704 -> {pixels} px"
    record(impl_env, batch, unit="spectra")

    def reference():  # the reference codec's decode steps after the ConvNeXt decoder
        spectra = ref_grid.to_observed(values[:, 0], wavelength)
        mask = ref_grid.to_observed(values[:, 1], wavelength)
        spectra = (spectra + 1.0) * torch.clamp(10 ** level[..., None] - 1.0, 0.1)
        return spectra, torch.round(torch.sigmoid(mask)).bool()

    if impl_env == "reference":
        fn = reference
    else:
        scale = torch.clamp(10**level - 1.0, min=0.1)
        fn = lambda: spectrum_to_observed(values, grid, wavelength, scale)  # noqa: E731
        (flux, mask), (ref_flux, ref_mask) = fn(), reference()
        assert torch.equal(flux, ref_flux) and torch.equal(mask, ref_mask)
    run_timed(benchmark, fn, bench_device, rounds=10)
