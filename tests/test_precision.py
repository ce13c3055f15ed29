"""Precision plumbing (aion_fast.precision): validation, the fp32 context, and bf16 vs fp32 agreement.

Thresholds come from measurements on this CPU (bench/RESULTS.md, "bf16 encoding"), rounded down with a margin:
bundled sample with the bundled demo model: image tokens 98.8% equal, every other token key 100%, embedding cosine
>= 0.999999; base-size random weights (slow): see the slow test. A GPU-marked twin checks the same on CUDA.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import aion_fast
from aion_fast.precision import (
    PRECISIONS,
    embedding_cosine,
    precision_context,
    resolve_precision,
    token_agreement,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import gpu_check  # noqa: E402  (scripts/gpu_check.py: the sample reader shared with the GPU check)

#: (minimum token agreement of tok_image, of every other key, minimum embedding cosine), bundled sample, demo model.
SAMPLE_THRESHOLDS = (0.97, 0.99, 0.99999)


def test_resolve_precision_validates_one_value():
    assert PRECISIONS == ("fp32", "bf16", "fast")
    assert resolve_precision(" Fast ") == "fast"
    assert resolve_precision(None, "cpu") == "fp32" and resolve_precision(None, "cuda") == "fp32"
    assert resolve_precision(" BF16 ") == "bf16" and resolve_precision("bfloat16") == "bf16"
    with pytest.raises(ValueError, match=r"--precision='fp16': expected one of fp32, bf16, fast"):
        resolve_precision("fp16", what="--precision")


def test_precision_context():
    x, w = torch.randn(4, 8), torch.randn(8, 3)
    with precision_context("bf16", "cpu"):
        assert (x @ w).dtype == torch.bfloat16
        with precision_context("fp32", "cpu"):  # the exact path turns autocast off again
            assert (x @ w).dtype == torch.float32
    with pytest.raises(ValueError, match="expected one of"):
        with precision_context("int4", "cpu"):
            pass
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    with precision_context("fp32", "cuda"):  # process-wide flags only: runs without a GPU
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


def test_agreement_helpers():
    a = {"k": torch.tensor([[1, 2, 3, 4]]), "only_a": torch.zeros(1)}
    assert token_agreement(a, {"k": torch.tensor([[1, 2, 0, 4]])}) == {"k": 0.75}
    with pytest.raises(ValueError, match="shapes"):
        token_agreement(a, {"k": torch.zeros(2, 2)})
    e = torch.randn(5, 7)
    assert embedding_cosine(e, 3 * e)["min"] == pytest.approx(1.0)
    assert embedding_cosine(e, -e)["mean"] == pytest.approx(-1.0)


def _sample_figures(device: str) -> tuple[dict, dict]:
    ref_tokens, ref_emb = gpu_check._tokens_and_embeddings("cpu", "fp32")
    tokens, emb = gpu_check._tokens_and_embeddings(device, "bf16")
    return token_agreement(tokens, ref_tokens), {g: embedding_cosine(emb[g], ref_emb[g]) for g in emb}


def _assert_sample_thresholds(agreement: dict, cosine: dict) -> None:
    image_min, other_min, cos_min = SAMPLE_THRESHOLDS
    print("bf16 vs fp32 token agreement:", agreement, "\nembedding cosine:", cosine)
    assert agreement["image:tok_image"] >= image_min, agreement
    assert all(v >= other_min for k, v in agreement.items() if k != "image:tok_image"), agreement
    assert all(c["min"] >= cos_min for c in cosine.values()), cosine


def test_bf16_encoding_on_the_bundled_sample_agrees_with_fp32():
    """CodecManager(precision="bf16") + embed(precision from the model) vs fp32 on the CPU, demo model."""
    agreement, cosine = _sample_figures("cpu")
    _assert_sample_thresholds(agreement, cosine)
    assert min(agreement.values()) < 1.0 or min(c["min"] for c in cosine.values()) < 1.0  # bf16 really ran


def test_fp32_default_is_the_exact_path_and_embed_returns_float32():
    model = aion_fast.AION.from_pretrained(gpu_check.DEMO, encoder_only=True)
    assert model.precision == "fp32"
    tokens = {"tok_flux_g": torch.tensor([[3], [900]]), "tok_flux_r": torch.tensor([[5], [7]])}
    exact = aion_fast.embed(model, tokens)
    assert torch.equal(aion_fast.embed(model, tokens, precision="fp32"), exact)
    fast = aion_fast.embed(model, tokens, precision="bf16")
    assert fast.dtype == torch.float32 and not torch.equal(fast, exact)
    assert embedding_cosine(fast, exact)["min"] > 0.9999
    # mask-free grouping: an all-False input_mask (nothing absent) gives the unmasked embeddings exactly
    none_absent = {k: torch.zeros_like(v, dtype=torch.bool) for k, v in tokens.items()}
    assert torch.equal(aion_fast.embed(model, tokens, input_mask=none_absent), exact)
    with pytest.raises(ValueError, match="precision"):
        aion_fast.AION.from_pretrained(gpu_check.DEMO, encoder_only=True, precision="fp8")


@pytest.mark.slow
@pytest.mark.heavy
def test_bf16_vs_fp32_at_base_size_random_weights():
    """Base-size image and spectrum codecs and transformer (random weights, batch 2): bf16 vs fp32 on the CPU."""
    figures = base_size_figures("cpu", batch=2)
    print(figures)
    # measured (bench/RESULTS.md): image 98.3%, spectrum 98.7% of tokens equal; cosine 0.999994
    assert figures["tok_image"] >= 0.95 and figures["tok_spectrum_desi"] >= 0.95, figures
    assert figures["cosine"]["min"] >= 0.9999 and figures["cosine_same_tokens"]["min"] >= 0.9999, figures


def base_size_figures(device: str, batch: int) -> dict:
    """Token agreement (image, spectrum) and embedding cosine of bf16 vs fp32 at base size, random weights."""
    sys.path.insert(0, str(ROOT / "bench"))
    import shapes

    from aion_fast.codecs.image import ImageCodec
    from aion_fast.codecs.spectrum import SpectrumCodec
    from aion_fast.modalities import DESISpectrum, LegacySurveyImage
    from aion_fast.model import AION, architecture

    torch.manual_seed(0)
    image_codec = ImageCodec(**shapes.IMAGE_CODEC).to(device).eval()
    spectrum_codec = SpectrumCodec(**shapes.SPECTRUM_CODEC).to(device).eval()
    keys = ["tok_image", "tok_spectrum_desi", "tok_flux_g", "tok_flux_r", "tok_flux_z"]
    model = AION(architecture(keys, keys), encoder_only=True).to(device).eval()
    image = LegacySurveyImage(flux=shapes.legacy_images(batch).to(device), bands=shapes.LEGACY_BANDS)
    spectrum = DESISpectrum(**{k: v.to(device) for k, v in shapes.desi_spectra(batch).items()})
    scalars = {k: torch.randint(0, 1024, (batch, 1), generator=torch.Generator().manual_seed(1)).to(device)
               for k in keys[2:]}  # fmt: skip
    out = {}
    for precision in ("fp32", "bf16"):
        with torch.inference_mode(), precision_context(precision, device):
            tokens = {"tok_image": image_codec.encode(image).reshape(batch, -1),
                      "tok_spectrum_desi": spectrum_codec.encode(spectrum).reshape(batch, -1)}  # fmt: skip
        out[precision] = (tokens, aion_fast.embed(model, {**tokens, **scalars}, precision=precision))
    agreement = token_agreement(out["bf16"][0], out["fp32"][0])
    # the embedding on the same (fp32) tokens isolates the transformer's bf16 error from the token changes
    same_tokens = aion_fast.embed(model, {**out["fp32"][0], **scalars}, precision="bf16")
    return {**agreement, "cosine": embedding_cosine(out["bf16"][1], out["fp32"][1]),
            "cosine_same_tokens": embedding_cosine(same_tokens, out["fp32"][1])}  # fmt: skip


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bf16_on_cuda_agrees_with_cpu_fp32():
    """The same thresholds on CUDA (bf16 on the GPU vs fp32 on the CPU); base size on the GPU for the figures."""
    agreement, cosine = _sample_figures("cuda")
    _assert_sample_thresholds(agreement, cosine)
    figures = base_size_figures("cuda", batch=16)
    print("base size, CUDA:", figures)
    assert figures["tok_image"] >= 0.95 and figures["tok_spectrum_desi"] >= 0.95, figures
    assert figures["cosine"]["min"] >= 0.9999, figures
