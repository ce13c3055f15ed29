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
