"""Invalid inputs and configs raise ValueError naming the token key and the fix (one test per case)."""

from __future__ import annotations

import pytest
import torch

from aion_fast.model import AION
from tests.model.conftest import TINY_CONFIG, random_tokens


@pytest.fixture(scope="module")
def model(tiny):
    return tiny.model


def _encode(model, tokens, mask=None, **kwargs):
    with torch.no_grad():
        return model.encode(tokens, input_mask=mask, **kwargs)


def test_unknown_token_key(model):
    with pytest.raises(ValueError, match="unknown token key 'tok_magic'"):
        _encode(model, {"tok_magic": torch.zeros(2, 1, dtype=torch.long)})


def test_key_not_in_domains_in(model):
    with pytest.raises(ValueError, match="'tok_segmap' is not an input of this model"):
        _encode(model, {"tok_segmap": torch.zeros(2, 144, dtype=torch.long)})


def test_wrong_token_count(model):
    with pytest.raises(ValueError, match="tok_image must have exactly 576 tokens per object"):
        _encode(model, {"tok_image": torch.zeros(2, 575, dtype=torch.long)})


@pytest.mark.parametrize("bad_id", [4375, -1])
def test_token_id_out_of_range(model, bad_id):
    tokens = random_tokens(["tok_image"], 2)
    tokens["tok_image"][1, 7] = bad_id
    with pytest.raises(ValueError, match=r"'tok_image'.*outside \[0, 4375\)"):
        _encode(model, tokens)


def test_out_of_range_id_at_masked_position_is_accepted(model):
    tokens = random_tokens(["catalog"], 2)
    tokens["catalog"][:, -3:] = 9999
    mask = {"catalog": torch.zeros(2, 20, dtype=torch.bool)}
    mask["catalog"][:, -3:] = True
    assert torch.isfinite(_encode(model, tokens, mask)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool])
def test_non_integer_dtype(model, dtype):
    with pytest.raises(ValueError, match=f"'tok_z'.*dtype {dtype}"):
        _encode(model, {"tok_z": torch.zeros(2, 1, dtype=dtype)})


def test_non_tensor_tokens(model):
    with pytest.raises(ValueError, match="torch.as_tensor"):
        _encode(model, {"tok_z": [1, 2]})


def test_empty_batch(model):
    with pytest.raises(ValueError, match=r"'tok_z'.*empty batch"):
        _encode(model, {"tok_z": torch.zeros(0, dtype=torch.long)})


def test_empty_input_dict(model):
    with pytest.raises(ValueError, match="non-empty dict"):
        _encode(model, {})


def test_batch_sizes_differ(model):
    tokens = {"tok_z": torch.zeros(2, dtype=torch.long), "tok_flux_g": torch.zeros(3, dtype=torch.long)}
    with pytest.raises(ValueError, match=r"same batch size.*'tok_z': 2.*'tok_flux_g': 3"):
        _encode(model, tokens)


def test_wrong_rank(model):
    with pytest.raises(ValueError, match=r"'tok_image'.*reshape\(B, -1\)"):
        _encode(model, {"tok_image": torch.zeros(2, 24, 24, dtype=torch.long)})


def test_mask_shape_mismatch(model):
    tokens = random_tokens(["tok_spectrum_desi"], 2)
    with pytest.raises(ValueError, match=r"input_mask\['tok_spectrum_desi'\] has shape \(2, 272\)"):
        _encode(model, tokens, {"tok_spectrum_desi": torch.zeros(2, 272, dtype=torch.bool)})


def test_mask_not_bool(model):
    tokens = random_tokens(["tok_spectrum_desi"], 2)
    with pytest.raises(ValueError, match="must be a bool tensor"):
        _encode(model, tokens, {"tok_spectrum_desi": torch.zeros(2, 273, dtype=torch.long)})


def test_mask_for_absent_key(model):
    tokens = random_tokens(["tok_z"], 2)
    with pytest.raises(ValueError, match=r"\['tok_image'\] that are not in input_dict"):
        _encode(model, tokens, {"tok_image": torch.zeros(2, 576, dtype=torch.bool)})


def test_catalog_too_long(model):
    with pytest.raises(ValueError, match="catalog sequences must have between 1 and 512"):
        _encode(model, {"catalog": torch.ones(2, 513, dtype=torch.long)})


def test_non_positive_budget(model):
    with pytest.raises(ValueError, match="positive integer"):
        _encode(model, random_tokens(["tok_z"], 2), num_encoder_tokens=0)


def test_target_not_in_domains_out(model):
    with pytest.raises(ValueError, match="'tok_xp_bp' is not an output of this model"):
        model(random_tokens(["tok_z"], 2), target_modality=["tok_xp_bp"])


def test_sequence_target_in_forward(model):
    with pytest.raises(ValueError, match="'catalog' is a sequence modality"):
        model(random_tokens(["tok_z"], 2), target_modality=["catalog"])


def test_unknown_config_key():
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['depth', 'norm_layer'\]"):
        AION({**TINY_CONFIG, "depth": 3, "norm_layer": "LayerNorm"})


def test_missing_domains_in_config():
    config = dict(TINY_CONFIG)
    del config["domains_out"]
    with pytest.raises(ValueError, match="domains_out"):
        AION(config)


def test_unknown_token_key_in_config():
    with pytest.raises(ValueError, match=r"\['tok_nope'\]"):
        AION({**TINY_CONFIG, "domains_in": ["tok_z", "tok_nope"]})


def test_bad_activation_name():
    with pytest.raises(ValueError, match="'Swish'"):
        AION({**TINY_CONFIG, "act_layer": "Swish"})


def test_heads_must_divide_dim():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        AION({**TINY_CONFIG, "num_heads": 5})
