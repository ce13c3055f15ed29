"""AION-1-B sized transformer (dim 768, 12+12 blocks, 12 heads, SwiGLU, QK-norm, no bias) against the reference."""

from __future__ import annotations

import pytest
import torch

from aion_fast.model import AION, architecture
from tests.model.conftest import random_padding, random_tokens, total_tokens
from tests.utils import assert_close_rel

BASE_CONFIG = architecture(
    ["tok_image", "tok_spectrum_desi", "tok_flux_g", "tok_flux_r", "tok_z"], ["tok_z", "tok_image"]
)


@pytest.mark.slow
def test_base_size_encode_and_redshift_logits_match_reference(tmp_path):
    aion = pytest.importorskip("aion")
    from aion.modalities import Z

    torch.manual_seed(7)
    reference = aion.AION(BASE_CONFIG).eval()
    reference.save_pretrained(tmp_path)
    model = AION.from_pretrained(tmp_path)
    tokens = random_tokens(BASE_CONFIG["domains_in"], 2)
    mask = random_padding(tokens, ["tok_spectrum_desi"], fraction=0.2)
    with torch.inference_mode():
        expected = reference.encode(tokens, input_mask=mask, num_encoder_tokens=total_tokens(tokens))
        actual = model.encode(tokens, input_mask=mask)
        assert actual.shape == (2, 576 + 273 + 3, 768)
        assert_close_rel(actual, expected, what="base encode")
        assert_close_rel(model(tokens, ["tok_z"], mask)["tok_z"], reference(tokens, [Z], mask)["tok_z"], what="tok_z")
