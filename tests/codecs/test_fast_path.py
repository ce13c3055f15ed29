"""The codec networks' fast CPU path (``precision="fast"``, aion_fast.codecs.nn.fast) against the exact path.

Thresholds come from measurements on this CPU (bench/RESULTS.md, "Issue 18"): the bundled sample with the demo
model gives 100% identical tokens for every key and embedding cosine 1.0 (to float64 rounding); base-size random
weights give >= 99.9% identical tokens (see the heavy test). The latent differences are float32 roundings of a
different summation order (measured max ~3e-6 on latents of magnitude ~1.6).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import aion_fast
from aion_fast import modalities as m
from aion_fast.codecs import CodecManager, ImageCodec, SpectrumCodec
from aion_fast.codecs.nn import MagVitAE
from aion_fast.codecs.nn.convnext import ConvNeXtEncoder1d
from aion_fast.precision import embedding_cosine, fast_path_enabled, precision_context, token_agreement

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "scripts"))
import gpu_check  # noqa: E402  (the bundled sample reader shared with the GPU check)
import shapes  # noqa: E402

#: relative latent error allowed on the fast path (float32 summation order; measured ~2e-6)
LATENT_RTOL = 5e-5


def _randomise_gates(module: torch.nn.Module) -> None:
    """Fresh squeeze-excite gates and GRN parameters start at ~0 / 0: give them values so they are exercised."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if ".net.4.net.2." in name or "grn." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


@pytest.fixture(scope="module")
def small_image_codec():
    torch.manual_seed(0)
    codec = ImageCodec(quantizer_levels=[7, 5, 5, 5, 5], hidden_dims=64, num_consecutive=2).eval()
    _randomise_gates(codec)
    return codec


@pytest.fixture(scope="module")
def small_spectrum_codec():
    torch.manual_seed(0)
    codec = SpectrumCodec(
        encoder_dims=(16, 32, 64, 128), decoder_dims=(64, 32, 16, 1), latent_channels=128, embedding_dim=10
    ).eval()
    _randomise_gates(codec)
    return codec


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_context_switches_the_fast_path_and_nests():
    assert not fast_path_enabled()
    with precision_context("fast", "cpu"):
        assert fast_path_enabled()
        with precision_context("fp32", "cpu"):  # an exact section inside a fast one is exact
            assert not fast_path_enabled()
        assert fast_path_enabled()
    assert not fast_path_enabled()


def _latents(codec, x):
    """The continuous latents (B, E, T) through the public codec stages."""
    latents = codec.encode_latents(codec.preprocess(x))
    return getattr(latents, "latents", latents)


def test_magvit_fast_path_matches_the_exact_one(small_image_codec):
    codec = small_image_codec
    image = m.LegacySurveyImage(flux=shapes.legacy_images(2), bands=shapes.LEGACY_BANDS)
    flux_before = image.flux.clone()
    with torch.inference_mode():
        exact_latents, exact_tokens = _latents(codec, image), codec.encode(image)
        with precision_context("fast", "cpu"):
            fast_latents, fast_tokens = _latents(codec, image), codec.encode(image)
            fast_again = _latents(codec, image)  # packed weights reused
        assert torch.equal(_latents(codec, image), exact_latents)  # the exact path is untouched by a fast run
    assert torch.equal(image.flux, flux_before)
    assert not torch.equal(fast_latents, exact_latents)  # the fast kernels really ran
    assert torch.equal(fast_again, fast_latents)
    assert _relative_error(fast_latents, exact_latents) < LATENT_RTOL
    assert token_agreement({"t": fast_tokens}, {"t": exact_tokens})["t"] >= 0.999


def test_magvit_fast_decode_and_layout(small_image_codec):
    ae: MagVitAE = small_image_codec.model
    z = torch.randn(2, 64, 24, 24)
    with torch.inference_mode():
        exact = ae.decode(z)
        with precision_context("fast", "cpu"):
            fast = ae.decode(z)
            encoded = ae.encode(torch.randn(2, 54, 96, 96))
    assert fast.shape == exact.shape == (2, 54, 96, 96)
    assert _relative_error(fast, exact) < LATENT_RTOL
    assert encoded.shape == (2, 64, 24, 24)


def test_fast_path_needs_inference_and_float32():
    """With autograd on (training) or in float64 the fast context runs the exact modules, bit for bit."""
    torch.manual_seed(2)
    ae = MagVitAE(n_bands=54, hidden_dims=32, n_compressions=2, num_consecutive=1).eval()
    x = torch.randn(1, 54, 32, 32)
    exact = ae.encode(x)
    with precision_context("fast", "cpu"):
        assert torch.equal(ae.encode(x), exact)  # grad enabled here
    ae.double()
    with torch.inference_mode():
        exact = ae.encode(x.double())
        with precision_context("fast", "cpu"):
            assert torch.equal(ae.encode(x.double()), exact)


def test_packed_weights_follow_in_place_updates():
    torch.manual_seed(1)
    ae = MagVitAE(n_bands=54, hidden_dims=32, n_compressions=2, num_consecutive=1).eval()
    x = torch.randn(1, 54, 32, 32)
    with torch.inference_mode(), precision_context("fast", "cpu"):
        before = ae.encode(x)
    with torch.no_grad():
        ae.conv_in.conv.weight.mul_(2.0)  # e.g. load_state_dict or an optimiser step
    with torch.inference_mode():
        exact = ae.encode(x)
        with precision_context("fast", "cpu"):
            after = ae.encode(x)
    assert not torch.allclose(after, before)
    assert _relative_error(after, exact) < LATENT_RTOL


def test_modules_built_under_inference_mode():
    """Weights created inside ``torch.inference_mode`` (inference tensors, no version counter) take the fast path."""
    x = torch.randn(1, 54, 32, 32)
    with torch.inference_mode():
        torch.manual_seed(4)
        ae = MagVitAE(n_bands=54, hidden_dims=32, n_compressions=2, num_consecutive=1).eval()
        exact = ae.encode(x)
        with precision_context("fast", "cpu"):
            fast = ae.encode(x)
    assert _relative_error(fast, exact) < LATENT_RTOL


def test_convnext_fast_path_matches_the_exact_one(small_spectrum_codec):
    codec = small_spectrum_codec
    spectrum = m.DESISpectrum(**shapes.desi_spectra(2))
    with torch.inference_mode():
        exact_latents, exact_tokens = _latents(codec, spectrum), codec.encode(spectrum)
        with precision_context("fast", "cpu"):
            fast_latents, fast_tokens = _latents(codec, spectrum), codec.encode(spectrum)
        assert torch.equal(_latents(codec, spectrum), exact_latents)
    assert not torch.equal(fast_latents, exact_latents)
    assert _relative_error(fast_latents, exact_latents) < LATENT_RTOL
    assert token_agreement({"t": fast_tokens}, {"t": exact_tokens})["t"] >= 0.999


def test_convnext_encoder_with_gradients_stays_exact():
    torch.manual_seed(0)
    encoder = ConvNeXtEncoder1d(depths=(1, 1), dims=(8, 16))
    x = torch.randn(2, 2, 256)
    exact = encoder(x)
    with precision_context("fast", "cpu"):
        assert torch.equal(encoder(x), exact)


def test_bundled_sample_fast_agrees_with_exact():
    """CodecManager(precision="fast") + AION.from_pretrained(precision="fast") vs fp32: the demo model's sample."""
    ref_tokens, ref_emb = gpu_check._tokens_and_embeddings("cpu", "fp32")
    tokens, emb = gpu_check._tokens_and_embeddings("cpu", "fast")
    agreement = token_agreement(tokens, ref_tokens)
    print("fast vs fp32 token agreement:", agreement)
    assert min(agreement.values()) >= 0.999, agreement
    assert all(embedding_cosine(emb[g], ref_emb[g])["min"] >= 0.9999 for g in emb)


def test_precision_fast_is_accepted_by_the_python_api():
    codecs = CodecManager(repo=gpu_check.DEMO, precision="FAST")
    model = aion_fast.AION.from_pretrained(gpu_check.DEMO, encoder_only=True, precision="fast")
    assert codecs.precision == model.precision == "fast"
    tokens = {"tok_flux_g": torch.tensor([[3], [900]]), "tok_flux_r": torch.tensor([[5], [7]])}
    assert torch.equal(aion_fast.embed(model, tokens), aion_fast.embed(model, tokens, precision="fp32"))


@pytest.mark.slow
@pytest.mark.heavy
def test_fast_vs_exact_at_base_size_random_weights():
    """Base-size image and spectrum codecs (random weights, gates exercised), batch 2: fast vs exact tokens."""
    torch.manual_seed(0)
    image_codec = ImageCodec(**shapes.IMAGE_CODEC).eval()
    spectrum_codec = SpectrumCodec(**shapes.SPECTRUM_CODEC).eval()
    _randomise_gates(image_codec)
    _randomise_gates(spectrum_codec)
    image = m.LegacySurveyImage(flux=shapes.legacy_images(2), bands=shapes.LEGACY_BANDS)
    spectrum = m.DESISpectrum(**shapes.desi_spectra(2))
    out = {}
    for precision in ("fp32", "fast"):
        with torch.inference_mode(), precision_context(precision, "cpu"):
            out[precision] = {"tok_image": image_codec.encode(image), "tok_spectrum": spectrum_codec.encode(spectrum)}
    agreement = token_agreement(out["fast"], out["fp32"])
    print(agreement)
    assert min(agreement.values()) >= 0.999, agreement


def test_encode_cli_accepts_precision_fast():
    from aion_fast.cli import build_parser

    args = build_parser().parse_args(["encode", "in.h5", "--output", "out", "--precision", "fast"])
    assert args.precision == "fast"


@pytest.mark.slow
def test_encode_job_with_precision_fast(tmp_path):
    """``aion-fast encode --precision fast`` runs and records its agreement with fp32 (bundled sample)."""
    from aion_fast.jobs.encode import EncodeOptions, run_encode

    sample = ROOT / "aion_fast" / "data" / "sample" / "mmu" / "legacysurvey"
    summary = run_encode([sample], tmp_path / "fast", EncodeOptions(precision="fast", batch_size=16, workers=0,
                                                                    progress=False))  # fmt: skip
    check = summary["precision_check"]
    assert summary["precision"] == "fast" and check["objects"] == 8
    assert min(check["token_agreement"].values()) >= 0.999, check
    assert check["embedding_cosine"]["min"] >= 0.9999, check
