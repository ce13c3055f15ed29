"""Pre/postprocessing op throughput in one run: the reference ``aion`` code vs aion_fast's PyTorch path vs its C++ path.

Each group times the same inputs three ways: ``reference`` (the reference package's own code for that step),
``torch`` (``AION_FAST_BACKEND=torch``, the fp32 PyTorch reference of aion_fast) and ``cpp`` (``aion_fast._C``).
Inputs are realistic AION-1 batches from :mod:`shapes`; every aion_fast result is checked against the reference's
before timing: bit-identical for the encode-side ops and the spectrum decode epilogue; the image decode epilogue
within 1e-5 relative (the reference's ``F.linear`` bias addition and PyTorch's two-faced CPU sinh round differently
in the last bit, amplified by sinh; the codec tests use the same bound).

Encode side: ``image_preprocess`` (crop, clip, rescale, arcsinh, placement) and ``spectrum_to_latent``. Their C++
kernels must reproduce glibc's ``asinhf`` bit for bit (PyTorch's CPU arcsinh is a per-element ``asinhf`` call): they
run an AVX2 replica of it, verified against the loaded libm at first use, else the scalar libm call
(``aion_fast._C.asinhf_vector_verified()`` says which; csrc/asinhf/asinhf_cpu.cpp). Decode side:
``image_postprocess`` (54 -> 9 projection, sinh, rescale, band selection) and ``spectrum_to_observed``.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import shapes
import torch

pytest.importorskip("aion", reason="needs the reference package aion (polymathic-aion): pip install -e .[test]")
from aion.codecs.image import AutoencoderImageCodec as RefImageCodec
from aion.codecs.modules.spectrum import LatentSpectralGrid as RefLatentGrid
from aion.codecs.modules.subsampler import SubsampledLinear as RefSubsampledLinear
from aion.codecs.preprocessing.image import Clamp, ImagePadder, RescaleToLegacySurvey
from conftest import run_timed

from aion_fast.codecs.preprocessing import band_indices, zeropoint_scale
from aion_fast.modalities import BAND_CLAMP_MAX
from aion_fast.ops import image_postprocess, image_preprocess, spectrum_to_latent, spectrum_to_observed
from aion_fast.ops.image_preprocess import center_crop
from aion_fast.ops.spectrum_to_latent import latent_wavelength

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
    run_timed(benchmark, fn, bench_device, rounds=30)


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


def _reference_image_postprocess(h: torch.Tensor, layer: RefSubsampledLinear, bands: list[str]) -> torch.Tensor:
    """The reference codec's decode steps after the MagViT decoder, with its own modules and method."""
    everything = torch.ones(h.shape[0], 9, dtype=torch.bool)
    compressed = RefImageCodec._reverse_range_compress(
        SimpleNamespace(mult_factor=10.0, range_compression_factor=0.01), layer(h, everything)
    )
    return ImagePadder().backward(compressed, bands)  # DES: the reference's rescaler multiplies by 1


@pytest.mark.parametrize("impl_env", IMPLS, indirect=True)
def test_image_postprocess(benchmark, record, bench_device, impl_env):
    batch = CPU_BATCH if bench_device == "cpu" else shapes.BATCH[bench_device]
    torch.manual_seed(0)
    layer = RefSubsampledLinear(54, 9, subsample_in=False).to(bench_device)
    h = (torch.randn(batch, 54, shapes.IMAGE_SIZE, shapes.IMAGE_SIZE) * 0.3).to(bench_device)
    h = h.contiguous(memory_format=torch.channels_last)  # the MagViT decoder's output layout
    bands = shapes.LEGACY_BANDS
    benchmark.group = f"image_postprocess B={batch} 54x96x96 -> {len(bands)}x96x96"
    record(impl_env, batch)
    if impl_env == "reference":
        fn = lambda: _reference_image_postprocess(h, layer, bands)  # noqa: E731
    else:
        fn = lambda: image_postprocess(h, layer.weight, layer.bias, band_indices(bands))  # noqa: E731
        with torch.no_grad():
            ours, ref = fn(), _reference_image_postprocess(h, layer, bands)
        assert bool(((ours - ref).abs() <= 1e-5 * ref.abs()).all())
    with torch.no_grad():
        run_timed(benchmark, fn, bench_device, rounds=10)


@pytest.mark.parametrize("impl_env", IMPLS, indirect=True)
@pytest.mark.parametrize("pixels", [shapes.DESI_PIXELS, *shapes.SDSS_PIXELS])
def test_spectrum_to_observed(benchmark, record, bench_device, impl_env, pixels):
    batch = CPU_BATCH if bench_device == "cpu" else shapes.BATCH[bench_device]
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
