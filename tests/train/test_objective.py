"""The masked-modeling objective: target ids aligned with the decoder queries, the inference decoder computation,
the packed (varlen) path equal to the padded one, the loss, and input checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from aion_fast.model import AION, architecture
from aion_fast.model.blocks import AttentionMask, PackedLayout, SelfAttention, sdpa_varlen_attention, varlen_attention
from aion_fast.train.masking import sample_masks
from aion_fast.train.objective import MaskedModelingObjective
from tests.train.training_helpers import random_batch

KEYS = ["tok_image", "tok_spectrum_desi", "tok_xp_bp", "tok_flux_g", "tok_flux_r", "tok_z"]


def _model(**overrides) -> AION:
    torch.manual_seed(0)
    config = {"dim": 64, "encoder_depth": 2, "decoder_depth": 2, "num_heads": 4, **overrides}
    return AION(architecture(KEYS, KEYS, **config)).eval()


@pytest.fixture(scope="module")
def model() -> AION:
    return _model()


def _masks(present, seed, budgets=(64, 32)):
    return sample_masks(present, *budgets, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("batch", [1, 3, 7])
def test_target_ids_are_the_tokens_at_target_positions(model, batch):
    tokens, present = random_batch(KEYS, batch, seed=batch)
    input_mask, target_mask = _masks(present, seed=batch)
    prediction = model.predict_masked(tokens, input_mask, target_mask, 64, 32)
    for key in KEYS:
        # Row-major: object by object, positions increasing; the budget keeps every target sample_masks drew.
        torch.testing.assert_close(prediction.targets[key], tokens[key][~target_mask[key]], rtol=0, atol=0)
        assert prediction.logits[key].shape == (
            int((~target_mask[key]).sum()),
            model.decoder_embeddings[key].spec.vocab_size,
        )


def test_each_object_gets_what_inference_computes_on_its_own_queries(model):
    """Padding rows of the training batch do not leak into the decoder's uniform self-attention."""
    tokens, present = random_batch(KEYS, 5, seed=11)
    input_mask, target_mask = _masks(present, seed=11)
    counts = torch.stack([(~m).sum(dim=1) for m in target_mask.values()]).sum(dim=0)
    assert counts.min() < counts.max()  # rows of different lengths: the batch is padded
    with torch.no_grad():
        prediction = model.predict_masked(tokens, input_mask, target_mask, 64, 32)
        offsets = {key: 0 for key in KEYS}
        for row in range(5):
            one = slice(row, row + 1)
            encoder_tokens, encoder_emb, encoder_mask, _ = model.embed_inputs(
                {k: tokens[k][one] for k in KEYS}, {k: input_mask[k][one] for k in KEYS}, 64
            )
            context = model.encode_embeddings(encoder_tokens, encoder_emb, encoder_mask)
            queries, query_emb, decoder_mask, _, attention, mod_mask = model.embed_targets(
                {k: target_mask[k][one] for k in KEYS}, int(counts[row])
            )
            assert not decoder_mask.any()  # one object: no padding, the reference's all-hidden mask
            hidden = model.decode_embeddings(context, encoder_mask, queries, query_emb, attention)[0]
            for key in KEYS:
                rows = mod_mask[0] == model.decoder_embeddings[key].spec.id
                expected = model.decoder_embeddings[key](hidden[rows])
                got = prediction.logits[key][offsets[key] : offsets[key] + expected.shape[0]]
                torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
                offsets[key] += expected.shape[0]


def test_single_target_query_matches_forward(model):
    """Asking for tok_z alone: the logits are forward()'s for tok_z given the same inputs."""
    tokens, present = random_batch(KEYS, 4, seed=3)
    input_mask = {k: ~present[k] for k in KEYS if k != "tok_z"}
    target_mask = {k: torch.ones_like(present[k]) for k in KEYS}
    target_mask["tok_z"] = torch.zeros_like(present["tok_z"])
    tokens_in = {k: tokens[k] for k in input_mask}
    with torch.no_grad():
        prediction = model.predict_masked(tokens, input_mask, target_mask)
        expected = model(tokens_in, "tok_z", input_mask=input_mask)["tok_z"][:, 0]
    torch.testing.assert_close(prediction.logits["tok_z"], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("register_tokens", [0, 2])
def test_packed_path_equals_padded_path(register_tokens):
    model = _model(num_register_tokens=register_tokens)
    tokens, present = random_batch(KEYS, 6, seed=5, keep=0.5)
    input_mask, target_mask = _masks(present, seed=5)
    padded = model.predict_masked(tokens, input_mask, target_mask, 64, 32, packed=False)
    packed = model.predict_masked(tokens, input_mask, target_mask, 64, 32, packed=True)
    loss_padded = sum(F.cross_entropy(padded.logits[k], padded.targets[k], reduction="sum") for k in KEYS)
    loss_packed = sum(F.cross_entropy(packed.logits[k], packed.targets[k], reduction="sum") for k in KEYS)
    for key in KEYS:
        torch.testing.assert_close(packed.targets[key], padded.targets[key], rtol=0, atol=0)
        torch.testing.assert_close(packed.logits[key], padded.logits[key], rtol=1e-5, atol=1e-5)
    grads_padded = torch.autograd.grad(loss_padded, list(model.parameters()), allow_unused=True)
    grads_packed = torch.autograd.grad(loss_packed, list(model.parameters()), allow_unused=True)
    for (name, _), a, b in zip(model.named_parameters(), grads_padded, grads_packed):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)


def test_packed_decoder_refuses_causal_mask():
    model = _model(decoder_causal_mask=True)
    tokens, present = random_batch(KEYS, 2, seed=0)
    input_mask, target_mask = _masks(present, seed=0)
    with pytest.raises(ValueError, match="non-causal"):
        model.predict_masked(tokens, input_mask, target_mask, packed=True)


@pytest.mark.parametrize("max_block_elements", [1 << 24, 0])  # one block-diagonal SDPA call / re-padded SDPA
def test_sdpa_varlen_attention_equals_per_sequence_attention(max_block_elements):
    generator = torch.Generator().manual_seed(0)
    lengths_q, lengths_k = torch.tensor([3, 1, 7, 0, 5]), torch.tensor([4, 6, 2, 3, 1])
    layout = PackedLayout.from_lengths(lengths_q, lengths_k)
    heads, dim = 3, 8
    q = torch.randn(int(lengths_q.sum()), heads, dim, generator=generator)
    k = torch.randn(int(lengths_k.sum()), heads, dim, generator=generator)
    v = torch.randn(int(lengths_k.sum()), heads, dim, generator=generator)
    out = sdpa_varlen_attention(q, k, v, layout, max_block_elements=max_block_elements)
    cq, ck = layout.cu_seqlens_q.tolist(), layout.cu_seqlens_k.tolist()
    for b in range(5):
        qs, ks = q[cq[b] : cq[b + 1]], k[ck[b] : ck[b + 1]]
        expected = F.scaled_dot_product_attention(
            qs.transpose(0, 1), ks.transpose(0, 1), v[ck[b] : ck[b + 1]].transpose(0, 1)
        ).transpose(0, 1)
        torch.testing.assert_close(out[cq[b] : cq[b + 1]], expected, rtol=1e-6, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="flash-attn varlen needs a CUDA device")
def test_flash_varlen_equals_sdpa_fallback():
    pytest.importorskip("flash_attn", reason="flash-attn is not installed")
    generator = torch.Generator(device="cuda").manual_seed(0)
    lengths = torch.tensor([17, 1, 256, 100], device="cuda")
    layout = PackedLayout.from_lengths(lengths)
    q, k, v = (torch.randn(int(lengths.sum()), 12, 64, device="cuda", generator=generator) for _ in range(3))
    reference = sdpa_varlen_attention(q, k, v, layout)  # fp32
    flash = varlen_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), layout).float()
    bf16_sdpa = sdpa_varlen_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), layout).float()
    # flash-attn's bf16 error is at most twice that of bf16 SDPA, both against fp32.
    assert (flash - reference).abs().max() <= 2 * (bf16_sdpa - reference).abs().max() + 1e-3


def test_uniform_attention_averages_the_selected_keys_only():
    attention = SelfAttention(16, 2, qkv_bias=True, proj_bias=True, qk_norm=False, norm_bias=True)
    x = torch.randn(3, 5, 16)
    keys = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    out = attention(x, AttentionMask(uniform=True, uniform_keys=keys))
    for row in range(3):
        selected = x[row : row + 1, keys[row]]
        expected = attention(selected, AttentionMask(uniform=True))[0, 0]
        torch.testing.assert_close(out[row], expected.expand(5, -1), rtol=1e-6, atol=1e-6)


def test_loss_is_the_sum_of_target_cross_entropies(model):
    objective = MaskedModelingObjective(model, 64, 32, attention="padded")
    tokens, present = random_batch(KEYS, 4, seed=8)
    input_mask, target_mask = _masks(present, seed=8)
    out = objective(tokens, input_mask, target_mask)
    prediction = model.predict_masked(tokens, input_mask, target_mask, 64, 32)
    expected = [F.cross_entropy(prediction.logits[k], prediction.targets[k], reduction="sum") for k in KEYS]
    torch.testing.assert_close(out["key_loss_sum"], torch.stack(expected).detach(), rtol=1e-5, atol=1e-5)
    assert int(out["num_targets"]) == sum(int((~m).sum()) for m in target_mask.values())
    assert out["key_count"].tolist() == [int((~target_mask[k]).sum()) for k in KEYS]
    out["loss_sum"].backward()
    # Every head takes part, including those without a target in this batch (zero gradient, not None).
    for key in KEYS:
        assert model.decoder_embeddings[key].to_logits.weight.grad is not None
    model.zero_grad(set_to_none=True)


def test_missing_modalities_are_treated_as_absent(model):
    objective = MaskedModelingObjective(model, 64, 32, attention="padded")
    tokens, present = random_batch(["tok_image", "tok_flux_g"], 3, seed=2)
    input_mask, target_mask = _masks(present, seed=2)
    out = objective(tokens, input_mask, target_mask)
    assert int(out["key_count"][KEYS.index("tok_spectrum_desi")]) == 0
    assert torch.isfinite(out["loss_sum"])


def test_bad_inputs_raise_clear_errors(model):
    objective = MaskedModelingObjective(model, 64, 32)
    tokens, present = random_batch(KEYS, 2, seed=4)
    input_mask, target_mask = _masks(present, seed=4)
    bad = dict(input_mask, tok_image=input_mask["tok_image"].long())
    with pytest.raises(ValueError, match=r"input_mask\['tok_image'\] must be a bool tensor"):
        objective(tokens, bad, target_mask)
    no_input = {k: torch.ones_like(m) for k, m in input_mask.items()}
    with pytest.raises(ValueError, match="targets but no input"):
        objective(tokens, no_input, target_mask)
    with pytest.raises(ValueError, match="input_budget"):
        MaskedModelingObjective(model, 0, 32)
    with pytest.raises(ValueError, match="attention"):
        MaskedModelingObjective(model, 64, 32, attention="ring")
    with pytest.raises(ValueError, match="tokens has no such key"):
        model.predict_masked({"tok_image": tokens["tok_image"]}, {"tok_image": input_mask["tok_image"]},
                             {"tok_z": target_mask["tok_z"]})  # fmt: skip


def test_caller_tensors_are_not_modified(model):
    tokens, present = random_batch(KEYS, 3, seed=9)
    input_mask, target_mask = _masks(present, seed=9)
    copies = [{k: v.clone() for k, v in d.items()} for d in (tokens, input_mask, target_mask)]
    MaskedModelingObjective(model, 64, 32)(tokens, input_mask, target_mask)
    for original, copy in zip((tokens, input_mask, target_mask), copies):
        for key in original:
            assert torch.equal(original[key], copy[key])
