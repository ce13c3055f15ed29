"""Triton decode-epilogue kernels (image_postprocess, spectrum_to_observed) against the PyTorch references.

image_postprocess: under the interpreter sinh is an exp formula (no libdevice), compared within 2e-6 relative
(float32: a few ulps; the ops' 1e-6 bound is met by the C++ path, the formula's e^a - e^-a loses up to ~3 ulps near
|x| = 1/2). spectrum_to_observed: the flux and mask are the same float32 operations as the reference: exact.
"""

from __future__ import annotations

import torch

from aion_fast.codecs.spectral_grid import latent_wavelength
from aion_fast.ops.image_postprocess import _project, torch_image_postprocess
from aion_fast.ops.spectrum_to_observed import torch_spectrum_to_observed
from tests.ops.test_image_postprocess import assert_close_rel, decoder_output, projection

RTOL = 2e-6


def test_image_postprocess_kernel(device):
    from aion_fast.kernels.image_postprocess import image_postprocess_fwd

    weight, bias = projection()
    for batch, height, width, channels, scale in ((3, 13, 11, [0, 1, 2, 3], 1.0), (1, 40, 40, [8, 4, 5], 63.0957)):
        h = decoder_output(batch, height, width, seed=batch)
        h[0, 0, 0, 0] = float("nan")
        ref = torch_image_postprocess(h, weight, bias, channels, scale)
        projected = _project(h, weight).contiguous().to(device)
        ours = image_postprocess_fwd(projected, bias.to(device), channels, scale, 0.01, 10.0).cpu()
        assert_close_rel(ours, ref, rtol=RTOL)
        assert bool(ours[0, :, 0, 0].isnan().all())


def test_spectrum_to_observed_kernel(device):
    from aion_fast.kernels.spectrum_to_observed import spectrum_to_observed_fwd

    grid = latent_wavelength(3500.0, 0.8, 3000)
    g = torch.Generator().manual_seed(0)
    values = torch.randn(3, 2, 3000, generator=g)
    values[0, 1, :1000] = torch.logspace(-10, -3, 1000)  # undecided logits are flagged
    wavelength = 3490.0 + torch.rand(3, 1, generator=g) * 20 + 0.83 * torch.arange(2900, dtype=torch.float32)
    wavelength[1, 7] = float("nan")
    wavelength[2, 9] = grid[100]
    scale = torch.tensor([0.5, 1.0, 3.0])
    for w, n, k in ((wavelength, scale, 2), (None, scale, 2), (wavelength, None, 1)):
        ref_flux, ref_mask = torch_spectrum_to_observed(values[:, :k], grid, w, n)
        flux, mask, undecided = spectrum_to_observed_fwd(
            values[:, :k].to(device),
            grid.to(device),
            None if w is None else w.to(device),
            None if n is None else n.to(device),
        )
        flux, mask, undecided = flux.cpu(), mask.cpu(), undecided.cpu()
        assert torch.equal(flux.isnan(), ref_flux.isnan())
        assert torch.equal(torch.nan_to_num(flux), torch.nan_to_num(ref_flux))
        assert torch.equal(mask | undecided, ref_mask | undecided)  # decided values equal; the op replays the rest
        assert bool(undecided.any()) == (k == 2)
