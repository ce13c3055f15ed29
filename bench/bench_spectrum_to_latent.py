"""``spectrum_to_latent`` throughput (normalise, resample onto the latent grid, arcsinh): the reference ``aion``
code vs aion_fast's PyTorch path (``torch``) vs its C++ path (``cpp``), on DESI/SDSS-like spectra from :mod:`shapes`.

Every aion_fast result is checked bit-identical to the reference's before timing; like ``image_preprocess`` the C++
kernel reproduces glibc's ``asinhf`` bit for bit (csrc/asinhf/asinhf_cpu.cpp).
"""

from __future__ import annotations

import pytest
import shapes
import torch

pytest.importorskip("aion", reason="needs the reference package aion (polymathic-aion): pip install -e .[test]")
from aion.codecs.modules.spectrum import LatentSpectralGrid as RefLatentGrid
from conftest import OP_IMPLS, op_batch, run_timed

from aion_fast.ops import spectrum_to_latent
from aion_fast.ops.spectrum_to_latent import latent_wavelength


@pytest.mark.parametrize("impl_env", OP_IMPLS, indirect=True)
@pytest.mark.parametrize("pixels", [shapes.DESI_PIXELS, *shapes.SDSS_PIXELS])
def test_spectrum_to_latent(benchmark, record, bench_device, impl_env, pixels):
    batch = op_batch(bench_device)
    s = {k: v.to(bench_device) for k, v in shapes.desi_spectra(batch, pixels).items()}
    scale = torch.rand(batch, device=bench_device) * 3 + 0.5
    grid = latent_wavelength(**shapes.SPECTRUM_GRID).to(bench_device)
    ref_grid = RefLatentGrid(**shapes.SPECTRUM_GRID).to(bench_device)
    benchmark.group = f"spectrum_to_latent B={batch} {pixels} px -> 2x8704"
    record(impl_env, batch, unit="spectra")

    def reference():  # the reference codec's steps between the normalisation token and the encoder
        flux = torch.nan_to_num(s["flux"])
        ivar = torch.clamp(torch.nan_to_num(s["ivar"]), 0, 100)
        n = scale[:, None]
        spectrum = (flux / n - 1.0) * 0.2
        istd = (torch.sqrt(ivar) / n) * 0.2
        spectrum = ref_grid.to_latent(spectrum, s["wavelength"])
        istd = ref_grid.to_latent(istd, s["wavelength"])
        return torch.arcsinh(torch.stack([spectrum, istd], dim=1))

    if impl_env == "reference":
        fn = reference
    else:
        fn = lambda: spectrum_to_latent(s["flux"], s["ivar"], s["wavelength"], scale, grid)  # noqa: E731
        assert torch.equal(fn(), reference())
    run_timed(benchmark, fn, bench_device, rounds=10)
