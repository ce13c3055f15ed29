"""Checkpoint interchange with the reference: tied tensors dropped by safetensors, both directions, clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from aion_fast.hub import CheckpointNotFoundError
from aion_fast.model import AION
from tests.model.conftest import random_padding, random_tokens, total_tokens
from tests.utils import assert_close_rel

aion = pytest.importorskip("aion")

TIED_KEYS = ("tok_image", "tok_z", "tok_flux_g", "catalog")


def _stored_names(directory):
    with safe_open(str(directory / "model.safetensors"), framework="pt") as weights:
        return set(weights.keys()), weights.metadata() or {}


def test_reference_checkpoint_drops_tied_tensors_and_loads_retied(tiny):
    names, metadata = _stored_names(tiny.directory)
    for key in TIED_KEYS:
        assert f"encoder_embeddings.{key}.mod_emb" not in names
        assert metadata[f"encoder_embeddings.{key}.mod_emb"] == f"decoder_embeddings.{key}.mod_emb"
        encoder_emb = tiny.model.encoder_embeddings[key].mod_emb
        assert encoder_emb is tiny.model.decoder_embeddings[key].mod_emb
        assert torch.equal(encoder_emb, tiny.reference.encoder_embeddings[key].mod_emb)


def test_loads_when_the_other_twin_was_dropped_without_metadata(tiny, tmp_path):
    tensors = load_file(str(tiny.directory / "model.safetensors"))
    for key in TIED_KEYS:
        tensors[f"encoder_embeddings.{key}.mod_emb"] = tensors.pop(f"decoder_embeddings.{key}.mod_emb")
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((tiny.directory / "config.json").read_text())
    model = AION.from_pretrained(tmp_path)
    for name, tensor in tiny.reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    assert model.encoder_embeddings["tok_z"].mod_emb is model.decoder_embeddings["tok_z"].mod_emb


def test_saved_checkpoint_loads_into_reference_with_identical_outputs(tiny, tmp_path):
    tiny.model.save_pretrained(tmp_path)
    names, metadata = _stored_names(tmp_path)
    for key in TIED_KEYS:
        assert (f"encoder_embeddings.{key}.mod_emb" in names) != (f"decoder_embeddings.{key}.mod_emb" in names)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["domains_in"] == list(tiny.model.config.domains_in) and config["dim"] == 64

    reference = aion.AION.from_pretrained(str(tmp_path)).eval()
    for name, tensor in tiny.reference.state_dict().items():
        assert torch.equal(reference.state_dict()[name], tensor), name
    tokens = random_tokens(["tok_image", "tok_spectrum_desi", "tok_z", "catalog"], 2)
    mask = random_padding(tokens, ["tok_spectrum_desi", "catalog"])
    with torch.no_grad():
        expected = reference.encode(tokens, input_mask=mask, num_encoder_tokens=total_tokens(tokens))
        assert_close_rel(tiny.model.encode(tokens, input_mask=mask), expected)
        from aion.modalities import Z

        assert_close_rel(tiny.model(tokens, ["tok_z"], mask)["tok_z"], reference(tokens, [Z], mask)["tok_z"])


def test_round_trip_keeps_ties_and_values(tiny, tmp_path):
    tiny.model.save_pretrained(tmp_path / "copy")
    again = AION.from_pretrained(tmp_path / "copy")
    assert again.config == tiny.model.config
    for name, tensor in tiny.model.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name
    assert again.encoder_embeddings["catalog"].mod_emb is again.decoder_embeddings["catalog"].mod_emb
    assert not again.training


def test_from_pretrained_casts_dtype(tiny):
    model = AION.from_pretrained(tiny.directory, device="cpu", dtype=torch.bfloat16)
    assert model.mask_token.dtype == torch.bfloat16
    assert model.encoder_embeddings["tok_image"].pos_emb.dtype == torch.bfloat16
    assert model.encoder_embeddings["tok_z"].mod_emb is model.decoder_embeddings["tok_z"].mod_emb


def _copy_with(tiny, tmp_path, edit):
    tensors = load_file(str(tiny.directory / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((tiny.directory / "config.json").read_text())
    return tmp_path


def test_missing_tensor_is_listed(tiny, tmp_path):
    directory = _copy_with(tiny, tmp_path, lambda t: t.pop("encoder.1.mlp.fc3.weight"))
    with pytest.raises(ValueError, match=r"missing \['encoder\.1\.mlp\.fc3\.weight'\]"):
        AION.from_pretrained(directory)


def test_missing_tied_pair_is_listed(tiny, tmp_path):
    directory = _copy_with(tiny, tmp_path, lambda t: t.pop("decoder_embeddings.tok_z.mod_emb"))
    with pytest.raises(ValueError, match="decoder_embeddings.tok_z.mod_emb"):
        AION.from_pretrained(directory)


def test_unexpected_tensor_is_listed(tiny, tmp_path):
    directory = _copy_with(tiny, tmp_path, lambda t: t.update({"encoder.9.attn.qkv.weight": torch.zeros(3, 3)}))
    with pytest.raises(ValueError, match=r"unexpected \['encoder\.9\.attn\.qkv\.weight'\]"):
        AION.from_pretrained(directory)


def test_shape_mismatch_is_listed(tiny, tmp_path):
    directory = _copy_with(tiny, tmp_path, lambda t: t.update({"mask_token": torch.zeros(1, 1, 32)}))
    with pytest.raises(ValueError, match="mask_token"):
        AION.from_pretrained(directory)


def test_missing_weights_file_explains_layout(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointNotFoundError, match="model.safetensors"):
        AION.from_pretrained(tmp_path)


def test_unreachable_hub_explains_local_layout(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointNotFoundError, match=r"local directory.*config\.json \+ model\.safetensors"):
        AION.from_pretrained("polymathic-ai/no-such-aion-checkpoint")


def test_encoder_only_load_reads_no_decoder_and_embeds_like_the_full_model(tiny, tmp_path):
    """encoder_only=True needs only the encoder side of the file (here the decoder blocks, norm and heads are cut
    out of it; the reference stores some tied modality embeddings under their decoder name only) and gives the full
    model's encoder outputs."""
    tensors = load_file(str(tiny.directory / "model.safetensors"))
    kept = {
        name: tensor
        for name, tensor in tensors.items()
        if not name.startswith(("decoder.", "decoder_norm.", "decoder_embeddings.")) or name.endswith(".mod_emb")
    }
    assert len(kept) < len(tensors)
    with safe_open(str(tiny.directory / "model.safetensors"), framework="pt") as weights:
        metadata = weights.metadata() or {}
    save_file(kept, str(tmp_path / "model.safetensors"), metadata=metadata)
    (tmp_path / "config.json").write_text((tiny.directory / "config.json").read_text())
    with pytest.raises(ValueError, match="missing"):
        AION.from_pretrained(tmp_path)  # the full model needs what was cut out
    model = AION.from_pretrained(tmp_path, encoder_only=True)
    assert not any(name.startswith(("decoder.", "decoder_norm", "decoder_embeddings")) for name in model.state_dict())
    for key in TIED_KEYS:  # stored under the decoder name only
        assert torch.equal(model.encoder_embeddings[key].mod_emb, tiny.reference.encoder_embeddings[key].mod_emb)
    tokens = random_tokens(["tok_image", "tok_spectrum_desi", "tok_z", "catalog"], 3)
    mask = random_padding(tokens, ["tok_spectrum_desi", "catalog"])
    from aion_fast.embedding import embed

    with torch.inference_mode():
        assert torch.equal(model.encode(tokens, input_mask=mask), tiny.model.encode(tokens, input_mask=mask))
        assert torch.equal(embed(model, tokens, input_mask=mask), embed(tiny.model, tokens, input_mask=mask))


def test_encoder_only_model_refuses_to_decode(tiny, tmp_path):
    model = AION.from_pretrained(tiny.directory, encoder_only=True)
    tokens = random_tokens(["tok_image", "tok_z"], 2)
    with pytest.raises(RuntimeError, match="encoder_only=True"):
        model(tokens, ["tok_z"])
    with pytest.raises(RuntimeError, match="encoder_only=True"):
        model.embed_targets({"tok_z": torch.zeros(2, 1, dtype=torch.bool)})
    with pytest.raises(RuntimeError, match="encoder_only=True"):
        model.save_pretrained(tmp_path)
    assert not any(tmp_path.iterdir())  # nothing half-written
