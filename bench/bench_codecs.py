"""Codec encode/decode throughput, reference vs aion_fast on identical weights and inputs, in one run.

The convolutional networks dominate (~87% of an image encode, most of a spectrum encode). What was tried for them,
on small configs with the pre-quantisation latents compared bit for bit: ``torch.compile`` of the spectrum encoder
changes the latents (max 2.4e-6) and ``torch.backends.mkldnn.enabled = False`` changes them too, so neither is used
(LFQ/FSQ indices can flip on such differences); the image codec already runs its convolutions channels-last, the
reference's layout. The measured ratios are therefore the honest gain from the surrounding code: inference mode,
fused pre/postprocessing ops and in-place buffers.
"""

from __future__ import annotations

import pytest
import shapes
import torch

pytest.importorskip("aion", reason="needs the reference package aion (polymathic-aion): pip install -e .[test]")
from aion import codecs as ref_codecs
from aion import modalities as ref_modalities
from conftest import run_timed

from aion_fast import modalities as m
from aion_fast.codecs import ImageCodec, SpectrumCodec

IMPLS = ["reference", "aion_fast"]


@pytest.fixture(scope="module")
def image_codecs(tmp_path_factory, bench_device):
    torch.manual_seed(0)
    ref = ref_codecs.ImageCodec(**shapes.IMAGE_CODEC).eval()
    root = tmp_path_factory.mktemp("image_codec")
    ref.save_pretrained(root, modality=ref_modalities.LegacySurveyImage)
    ours = ImageCodec.from_pretrained(root, modality=m.LegacySurveyImage, device=bench_device)
    return ref.to(bench_device), ours


@pytest.fixture(scope="module")
def spectrum_codecs(tmp_path_factory, bench_device):
    torch.manual_seed(0)
    ref = ref_codecs.SpectrumCodec(**shapes.SPECTRUM_CODEC).eval()
    root = tmp_path_factory.mktemp("spectrum_codec")
    ref.save_pretrained(root, modality=ref_modalities.DESISpectrum)
    ours = SpectrumCodec.from_pretrained(root, modality=m.DESISpectrum, device=bench_device)
    return ref.to(bench_device), ours


@pytest.mark.parametrize("impl", IMPLS)
def test_image_encode(benchmark, record, bench_device, image_codecs, impl):
    batch = shapes.BATCH[bench_device]
    flux = shapes.legacy_images(batch).to(bench_device)
    benchmark.group = f"ImageCodec.encode B={batch} 4x160x160"
    record(impl, batch)
    ref, ours = image_codecs
    if impl == "reference":  # the reference clips and rescales its input in place: give it a fresh copy each call
        fn = lambda: ref.encode(ref_modalities.LegacySurveyImage(flux=flux.clone(), bands=shapes.LEGACY_BANDS))  # noqa: E731
    else:
        image = m.LegacySurveyImage(flux=flux, bands=shapes.LEGACY_BANDS)
        fn = lambda: ours.encode(image)  # noqa: E731
    with torch.inference_mode():
        tokens = run_timed(benchmark, fn, bench_device, rounds=2)
    assert tokens.shape == (batch, shapes.IMAGE_TOKENS)


@pytest.mark.parametrize("impl", IMPLS)
def test_spectrum_encode(benchmark, record, bench_device, spectrum_codecs, impl):
    batch = shapes.BATCH[bench_device]
    spectra = {k: v.to(bench_device) for k, v in shapes.desi_spectra(batch).items()}
    benchmark.group = f"SpectrumCodec.encode B={batch} {shapes.DESI_PIXELS} px"
    record(impl, batch)
    ref, ours = spectrum_codecs
    if impl == "reference":
        spectrum = ref_modalities.DESISpectrum(**spectra)
        fn = lambda: ref.encode(spectrum)  # noqa: E731
    else:
        spectrum = m.DESISpectrum(**spectra)
        fn = lambda: ours.encode(spectrum)  # noqa: E731
    with torch.inference_mode():
        tokens = run_timed(benchmark, fn, bench_device)
    assert tokens.shape == (batch, shapes.SPECTRUM_TOKENS)


@pytest.mark.parametrize("impl", IMPLS)
def test_image_decode(benchmark, record, bench_device, image_codecs, impl):
    batch = shapes.BATCH[bench_device]
    ref, ours = image_codecs
    tokens = ours.encode(
        m.LegacySurveyImage(flux=shapes.legacy_images(batch).to(bench_device), bands=shapes.LEGACY_BANDS)
    )
    benchmark.group = f"ImageCodec.decode B={batch} 576 tokens -> 4x96x96"
    record(impl, batch)
    if impl == "reference":
        fn = lambda: ref.decode(tokens, bands=shapes.LEGACY_BANDS)  # noqa: E731
    else:
        fn = lambda: ours.decode(tokens, bands=shapes.LEGACY_BANDS)  # noqa: E731
    with torch.inference_mode():
        image = run_timed(benchmark, fn, bench_device, rounds=2)
    assert image.flux.shape == (batch, 4, shapes.IMAGE_SIZE, shapes.IMAGE_SIZE)


@pytest.mark.parametrize("impl", IMPLS)
def test_spectrum_decode(benchmark, record, bench_device, spectrum_codecs, impl):
    batch = shapes.BATCH[bench_device]
    ref, ours = spectrum_codecs
    spectra = {k: v.to(bench_device) for k, v in shapes.desi_spectra(batch).items()}
    tokens = ours.encode(m.DESISpectrum(**spectra))
    wavelength = spectra["wavelength"]
    benchmark.group = f"SpectrumCodec.decode B={batch} 273 tokens -> {shapes.DESI_PIXELS} px"
    record(impl, batch)
    if impl == "reference":
        fn = lambda: ref.decode(tokens, wavelength=wavelength.clone())  # noqa: E731
    else:
        fn = lambda: ours.decode(tokens, wavelength=wavelength)  # noqa: E731
    with torch.inference_mode():
        spectrum = run_timed(benchmark, fn, bench_device)
    assert spectrum.flux.shape == (batch, shapes.DESI_PIXELS)
