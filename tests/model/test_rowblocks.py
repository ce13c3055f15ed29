"""CPU row blocks of the encoder block: same values as the whole-batch forward, chosen by the dispatcher."""

from __future__ import annotations

import pytest
import torch

from aion_fast import dispatch
from aion_fast.model import blocks, rowblocks
from aion_fast.model.attention import AttentionMask


@pytest.mark.parametrize("gated, qk_norm, bias", [(True, True, False), (False, False, True)])
@pytest.mark.parametrize("hide", ["none", "padding", "fully_hidden_row"])
def test_cpu_row_blocks_equal_whole_batch(monkeypatch, gated, qk_norm, bias, hide):
    """The CPU inference path in row blocks gives the whole-batch forward's values, for a row count that is not a
    multiple of the block and blocks that straddle samples. Same operations per row; BLAS may pick another kernel
    for another row count, so fp32 rounding is allowed (bit-equal on the CI machine)."""

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
        assert rowblocks.use_row_blocks(block, x, mask)
        got = block(x, mask)
        expected = block._forward(x, mask)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    with torch.enable_grad():  # training keeps the whole-batch path (autograd through it)
        assert not rowblocks.use_row_blocks(block, x, mask)


def test_block_path_is_chosen_by_the_dispatcher(monkeypatch):
    """AION_FAST_BACKEND forces the encoder-block path (``rows``/``plain``)."""

    options = blocks.BlockOptions(
        dim=24, num_heads=3, mlp_ratio=4.0, qkv_bias=False, proj_bias=False, mlp_bias=False, norm_bias=False,
        gated_mlp=True, qk_norm=True, act_layer=torch.nn.SiLU,
    )  # fmt: skip
    block = blocks.EncoderBlock(options).eval()
    x, mask = torch.randn(2, 20, 24), AttentionMask()
    monkeypatch.setenv("AION_FAST_CPU_ROW_BLOCK", "8")
    with torch.inference_mode():
        assert rowblocks.use_row_blocks(block, x, mask)
        monkeypatch.setenv("AION_FAST_BACKEND", "plain")
        assert not rowblocks.use_row_blocks(block, x, mask)
        monkeypatch.setenv("AION_FAST_BACKEND", "rows")
        assert rowblocks.use_row_blocks(block, x, mask)
        monkeypatch.setenv("AION_FAST_CPU_ROW_BLOCK", "0")
        with pytest.raises(dispatch.BackendUnavailableError, match="fewer rows than AION_FAST_CPU_ROW_BLOCK"):
            rowblocks.use_row_blocks(block, x, mask)
    with pytest.raises(dispatch.BackendUnavailableError, match="autograd is on"):
        rowblocks.use_row_blocks(block, x, mask)
    monkeypatch.setenv("AION_FAST_CPU_ROW_BLOCK", "-3")
    with pytest.raises(ValueError, match="non-negative integer"):
        rowblocks.use_row_blocks(block, x, mask)
