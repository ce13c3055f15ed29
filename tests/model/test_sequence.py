"""The model's public stages: TokenSequence, embed_input_sequence / embed_target_sequence, encode_sequence, and the
clients (generation, training, embedding) reaching the model through public names only."""

from __future__ import annotations

import ast
from pathlib import Path

import torch

from aion_fast.model import TokenSequence
from tests.model.conftest import random_padding, random_tokens

KEYS = ["tok_spectrum_desi", "tok_flux_g", "catalog"]


def test_sequence_is_what_embed_inputs_returns(tiny):
    model = tiny.model
    tokens = random_tokens(KEYS, 3, torch.Generator().manual_seed(2))
    torch.manual_seed(3)
    mask = random_padding(tokens, ["tok_spectrum_desi", "catalog"])
    seq = model.embed_input_sequence(tokens, mask, num_encoder_tokens=200)
    assert isinstance(seq, TokenSequence) and seq.padding is not None
    x, emb, encoder_mask, mod_mask = model.embed_inputs(tokens, mask, num_encoder_tokens=200)
    assert torch.equal(seq.tokens, x) and torch.equal(seq.emb, emb)
    assert torch.equal(seq.full_padding()[:, None], encoder_mask) and torch.equal(seq.mod_mask, mod_mask)
    context, key_mask = model.encode_sequence(seq)
    torch.testing.assert_close(context, model.encode(tokens, mask, num_encoder_tokens=200), rtol=0, atol=0)
    assert torch.equal(key_mask.allowed[:, 0, 0], ~seq.padding)


def test_target_sequence_is_what_embed_targets_returns(tiny):
    model = tiny.model
    target_mask = {"tok_z": torch.tensor([[False], [True]]), "tok_image": torch.rand(2, 576) < 0.5}
    seq = model.embed_target_sequence(target_mask, num_decoder_tokens=300)
    tokens, emb, decoder_mask, _, _, mod_mask = model.embed_targets(target_mask, num_decoder_tokens=300)
    assert torch.equal(seq.tokens, tokens) and torch.equal(seq.emb, emb)
    assert torch.equal(seq.full_padding()[:, None], decoder_mask) and torch.equal(seq.mod_mask, mod_mask)
    assert model.output_spec("tok_z").num_tokens == 1 and model.input_spec("tok_flux_g").vocab_size > 0


def test_forward_logits_of_every_row_needs_no_modality_mask(tiny):
    model = tiny.model
    y = torch.randn(2, 5, model.config.dim)
    logits = model.forward_logits(y, {"tok_z": None}, None, return_all_logits=True)["tok_z"]
    torch.testing.assert_close(logits, model.decoder_embeddings["tok_z"](y), rtol=0, atol=0)


def test_clients_use_no_private_model_attribute():
    """Generation, training and embedding read no underscore attribute of a model (``model._x``, ``self.model._x``)."""
    root = Path(__file__).resolve().parents[2] / "aion_fast"
    files = [*(root / "generate").glob("*.py"), root / "train" / "objective.py", root / "train" / "loop.py",
             root / "embedding.py"]  # fmt: skip
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") or node.attr.startswith("__"):
                continue
            owner = node.value
            name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
            if name == "model":
                found.append(f"{path.name}:{node.lineno} model.{node.attr}")
    assert not found, found
