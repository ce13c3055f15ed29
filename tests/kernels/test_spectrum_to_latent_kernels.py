"""Triton spectrum_to_latent kernel against the PyTorch reference (tolerance: see test_preprocess_kernels.py)."""

from __future__ import annotations

from aion_fast.ops.spectrum_to_latent import _istd, latent_wavelength, torch_spectrum_to_latent
from tests.kernels.test_preprocess_kernels import assert_close
from tests.ops.test_spectrum_to_latent import spectra


def test_spectrum_to_latent_kernel(device):
    from aion_fast.kernels.spectrum_to_latent import spectrum_to_latent_fwd

    grid = latent_wavelength(3500.0, 0.8, 2000)
    for batch, length, start, step in ((3, 1500, 3400.0, 1.3), (1, 7, 4000.0, 3.0)):
        s = spectra(batch, length, start, step, seed=length)
        moved = {k: v.to(device) for k, v in s.items()}
        ref = torch_spectrum_to_latent(**moved, grid=grid.to(device), clip_flux=5.0)  # same-device oracle
        ours = spectrum_to_latent_fwd(
            moved["flux"], _istd(moved["ivar"], 100.0), moved["wavelength"], moved["scale"], grid.to(device), 0.2, 5.0
        )
        assert_close(ours, ref)
