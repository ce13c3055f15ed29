"""Preprocessing op throughput in one run: the reference ``aion`` op vs aion_fast's PyTorch path vs its C++ path (CPU).

Each group times the same inputs three ways: ``reference`` (the reference package's own code for that step),
``torch`` (``AION_FAST_BACKEND=torch``, the fp32 PyTorch reference of aion_fast) and ``cpp`` (``aion_fast._C``).
Inputs are realistic AION-1 batches from :mod:`shapes`; every aion_fast result is checked against the reference's
before timing (exact for indices and for the float ops, which are bit-identical on CPU).
"""

from __future__ import annotations

import pytest
import shapes
import torch
from aion.codecs.modules.spectrum import LatentSpectralGrid as RefLatentGrid
from aion.codecs.preprocessing.image import Clamp, RescaleToLegacySurvey
from conftest import run_timed

from aion_fast.codecs.preprocessing import band_indices, center_crop, zeropoint_scale
from aion_fast.codecs.spectral_grid import latent_wavelength
from aion_fast.modalities import BAND_CLAMP_MAX
from aion_fast.ops import image_preprocess, spectrum_to_latent

IMPLS = ["reference", "torch", "cpp"]  # impl_env (bench/conftest.py) forces the aion_fast backend
CPU_BATCH = 64  # ops are cheap: larger than the codec benchmarks' 8, still a realistic encode batch


def _reference_image_preprocess(flux: torch.Tensor, bands: list[str], survey: str) -> torch.Tensor:
    """The reference codec's steps up to the padded 9-band input, with its own modules (no projection)."""
    x = center_crop(flux.clone(), shapes.IMAGE_SIZE)  # its Clamp writes into its input: give it a copy
    x = Clamp()(x, bands)
    x = RescaleToLegacySurvey().forward(x, survey)
    x = torch.arcsinh(x / 0.01) * 0.01 * 10.0
    padded = torch.zeros(x.shape[0], 9, *x.shape[2:], dtype=x.dtype)
    padded[:, band_indices(bands)] = x
    return padded.permute(0, 2, 3, 1)


@pytest.mark.parametrize("impl_env", IMPLS, indirect=True)
@pytest.mark.parametrize("survey", ["DES", "HSC"])
def test_image_preprocess(benchmark, record, bench_device, impl_env, survey):
    bands = shapes.LEGACY_BANDS if survey == "DES" else shapes.HSC_BANDS
    batch = CPU_BATCH if bench_device == "cpu" else shapes.BATCH[bench_device]
    flux = shapes.legacy_images(batch).to(bench_device)
    if survey == "HSC":
        flux = torch.cat([flux, flux[:, :1]], dim=1)
    benchmark.group = f"image_preprocess {survey} B={batch} {len(bands)}x160x160 -> 96x96x9"
    record(impl_env, batch)
    args = (band_indices(bands), [BAND_CLAMP_MAX[b] for b in bands], zeropoint_scale(survey))
    if impl_env == "reference":
        fn = lambda: _reference_image_preprocess(flux, bands, survey)  # noqa: E731
    else:
        fn = lambda: image_preprocess(flux, *args)  # noqa: E731
        assert torch.equal(fn(), _reference_image_preprocess(flux, bands, survey))
    run_timed(benchmark, fn, bench_device, rounds=10)


@pytest.mark.parametrize("impl_env", IMPLS, indirect=True)
@pytest.mark.parametrize("pixels", [shapes.DESI_PIXELS, *shapes.SDSS_PIXELS])
def test_spectrum_to_latent(benchmark, record, bench_device, impl_env, pixels):
    batch = CPU_BATCH if bench_device == "cpu" else shapes.BATCH[bench_device]
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
