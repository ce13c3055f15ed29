"""Blocks: norms, MLP sizes, activation checkpointing."""

from __future__ import annotations

import torch

from aion_fast.model import AION
from aion_fast.model.blocks import GatedMlp, LayerNorm
from tests.model.conftest import TINY_CONFIG, random_tokens


def test_bias_free_layernorm_keeps_zero_bias_buffer():
    norm = LayerNorm(8, bias=False)
    assert "bias" in norm.state_dict() and "bias" not in dict(norm.named_parameters())
    assert torch.equal(norm.state_dict()["bias"], torch.zeros(8))


def test_gated_mlp_hidden_width():
    mlp = GatedMlp(768, int(768 * 4.0), torch.nn.SiLU, bias=False)
    assert mlp.fc1.weight.shape == (2048, 768) and mlp.fc3.weight.shape == (2048, 768)
    assert mlp.fc2.weight.shape == (768, 2048) and mlp.fc1.bias is None


def test_activation_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    plain = AION({**TINY_CONFIG, "encoder_depth": 1, "decoder_depth": 1})
    checkpointed = AION({**TINY_CONFIG, "encoder_depth": 1, "decoder_depth": 1, "use_act_checkpoint": True})
    checkpointed.load_state_dict(plain.state_dict())
    tokens = random_tokens(["tok_spectrum_desi", "tok_flux_g"], 2)
    losses = []
    for model in (plain, checkpointed):
        model.train()
        loss = model(tokens, ["tok_z"])["tok_z"].logsumexp(-1).sum()
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1])
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad, msg=name)
