"""``aion_fast.embed``: mean pooling over present tokens only."""

from __future__ import annotations

import pytest
import torch

from aion_fast.embedding import embed
from tests.model.conftest import random_padding, random_tokens

KEYS = ["tok_spectrum_desi", "tok_flux_g", "catalog", "tok_xp_bp"]


def test_mean_equals_manual_mean_over_present_rows(tiny):
    tokens = random_tokens(KEYS, 4)
    mask = random_padding(tokens, ["tok_spectrum_desi", "catalog"], fraction=0.5)
    pooled = embed(tiny.model, tokens, pooling="mean", input_mask=mask)
    with torch.no_grad():
        context, padding = tiny.model.encode_with_padding(tokens, input_mask=mask)
    assert pooled.shape == (4, 64)
    for row in range(4):
        present = context[row][~padding[row]]
        assert present.shape[0] == 273 + 1 + 20 + 55 - int(
            mask["tok_spectrum_desi"][row].sum() + mask["catalog"][row].sum()
        )
        torch.testing.assert_close(pooled[row], present.mean(dim=0), rtol=1e-5, atol=1e-6)
    naive = context.mean(dim=1)
    assert not torch.allclose(pooled, naive, atol=1e-4), "padding rows must not be averaged in"


def test_ids_at_padded_positions_change_nothing(tiny):
    tokens = random_tokens(KEYS, 3)
    mask = random_padding(tokens, ["tok_spectrum_desi", "catalog"], fraction=0.4)
    altered = {key: value.clone() for key, value in tokens.items()}
    for key in mask:
        noise = torch.randint(0, 1000, altered[key].shape)
        altered[key] = torch.where(mask[key], noise, altered[key])
    assert not torch.equal(altered["catalog"], tokens["catalog"])
    for pooling in ("mean", "none"):
        torch.testing.assert_close(
            embed(tiny.model, altered, pooling=pooling, input_mask=mask),
            embed(tiny.model, tokens, pooling=pooling, input_mask=mask),
            rtol=0,
            atol=0,
        )


def test_none_returns_encode_output(tiny):
    tokens = random_tokens(KEYS, 2)
    mask = random_padding(tokens, ["catalog"])
    rows = embed(tiny.model, tokens, pooling="none", input_mask=mask)
    with torch.no_grad():
        expected = tiny.model.encode(tokens, input_mask=mask)
    assert not rows.is_inference()  # usable where autograd is on (e.g. training a probe)
    torch.testing.assert_close(rows, expected, rtol=0, atol=0)


def test_budget_is_respected(tiny):
    tokens = random_tokens(KEYS, 2)
    assert embed(tiny.model, tokens, pooling="none", num_encoder_tokens=100).shape == (2, 100, 64)


def test_object_without_present_tokens_is_named(tiny):
    tokens = random_tokens(["tok_spectrum_desi"], 3)
    mask = {"tok_spectrum_desi": torch.zeros(3, 273, dtype=torch.bool)}
    mask["tok_spectrum_desi"][2] = True
    with pytest.raises(ValueError, match=r"batch row\(s\) \[2\]"):
        embed(tiny.model, tokens, input_mask=mask)


def test_unknown_pooling(tiny):
    with pytest.raises(ValueError, match="pooling"):
        embed(tiny.model, random_tokens(["tok_z"], 1), pooling="max")


@pytest.mark.parametrize("backend", ["", "sdpa"])
def test_grouped_padded_embeddings_equal_each_object_alone(tiny, monkeypatch, backend):
    """Mask-free grouping gives the same embeddings: a group whose objects lack different tokens (odd lengths),
    embedded under the key-padding mask (CPU default) or by mask-free SDPA per length (``sdpa``, CUDA's default),
    equals each object embedded alone with only its present tokens (no mask at all)."""
    monkeypatch.setenv("AION_FAST_BACKEND", backend)
    model = tiny.model
    keys = ["tok_spectrum_desi", "tok_flux_g", "tok_flux_r", "tok_z"]
    tokens = random_tokens(keys, 5, torch.Generator().manual_seed(7))
    absent = {key: torch.zeros(5, 1, dtype=torch.bool) for key in keys[1:]}
    absent["tok_flux_g"][[1, 3]] = True
    absent["tok_flux_r"][[1, 2]] = True
    absent["tok_z"][4] = True
    grouped = embed(model, tokens, input_mask=absent)
    for row in range(5):
        alone = {key: ids[row : row + 1] for key, ids in tokens.items() if key not in absent or not absent[key][row]}
        torch.testing.assert_close(grouped[row : row + 1], embed(model, alone), rtol=1e-5, atol=1e-5)
