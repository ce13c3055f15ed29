"""aion_fast against the reference transformer: same weights, same outputs within 1e-5 relative (fp32)."""

from __future__ import annotations

import random

import pytest
import torch

from aion_fast.model import AION
from tests.model.conftest import TINY_CONFIG, VARIANT_CONFIG, random_padding, random_tokens, total_tokens
from tests.utils import assert_close_rel

aion = pytest.importorskip("aion", reason="needs the reference package aion (polymathic-aion): pip install -e .[test]")
from aion.modalities import HSCMagG, LegacySurveyFluxG, LegacySurveyImage, Z  # noqa: E402

INPUT_KEYS = ["tok_image", "tok_spectrum_desi", "tok_flux_g", "tok_z", "catalog", "tok_xp_bp"]
PADDED_KEYS = ["tok_image", "tok_spectrum_desi", "catalog", "tok_xp_bp"]


def _reference_encode(reference, tokens, mask=None, num_encoder_tokens=None):
    budget = total_tokens(tokens) if num_encoder_tokens is None else num_encoder_tokens
    return reference.encode(tokens, input_mask=mask, num_encoder_tokens=budget)


def test_state_dicts_equal(tiny):
    ours, theirs = tiny.model.state_dict(), tiny.reference.state_dict()
    assert list(ours) == list(theirs)
    for name, tensor in theirs.items():
        assert torch.equal(ours[name], tensor), name


def test_fresh_model_matches_reference_structure_and_buffers(tiny):
    fresh = AION(TINY_CONFIG)
    theirs = tiny.reference.state_dict()
    fresh_state = fresh.state_dict()
    assert {k: v.shape for k, v in fresh_state.items()} == {k: v.shape for k, v in theirs.items()}
    buffer_names = {name for name, _ in fresh.named_buffers()}
    assert buffer_names == {name for name, _ in tiny.reference.named_buffers()}
    for name, tensor in theirs.items():
        if name in buffer_names:
            torch.testing.assert_close(fresh_state[name], tensor, rtol=0, atol=1e-6, msg=name)


def test_modality_embeddings_are_tied(tiny):
    model = tiny.model
    for key in ("tok_image", "tok_z", "tok_flux_g", "catalog"):
        assert model.encoder_embeddings[key].mod_emb is model.decoder_embeddings[key].mod_emb
    assert model.decoder_embeddings["tok_spectrum_sdss"].mod_emb is not None


@pytest.mark.parametrize("batch", [1, 3, 7])
def test_encode_with_padding_matches_reference(tiny, batch):
    tokens = random_tokens(INPUT_KEYS, batch)
    mask = random_padding(tokens, PADDED_KEYS)
    with torch.no_grad():
        expected = _reference_encode(tiny.reference, tokens, mask)
        actual = tiny.model.encode(tokens, input_mask=mask)
    assert_close_rel(actual, expected, what=f"encode B={batch}")


def test_encode_without_padding_matches_reference(tiny):
    tokens = random_tokens(INPUT_KEYS, 3)
    with torch.no_grad():
        assert_close_rel(tiny.model.encode(tokens), _reference_encode(tiny.reference, tokens))


def test_encode_object_with_every_token_masked(tiny):
    tokens = random_tokens(["tok_spectrum_desi", "tok_xp_bp"], 3)
    mask = random_padding(tokens, ["tok_spectrum_desi", "tok_xp_bp"])
    mask["tok_spectrum_desi"][1] = True
    mask["tok_xp_bp"][1] = True
    with torch.no_grad():
        actual = tiny.model.encode(tokens, input_mask=mask)
        expected = _reference_encode(tiny.reference, tokens, mask)
    assert torch.isfinite(actual).all()
    assert_close_rel(actual, expected)


def test_encode_explicit_budget_keeps_first_present_tokens(tiny):
    tokens = random_tokens(INPUT_KEYS, 3)
    mask = random_padding(tokens, PADDED_KEYS, fraction=0.5)
    with torch.no_grad():
        expected = _reference_encode(tiny.reference, tokens, mask, num_encoder_tokens=300)
        actual = tiny.model.encode(tokens, input_mask=mask, num_encoder_tokens=300)
    assert actual.shape == (3, 300, 64)
    assert_close_rel(actual, expected)


def test_encode_returns_every_token_beyond_256(tiny):
    tokens = random_tokens(["tok_image", "tok_spectrum_desi"], 2)
    with torch.no_grad():
        actual = tiny.model.encode(tokens)
        truncated_reference = tiny.reference.encode(tokens)
    assert truncated_reference.shape[1] == 256
    assert actual.shape == (2, 576 + 273, 64)
    assert_close_rel(actual, _reference_encode(tiny.reference, tokens))


def test_embed_inputs_matches_reference(tiny):
    tokens = random_tokens(INPUT_KEYS, 3)
    mask = random_padding(tokens, PADDED_KEYS)
    with torch.no_grad():
        expected = tiny.reference.embed_inputs(tokens, mask=mask, num_encoder_tokens=500)
        actual = tiny.model.embed_inputs(tokens, mask=mask, num_encoder_tokens=500)
    for name, ours, theirs in zip(("tokens", "emb", "mask", "mod_mask"), actual, expected, strict=True):
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype, name
        if ours.is_floating_point():
            assert_close_rel(ours, theirs, what=name)
        else:
            assert torch.equal(ours, theirs), name


@pytest.mark.parametrize("batch", [1, 3])
def test_forward_logits_match_reference(tiny, batch):
    tokens = random_tokens(INPUT_KEYS, batch)
    mask = random_padding(tokens, PADDED_KEYS)
    targets = [Z, LegacySurveyImage, LegacySurveyFluxG]
    with torch.no_grad():
        expected = tiny.reference(tokens, target_modality=targets, input_mask=mask)
        actual = tiny.model(tokens, target_modality=targets, input_mask=mask)
    assert list(actual) == ["tok_z", "tok_image", "tok_flux_g"]
    for key, logits in expected.items():
        assert actual[key].shape == logits.shape
        assert_close_rel(actual[key], logits, what=key)


def test_forward_accepts_token_keys(tiny):
    tokens = random_tokens(["tok_flux_g", "tok_spectrum_desi"], 2)
    with torch.no_grad():
        by_class = tiny.model(tokens, target_modality=Z)
        by_key = tiny.model(tokens, target_modality=["tok_z"])
    assert by_key["tok_z"].shape == (2, 1, 1025)
    torch.testing.assert_close(by_key["tok_z"], by_class["tok_z"], rtol=0, atol=0)


@pytest.mark.parametrize("key, length", [("tok_spectrum_sdss", 273), ("catalog", 12)])
def test_embed_targets_and_decode_match_reference(tiny, key, length):
    batch = 3
    not_target = torch.rand(batch, length) < 0.4
    tokens = random_tokens(["tok_flux_g", "tok_spectrum_desi"], batch)
    mask = random_padding(tokens, ["tok_spectrum_desi"])
    random.seed(0)
    with torch.no_grad():
        expected = tiny.reference.embed_targets({key: not_target}, num_decoder_tokens=length - 3)
        actual = tiny.model.embed_targets({key: not_target}, num_decoder_tokens=length - 3)
        for ours, theirs in zip(actual, expected, strict=True):
            assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
            if ours.is_floating_point():
                assert_close_rel(ours, theirs)
            else:
                assert torch.equal(ours, theirs)
        enc_tokens, enc_emb, enc_mask, _ = tiny.reference.embed_inputs(tokens, mask=mask, num_encoder_tokens=300)
        context = tiny.reference._encode(enc_tokens, enc_emb, enc_mask)
        decoded = tiny.reference._decode(context, enc_mask, expected[0], expected[1], expected[4])
        ours_context = tiny.model.encode_embeddings(enc_tokens, enc_emb, enc_mask)
        ours_decoded = tiny.model.decode_embeddings(ours_context, enc_mask, actual[0], actual[1], actual[4])
    assert_close_rel(ours_context, context)
    assert_close_rel(ours_decoded, decoded)


@pytest.mark.parametrize("batch", [1, 4])
def test_variant_config_matches_reference(variant, batch):
    tokens = random_tokens(["tok_image", "tok_spectrum_sdss", "tok_mag_g", "catalog"], batch)
    mask = random_padding(tokens, ["tok_spectrum_sdss", "catalog"])
    targets = ["tok_z", "tok_image", "tok_mag_g"]
    with torch.no_grad():
        assert_close_rel(
            variant.model.encode(tokens, input_mask=mask), _reference_encode(variant.reference, tokens, mask)
        )
        expected = variant.reference(tokens, target_modality=[Z, LegacySurveyImage, HSCMagG], input_mask=mask)
        actual = variant.model(tokens, target_modality=targets, input_mask=mask)
    for key in targets:
        assert_close_rel(actual[key], expected[key], what=key)


def test_variant_state_dict_and_untied_embeddings(variant):
    ours, theirs = variant.model.state_dict(), variant.reference.state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[name], tensor) for name, tensor in theirs.items())
    model = variant.model
    assert model.encoder_embeddings["tok_image"].mod_emb is not model.decoder_embeddings["tok_image"].mod_emb
    assert model.register_tokens.shape == (1, 2, 48)
    assert VARIANT_CONFIG["decoder_causal_mask"]
