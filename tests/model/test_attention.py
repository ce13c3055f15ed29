"""Attention: SDPA against the reference's explicit masked softmax, the key-padding paths (mask-free SDPA per key
length, flash-attn varlen) against the masked one, and the backends' dispatch."""

from __future__ import annotations

import pytest
import torch

from aion_fast import dispatch
from aion_fast.model import attention
from aion_fast.model.attention import AttentionMask, attend
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


def test_varlen_backend_is_chosen_by_the_dispatcher(monkeypatch):
    """AION_FAST_BACKEND forces the packed-attention backend; unforced on CPU it is SDPA, with flash-attn's reasons."""
    q = torch.randn(10, 3, 8)
    monkeypatch.setenv("AION_FAST_BACKEND", "")
    name, reasons = attention.varlen_backend(q)
    assert name == "sdpa" and any("tensor on cpu" in r for r in reasons) and any("dtype float32" in r for r in reasons)
    monkeypatch.setenv("AION_FAST_BACKEND", "torch,flash")
    with pytest.raises(dispatch.BackendUnavailableError, match="flash backend cannot run varlen_attention"):
        attention.varlen_backend(q)
    monkeypatch.setenv("AION_FAST_BACKEND", "flash,sdpa")
    with pytest.raises(ValueError, match="two attention backends"):
        attention.varlen_backend(q)


def _present_first_padding(lengths: list[int], keys: int) -> torch.Tensor:
    """``(B, keys)`` key padding, True from each sample's length on (present keys first)."""
    return torch.arange(keys)[None, :] >= torch.tensor(lengths)[:, None]


@pytest.mark.parametrize("queries", [1, 29, 37])
@pytest.mark.parametrize("lengths", [[29, 17, 3, 29, 17], [11, 11, 11, 11, 11], [1, 28, 5, 29, 13]])
def test_key_padding_paths_match_masked_attention(monkeypatch, queries, lengths):
    """Mask-free SDPA per key length (forced ``sdpa``; CUDA's default) equals SDPA under the boolean mask (CPU's
    default) and the reference's explicit softmax, for odd lengths, one shared length and queries != keys."""
    batch, heads, keys, dim = len(lengths), 4, 29, 16
    torch.manual_seed(1)
    q = torch.randn(batch, heads, queries, dim)
    k, v = torch.randn(batch, heads, keys, dim), torch.randn(batch, heads, keys, dim)
    padding = _present_first_padding(lengths, keys)
    mask = AttentionMask.from_key_padding(padding)
    assert mask.key_padding is not None and mask.key_padding.lengths.tolist() == lengths
    assert len(mask.key_padding.buckets) == len(set(lengths))
    monkeypatch.setenv("AION_FAST_BACKEND", "")
    assert attention.key_padding_backend(q, mask) == "masked"
    masked = attend(q, k, v, mask)
    monkeypatch.setenv("AION_FAST_BACKEND", "sdpa")
    assert attention.key_padding_backend(q, mask) == "sdpa"
    bucketed = attend(q, k, v, mask)
    torch.testing.assert_close(bucketed, masked, rtol=1e-5, atol=1e-6)
    assert_close_rel(bucketed, _explicit_attention(q, k, v, padding[:, None, :]))


def test_key_padding_mask_falls_back_where_the_lengths_do_not_describe_it():
    none = AttentionMask.from_key_padding(torch.zeros(3, 7, dtype=torch.bool))
    assert none.allowed is None and none.key_padding is None
    holes = torch.zeros(3, 7, dtype=torch.bool)
    holes[0, 2] = True  # a present key after an absent one: not present-first
    assert AttentionMask.from_key_padding(holes).key_padding is None
    empty = _present_first_padding([7, 0, 3], 7)  # a sample without keys: the reference's value mean
    prepared = AttentionMask.from_key_padding(empty)
    assert prepared.key_padding is None and prepared.fully_hidden_rows is not None


def test_key_padding_backend_is_chosen_by_the_dispatcher(monkeypatch):
    """Unforced on CPU the masked kernel runs; ``sdpa`` forces the buckets whatever their number; ``flash`` says why
    it cannot run on a CPU float32 tensor."""
    q = torch.randn(20, 2, 1, 8)
    many = AttentionMask.from_key_padding(_present_first_padding(list(range(1, 21)), 20))
    monkeypatch.setenv("AION_FAST_BACKEND", "")
    assert attention.key_padding_backend(q, many) == "masked"
    monkeypatch.setenv("AION_FAST_BACKEND", "sdpa")
    assert attention.key_padding_backend(q, many) == "sdpa"
    monkeypatch.setenv("AION_FAST_BACKEND", "flash")
    with pytest.raises(dispatch.BackendUnavailableError, match="flash backend cannot run key_padding_attention"):
        attention.key_padding_backend(q, many)
