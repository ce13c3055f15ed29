"""Generation draws only ids the target codec decodes: ``tok_z`` has 1025 logits and the Z codec 1024 codes.

The checkpoint here (written by the reference) makes the out-of-range logit, id 1024, the largest for every object:
the decoder norm's bias carries a large constant that only ``to_logits`` row 1024 reads. Without the limit a greedy
or tempered draw picks 1024 and decoding fails ("indices must lie in [0, 1024)").
"""

from __future__ import annotations

import pytest
import torch
from aion import AION as RefAION
from aion import codecs as ref_codecs
from aion import modalities as ref_m

import aion_fast
from aion_fast import dispatch
from aion_fast import modalities as m
from aion_fast.codecs import CodecManager
from aion_fast.generate import roar_generate
from aion_fast.ops.roar import roar_step
from tests.generate.conftest import DOMAINS, flux_tokens
from tests.test_end_to_end import TINY_TRANSFORMER

CODES = 1024
SAMPLERS = [
    {"temperature": 0.0},
    {"temperature": 1.0},
    {"temperature": 1.0, "top_k": 3},
    {"temperature": 0.7, "top_p": 0.9},
    {"temperature": 2.0, "top_k": 1030, "top_p": 0.5},
]


@pytest.fixture(params=["torch", "cpp"])
def backend(request, monkeypatch) -> str:
    if request.param == "cpp" and dispatch.load_extension() is None:
        pytest.skip(f"C++ extension not built: {dispatch.extension_error()}")
    monkeypatch.setenv(dispatch.ENV_VAR, request.param)
    return request.param


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(directory, reference model): flux + Z codecs and a model whose largest tok_z logit is id 1024."""
    torch.manual_seed(21)
    root = tmp_path_factory.mktemp("aion_out_of_range_logit")
    for name, cls in [("FLUX_G", ref_m.LegacySurveyFluxG), ("FLUX_R", ref_m.LegacySurveyFluxR),
                      ("FLUX_I", ref_m.LegacySurveyFluxI), ("FLUX_Z", ref_m.LegacySurveyFluxZ)]:  # fmt: skip
        codec = ref_codecs.LogScalarCodec(name, 1024, 4000)
        codec._quantizer._update_reservoirs(torch.exp(torch.randn(6000)))
        codec.save_pretrained(root, modality=cls)
    ref_codecs.GridScalarCodec("Z", CODES).save_pretrained(root, modality=ref_m.Z)
    model = RefAION({"domains_in": DOMAINS, "domains_out": DOMAINS, **TINY_TRANSFORMER, "norm_bias": True}).eval()
    with torch.no_grad():
        head = model.decoder_embeddings["tok_z"].to_logits.weight  # (1025, D)
        head.mul_(20.0)  # sharp, varied in-range logits
        head[:, 0] = 0.0
        head[CODES, 0] = 1.0
        model.decoder_norm.bias.zero_()
        model.decoder_norm.bias[0] = 100.0  # logit 1024 ~ 100 + O(10); the others are O(10)
    model.save_pretrained(root)
    return root, model


@pytest.fixture(scope="module")
def loaded(checkpoint):
    root, reference = checkpoint
    return aion_fast.AION.from_pretrained(root), reference, CodecManager(repo=root)


def test_the_out_of_range_logit_is_the_largest(loaded):
    model, reference, _ = loaded
    inputs = flux_tokens(6, seed=1)
    with torch.no_grad():
        theirs = reference(inputs, [ref_m.Z])["tok_z"]
        ours = model(inputs, [m.Z])["tok_z"]
    assert ours.shape == (6, 1, CODES + 1)
    assert (theirs.argmax(-1) == CODES).all() and (ours.argmax(-1) == CODES).all()
    assert (ours[..., CODES] - ours[..., :CODES].max(-1).values > 30).all()  # no tempered draw could avoid it
    unlimited = roar_generate(model, inputs, "tok_z", num_samples=4, schedule=[1], temperature=1.0, seed=0)
    assert (unlimited == CODES).all()  # what generation drew before the limit


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()))
def test_generate_draws_only_decodable_ids_on_every_backend(loaded, backend, sampler):
    model, _, codecs = loaded
    inputs = flux_tokens(5, seed=2)
    tokens = roar_generate(model, inputs, "tok_z", num_samples=40, schedule=[1], seed=7, num_codes=CODES, **sampler)
    assert tokens.shape == (5, 40, 1) and int(tokens.min()) >= 0 and int(tokens.max()) < CODES
    with torch.no_grad():
        in_range = model(inputs, [m.Z])["tok_z"][:, 0, :CODES]  # (B, 1024)
    if sampler["temperature"] == 0:
        assert torch.equal(tokens[..., 0], in_range.argmax(-1)[:, None].expand(-1, 40))
    elif sampler.get("top_k") == 3:  # only the 3 largest in-range logits can be drawn
        allowed = in_range.topk(3, dim=-1).indices
        assert (tokens[..., 0][:, :, None] == allowed[:, None, :]).any(-1).all()
    else:
        assert tokens.unique().numel() > 1  # really sampled
    z = aion_fast.generate(model, codecs, inputs=inputs, target=m.Z, num_samples=40, seed=7, **sampler)
    expected = codecs.decode({"tok_z": tokens.reshape(-1)}, m.Z).value.reshape(5, 40)
    assert torch.equal(z.value, expected)


@pytest.mark.parametrize("sampler", SAMPLERS[1:], ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()))
def test_dropping_the_logits_equals_masking_them_before_the_sampler(loaded, backend, sampler):
    """The limit is the same as -inf logits beyond the codebook going into temperature, top-k and top-p."""
    model, _, _ = loaded
    inputs = flux_tokens(4, seed=3)
    with torch.no_grad():
        logits = model(inputs, [m.Z])["tok_z"].float().repeat_interleave(8, dim=0)  # (R, 1, 1025), one row a chain
    rows = logits.shape[0]

    def draw(x: torch.Tensor) -> torch.Tensor:
        tokens = torch.zeros(rows, 1, dtype=torch.int64)
        absent, revealed = torch.ones(rows, 1, dtype=torch.bool), torch.zeros(rows, 1, dtype=torch.bool)
        roar_step(x, torch.zeros(rows, 1, dtype=torch.int64), tokens, absent, revealed,
                  torch.arange(4).repeat_interleave(8), torch.arange(8).repeat(4), seed=11, step=0, next_step=1,
                  next_count=0, **{"top_k": 0, "top_p": 0.0, **sampler})  # fmt: skip
        return tokens

    masked = logits.clone()
    masked[..., CODES:] = float("-inf")
    limited = draw(logits[..., :CODES].contiguous())
    assert torch.equal(limited, draw(masked))
    assert int(limited.max()) < CODES and (draw(logits) == CODES).all()


def test_num_codes_validation(loaded):
    model, _, _ = loaded
    for bad in (0, -3, 1.5, True):
        with pytest.raises(ValueError, match="num_codes"):
            roar_generate(model, flux_tokens(1), "tok_z", num_samples=1, schedule=[1], num_codes=bad)
    larger = roar_generate(model, flux_tokens(2), "tok_z", num_samples=2, schedule=[1], temperature=0.0,
                           num_codes=5000)  # fmt: skip
    assert (larger == CODES).all()  # a codebook larger than the vocabulary limits nothing
