"""Blocks: SDPA attention against the reference's explicit masked softmax, norms, MLP sizes, checkpointing."""

from __future__ import annotations

import pytest
import torch

from aion_fast.model import AION
from aion_fast.model.blocks import AttentionMask, GatedMlp, LayerNorm, attend
from tests.model.conftest import TINY_CONFIG, random_tokens
from tests.utils import assert_close_rel


def _explicit_attention(q, k, v, hidden):
    """The reference formula: scores filled with -finfo.max where hidden, softmax, weighted values."""
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    if hidden is not None:
        scores = scores.masked_fill(hidden[:, None], -torch.finfo(scores.dtype).max)
    return scores.softmax(dim=-1) @ v


@pytest.mark.parametrize("queries", [1, 37])
@pytest.mark.parametrize("case", ["none", "key_padding", "some_rows_fully_hidden", "all_hidden", "full_matrix"])
def test_attend_matches_explicit_softmax(case, queries):
    batch, heads, keys, dim = 3, 4, 29, 16
    q = torch.randn(batch, heads, queries, dim)
    k = torch.randn(batch, heads, keys, dim)
    v = torch.randn(batch, heads, keys, dim)
    if case == "none":
        hidden = None
    elif case == "key_padding":
        hidden = torch.rand(batch, 1, keys) < 0.3
    elif case == "some_rows_fully_hidden":
        hidden = torch.rand(batch, 1, keys) < 0.3
        hidden[1] = True
    elif case == "all_hidden":
        hidden = torch.ones(batch, queries, keys, dtype=torch.bool)
    else:
        hidden = torch.rand(batch, queries, keys) < 0.5
        hidden[0, 0] = True
    out = attend(q, k, v, AttentionMask.from_hidden(hidden))
    assert torch.isfinite(out).all()
    assert_close_rel(out, _explicit_attention(q, k, v, hidden))


def test_mask_without_hidden_keys_is_dropped():
    prepared = AttentionMask.from_hidden(torch.zeros(2, 1, 5, dtype=torch.bool))
    assert prepared.allowed is None and prepared.fully_hidden_rows is None and not prepared.uniform


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


@pytest.mark.parametrize("gated, qk_norm, bias", [(True, True, False), (False, False, True)])
@pytest.mark.parametrize("hide", ["none", "padding", "fully_hidden_row"])
def test_cpu_row_blocks_equal_whole_batch(monkeypatch, gated, qk_norm, bias, hide):
    """The CPU inference path in row blocks gives the whole-batch forward's values, for a row count that is not a
    multiple of the block and blocks that straddle samples. Same operations per row; BLAS may pick another kernel
    for another row count, so fp32 rounding is allowed (bit-equal on the CI machine)."""
    from aion_fast.model import blocks

    options = blocks.BlockOptions(
        dim=24, num_heads=3, mlp_ratio=4.0, qkv_bias=bias, proj_bias=bias, mlp_bias=bias, norm_bias=bias,
        gated_mlp=gated, qk_norm=qk_norm, act_layer=torch.nn.SiLU,
    )  # fmt: skip
    torch.manual_seed(0)
    block = blocks.EncoderBlock(options).eval()
    x = torch.randn(3, 37, 24)
    hidden = None
    if hide != "none":
        hidden = torch.zeros(3, 1, 37, dtype=torch.bool)
        hidden[0, :, 30:] = True  # key padding of the first sample
        if hide == "fully_hidden_row":
            hidden = hidden.expand(3, 37, 37).clone()
            hidden[1, 5] = True  # one query of the second sample sees no key
    mask = AttentionMask.from_hidden(hidden)
    monkeypatch.setenv("AION_FAST_CPU_ROW_BLOCK", "16")
    with torch.inference_mode():
        assert block._row_blocks_apply(x, mask)
        got = block(x, mask)
        expected = block._forward(x, mask)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    with torch.enable_grad():  # training keeps the whole-batch path (autograd through it)
        assert not block._row_blocks_apply(x, mask)


def test_block_and_attention_paths_are_chosen_by_the_dispatcher(monkeypatch):
    """AION_FAST_BACKEND forces the encoder-block path (``rows``/``plain``) and the packed-attention backend."""
    from aion_fast import _backend
    from aion_fast.model import blocks

    options = blocks.BlockOptions(
        dim=24, num_heads=3, mlp_ratio=4.0, qkv_bias=False, proj_bias=False, mlp_bias=False, norm_bias=False,
        gated_mlp=True, qk_norm=True, act_layer=torch.nn.SiLU,
    )  # fmt: skip
    block = blocks.EncoderBlock(options).eval()
    x, mask = torch.randn(2, 20, 24), AttentionMask()
    monkeypatch.setenv("AION_FAST_CPU_ROW_BLOCK", "8")
    with torch.inference_mode():
        assert block._row_blocks_apply(x, mask)
        monkeypatch.setenv("AION_FAST_BACKEND", "plain")
        assert not block._row_blocks_apply(x, mask)
        monkeypatch.setenv("AION_FAST_BACKEND", "rows")
        assert block._row_blocks_apply(x, mask)
        monkeypatch.setenv("AION_FAST_CPU_ROW_BLOCK", "0")
        with pytest.raises(_backend.BackendUnavailableError, match="fewer rows than AION_FAST_CPU_ROW_BLOCK"):
            block._row_blocks_apply(x, mask)
    with pytest.raises(_backend.BackendUnavailableError, match="autograd is on"):
        block._row_blocks_apply(x, mask)
    monkeypatch.setenv("AION_FAST_CPU_ROW_BLOCK", "-3")
    with pytest.raises(ValueError, match="non-negative integer"):
        block._row_blocks_apply(x, mask)
    q = torch.randn(10, 3, 8)
    monkeypatch.setenv("AION_FAST_BACKEND", "")
    name, reasons = blocks.varlen_backend(q)
    assert name == "sdpa" and any("tensor on cpu" in r for r in reasons) and any("dtype float32" in r for r in reasons)
    monkeypatch.setenv("AION_FAST_BACKEND", "torch,flash")
    with pytest.raises(_backend.BackendUnavailableError, match="flash backend cannot run varlen_attention"):
        blocks.varlen_backend(q)
    monkeypatch.setenv("AION_FAST_BACKEND", "flash,sdpa")
    with pytest.raises(ValueError, match="two attention backends"):
        blocks.varlen_backend(q)
