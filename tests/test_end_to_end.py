"""The user flow of the issue, end to end, against the reference on one checkpoint saved by the reference itself:
CodecManager.encode -> AION.encode -> aion_fast.embed, and CodecManager.decode."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("aion", reason="needs the reference package aion (polymathic-aion): pip install -e .[test]")
from aion import AION as RefAION
from aion import codecs as ref_codecs
from aion import modalities as ref_m

import aion_fast
from aion_fast import modalities as m
from aion_fast.codecs import CodecManager
from tests.utils import assert_close_rel, assert_tokens_equal

BANDS = ["DES-G", "DES-R", "DES-I", "DES-Z"]
TINY_TRANSFORMER = {
    "dim": 64, "encoder_depth": 2, "decoder_depth": 2, "num_heads": 4, "mlp_ratio": 4.0,
    "qkv_bias": False, "proj_bias": False, "mlp_bias": False, "act_layer": "SiLU", "norm_bias": False,
    "gated_mlp": True, "qk_norm": True, "decoder_causal_mask": False, "decoder_sep_mask": True,
    "num_register_tokens": 0, "use_act_checkpoint": False, "share_modality_embeddings": True,
}  # fmt: skip
DOMAINS = ["tok_flux_g", "tok_image", "tok_spectrum_desi", "tok_z"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A complete tiny checkpoint (3 codecs + transformer) in the aion-base layout, written by the reference."""
    torch.manual_seed(7)
    root = tmp_path_factory.mktemp("aion_tiny")
    image = ref_codecs.ImageCodec(quantizer_levels=[7, 5, 5, 5, 5], hidden_dims=32, num_consecutive=1).eval()
    image.save_pretrained(root, modality=ref_m.LegacySurveyImage)
    spectrum = ref_codecs.SpectrumCodec(
        encoder_depths=(1, 1, 1, 1), encoder_dims=(16, 32, 64, 128), decoder_depths=(1, 1, 1, 1),
        decoder_dims=(64, 32, 16, 1), latent_channels=128, embedding_dim=10, dim=10,
    ).eval()  # fmt: skip
    spectrum.save_pretrained(root, modality=ref_m.DESISpectrum)
    flux = ref_codecs.LogScalarCodec("FLUX_G", 1024, 4000)
    flux._quantizer._update_reservoirs(torch.exp(torch.randn(6000)))
    flux.save_pretrained(root, modality=ref_m.LegacySurveyFluxG)
    model = RefAION({"domains_in": DOMAINS, "domains_out": DOMAINS, **TINY_TRANSFORMER}).eval()
    model.save_pretrained(root)
    return root, {"image": image, "spectrum": spectrum, "flux": flux, "model": model}


def _batch(batch: int):
    g = torch.Generator().manual_seed(batch)
    flux = torch.randn(batch, 4, 160, 160, generator=g) * 0.03 + 2 * torch.exp(
        -((torch.arange(160) - 80.0) ** 2)[None, None, :, None] / 50
    )
    wave = (3600 + 0.8 * torch.arange(7781.0)).repeat(batch, 1)
    spec = {
        "flux": 3 + torch.randn(batch, 7781, generator=g),
        "ivar": torch.full((batch, 7781), 2.0),
        "mask": torch.rand(batch, 7781, generator=g) < 0.02,
        "wavelength": wave,
    }
    fluxes = torch.rand(batch, generator=g) * 30
    return flux, spec, fluxes


@pytest.mark.parametrize("batch", [1, 3])
def test_tokens_and_embeddings_match_reference(checkpoint, batch):
    root, ref = checkpoint
    image, spectrum, flux_g = _batch(batch)
    model = aion_fast.AION.from_pretrained(root).eval()
    codecs = CodecManager(repo=root, device="cpu")
    tokens = codecs.encode(
        m.LegacySurveyImage(flux=image, bands=BANDS), m.DESISpectrum(**spectrum), m.LegacySurveyFluxG(value=flux_g)
    )
    with torch.no_grad():
        ref_tokens = {
            "tok_image": ref["image"].encode(ref_m.LegacySurveyImage(flux=image.clone(), bands=BANDS)),
            "tok_spectrum_desi": ref["spectrum"].encode(ref_m.DESISpectrum(**spectrum)),
            "tok_flux_g": ref["flux"].encode(ref_m.LegacySurveyFluxG(value=flux_g)),
        }
    for key, expected in ref_tokens.items():
        assert tokens[key].dtype == torch.int64
        assert_tokens_equal(tokens[key], expected, key)
    n_tokens = 576 + 273 + 1
    context = model.encode(tokens)
    assert context.shape == (batch, n_tokens, 64)  # every token kept: 850 > the reference's silent 256 cut
    with torch.no_grad():
        ref_context = ref["model"].encode(ref_tokens, num_encoder_tokens=n_tokens)
    assert_close_rel(context, ref_context, what="AION.encode")
    assert_close_rel(aion_fast.embed(model, tokens, pooling="mean"), ref_context.mean(dim=1), what="mean embedding")

    decoded = codecs.decode(tokens, m.LegacySurveyImage, bands=BANDS)
    assert isinstance(decoded, m.LegacySurveyImage) and decoded.flux.shape == (batch, 4, 96, 96)
    with torch.no_grad():
        ref_decoded = ref["image"].decode(ref_tokens["tok_image"], bands=BANDS)
    assert_close_rel(decoded.flux, ref_decoded.flux, what="decoded image")


def test_missing_modality_is_masked_not_averaged(checkpoint):
    """Object 1 has no spectrum: its embedding is the mean over its image and flux tokens only."""
    root, ref = checkpoint
    image, spectrum, flux_g = _batch(2)
    model = aion_fast.AION.from_pretrained(root).eval()
    codecs = CodecManager(repo=root)
    tokens = codecs.encode(
        m.LegacySurveyImage(flux=image, bands=BANDS), m.DESISpectrum(**spectrum), m.LegacySurveyFluxG(value=flux_g)
    )
    input_mask = {"tok_spectrum_desi": torch.tensor([[False], [True]]).expand(2, 273)}
    vectors = aion_fast.embed(model, tokens, pooling="mean", input_mask=input_mask)
    alone = {k: v[1:] for k, v in tokens.items() if k != "tok_spectrum_desi"}
    assert_close_rel(vectors[1], aion_fast.embed(model, alone, pooling="mean")[0], what="masked object")


def test_embed_is_the_function_even_after_submodule_import():
    import aion_fast.embedding  # noqa: F401 - importing the submodule must not shadow the function

    assert callable(aion_fast.embed) and aion_fast.embed.__name__ == "embed"


def test_outputs_usable_with_autograd_on(checkpoint):
    """Tokens and embeddings leave inference mode: a probe can be trained on them with autograd enabled."""
    root, _ = checkpoint
    model = aion_fast.AION.from_pretrained(root).eval()
    tokens = CodecManager(repo=root).encode(m.LegacySurveyFluxG(value=torch.rand(4) * 10))
    assert not tokens["tok_flux_g"].is_inference()
    vectors = aion_fast.embed(model, tokens)
    assert not vectors.is_inference()
    probe = torch.nn.Linear(vectors.shape[1], 1)
    probe(vectors).sum().backward()
    assert probe.weight.grad is not None
