"""The reference model's public surface on identical weights: layer-by-layer use with its boolean masks, the 4M
methods (``forward_encoder`` / ``forward_decoder`` / ``forward_logits``, ``get_num_layers*``, ``freeze_*``), and the
hub mixin's ``from_pretrained`` keywords and ``save_pretrained`` / ``push_to_hub`` signatures."""

from __future__ import annotations

import inspect

import pytest
import torch

from aion_fast import hub
from aion_fast.model import AION
from aion_fast.model.blocks import AttentionMask
from tests.model.conftest import TINY_CONFIG, VARIANT_CONFIG, random_padding, random_tokens
from tests.utils import assert_close_rel, make_hub_cache

aion = pytest.importorskip("aion")
huggingface_hub = pytest.importorskip("huggingface_hub")

INPUT_KEYS = ["tok_image", "tok_spectrum_desi", "tok_flux_g", "tok_z", "catalog", "tok_xp_bp"]
PADDED_KEYS = ["tok_image", "tok_spectrum_desi", "catalog", "tok_xp_bp"]
REPO_ID = "someone/aion-tiny"


def _inputs(batch: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    tokens = random_tokens(INPUT_KEYS, batch, generator=g)
    return tokens, random_padding(tokens, PADDED_KEYS)


def _layer_by_layer(model, tokens, mask, target_mask):
    """What a user of the reference writes: embeddings, then every block by hand with the returned masks."""
    x, emb, encoder_mask, _ = model.embed_inputs(tokens, mask=mask, num_encoder_tokens=700)
    h = x + emb
    for blk in model.encoder:
        h = blk(h, mask=encoder_mask)
    h = model.encoder_norm(h)
    context = model.decoder_proj_context(h) + emb
    queries, query_emb, _, _, decoder_attention_mask, decoder_mod_mask = model.embed_targets(
        target_mask, num_decoder_tokens=400
    )
    y = queries + query_emb
    for blk in model.decoder:
        y = blk(y, context, sa_mask=decoder_attention_mask, xa_mask=encoder_mask)
    y = model.decoder_norm(y)
    return h, context, y, model.forward_logits(y, target_mask, decoder_mod_mask)


@pytest.mark.parametrize("target", ["tok_image", "tok_z"])
def test_layer_by_layer_with_boolean_masks_matches_reference(tiny, target):
    tokens, mask = _inputs()
    target_mask = {target: torch.rand(3, 576 if target == "tok_image" else 1) < 0.4}
    target_mask[target][:, 0] = False
    with torch.no_grad():
        expected = _layer_by_layer(tiny.reference, tokens, mask, target_mask)
        actual = _layer_by_layer(tiny.model, tokens, mask, target_mask)
    for name, ours, theirs in zip(("encoder", "context", "decoder"), actual[:3], expected[:3], strict=True):
        assert_close_rel(ours, theirs, what=name)
    assert actual[3].keys() == expected[3].keys() == {target}
    assert_close_rel(actual[3][target], expected[3][target], what="logits")


def test_forward_methods_match_reference(tiny, variant):
    for pair, keys in ((tiny, INPUT_KEYS), (variant, ["tok_image", "tok_spectrum_sdss", "tok_mag_g", "catalog"])):
        g = torch.Generator().manual_seed(3)
        tokens = random_tokens(keys, 2, generator=g)
        mask = random_padding(tokens, [k for k in keys if tokens[k].ndim == 2])
        target_mask = {"tok_z": torch.zeros(2, 1, dtype=torch.bool), "tok_image": torch.rand(2, 576) < 0.5}
        results = []
        for model in (pair.model, pair.reference):
            torch.manual_seed(9)  # the reference shuffles target modalities at random
            with torch.no_grad():
                x, emb, encoder_mask, _ = model.embed_inputs(tokens, mask=mask, num_encoder_tokens=650)
                encoded = model.forward_encoder(x + emb, encoder_mask=encoder_mask)
                context = model.decoder_proj_context(encoded) + emb
                queries, query_emb, _, _, attention_mask, mod_mask = model.embed_targets(target_mask, 450)
                decoded = model.forward_decoder(queries + query_emb, context, encoder_mask, attention_mask)
                logits = model.forward_logits(decoded, target_mask, mod_mask)
                every = model.forward_logits(decoded, {"tok_z": None}, mod_mask, return_all_logits=True)
            results.append((encoded, logits, every["tok_z"].shape, mod_mask))
        (encoded, logits, every_shape, _), (ref_encoded, ref_logits, ref_every_shape, _) = results
        assert_close_rel(encoded, ref_encoded, what="forward_encoder")
        for key in target_mask:  # rows of one key follow the decoder order, which the reference shuffles by key
            assert_close_rel(logits[key], ref_logits[key], what=f"forward_logits {key}")
        assert every_shape == ref_every_shape == (2, 450, 1025)
        assert pair.model.get_num_layers_encoder() == pair.reference.get_num_layers_encoder()
        assert pair.model.get_num_layers_decoder() == pair.reference.get_num_layers_decoder()
        assert pair.model.get_num_layers() == pair.reference.get_num_layers()


def test_small_reference_helpers(tiny, variant):
    g = torch.Generator().manual_seed(0)
    for pair in (tiny, variant):
        compressed = torch.randint(0, 3, (2, 7), generator=g)
        mod_mask = torch.randint(0, 3, (2, 7), generator=g, dtype=torch.int16)
        assert torch.equal(
            pair.model.adapt_decoder_attention_mask(compressed, mod_mask),
            pair.reference.adapt_decoder_attention_mask(compressed, mod_mask),
        )
        assert pair.model.no_weight_decay() == pair.reference.no_weight_decay() == set()
    with pytest.raises(ValueError, match="mod_mask"):
        tiny.model.adapt_decoder_attention_mask(compressed)
    model = AION(TINY_CONFIG)
    model.decoder_embeddings["tok_z"].mod_emb = torch.nn.Parameter(torch.zeros(1, 1, 64))
    model.share_modality_embeddings()
    assert model.decoder_embeddings["tok_z"].mod_emb is model.encoder_embeddings["tok_z"].mod_emb


def test_blocks_take_the_reference_mask_or_the_prepared_one(tiny):
    tokens, mask = _inputs(seed=4)
    with torch.no_grad():
        x, emb, encoder_mask, _ = tiny.model.embed_inputs(tokens, mask=mask)
        block = tiny.model.encoder[0]
        from_bool = block(x + emb, mask=encoder_mask)
        assert torch.equal(from_bool, block(x + emb, AttentionMask.from_hidden(encoder_mask)))
        assert_close_rel(from_bool, tiny.reference.encoder[0](x + emb, mask=encoder_mask))
        assert torch.equal(block(x + emb), block(x + emb, mask=None))
        with pytest.raises(ValueError, match=r"mask must be a bool tensor of shape \(B, 1, N\)"):
            block(x + emb, mask=encoder_mask.float())
        with pytest.raises(ValueError, match="got torch.bool tensor of shape"):
            block(x + emb, mask=encoder_mask[:, 0])
        context = torch.randn(3, 5, 64)
        decoder_block = tiny.model.decoder[0]
        with pytest.raises(ValueError, match="not both"):
            decoder_block(x, context, AttentionMask(), sa_mask=torch.zeros(3, x.shape[1], x.shape[1], dtype=bool))


FREEZE_STEPS = [
    ("freeze_encoder", ()), ("unfreeze_encoder", ()), ("freeze_encoder", (False,)), ("freeze_decoder", ()),
    ("unfreeze_decoder", (False,)), ("unfreeze_all", ()), ("freeze_shared_params", ()),
    ("unfreeze_shared_params", ()), ("freeze_encoder_except_specific_embeddings", ("tok_image-tok_z",)),
    ("unfreeze_all", ()), ("freeze_decoder_except_specific_embeddings", ("tok_flux_g",)),
    ("freeze_params_except_specific_embeddings", ("catalog-tok_image",)), ("unfreeze_encoder", (False,)),
    ("freeze_decoder", (False,)), ("unfreeze_all", ()),
]  # fmt: skip


def test_freeze_and_unfreeze_like_the_reference():
    ours, theirs = AION(TINY_CONFIG), aion.AION(TINY_CONFIG)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    seen = set()
    for method, args in FREEZE_STEPS:
        getattr(ours, method)(*args)
        getattr(theirs, method)(*args)
        trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
        assert trainable == {n for n, p in theirs.named_parameters() if p.requires_grad}, (method, args)
        seen.add(len(trainable))
    assert len(seen) >= 5  # the steps really change what trains
    ours.freeze_encoder()
    assert all(not p.requires_grad for p in ours.encoder.parameters())
    assert ours.decoder_embeddings["tok_z"].mod_emb.requires_grad is False  # tied to the encoder's


def test_freeze_on_an_encoder_only_model(tiny):
    model = AION.from_pretrained(tiny.directory, encoder_only=True)
    model.freeze_decoder()
    model.freeze_encoder()
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert model.get_num_layers() == model.get_num_layers_encoder() == 2


@pytest.fixture(scope="module")
def model_cache(tiny, variant, tmp_path_factory):
    """The tiny checkpoint at ``main`` and the variant one at an older commit, in a hub-layout cache."""
    cache = tmp_path_factory.mktemp("model_hub_cache")
    make_hub_cache(tiny.directory, cache, REPO_ID, "a" * 40)
    make_hub_cache(variant.directory, cache, REPO_ID, "b" * 40, refs=("v0",))
    return cache


def test_from_pretrained_hub_keywords_offline(tiny, variant, model_cache):
    options = {"cache_dir": model_cache, "local_files_only": True}
    for revision, pair in ((None, tiny), ("main", tiny), ("a" * 40, tiny), ("v0", variant), ("b" * 40, variant)):
        ours = AION.from_pretrained(REPO_ID, revision=revision, **options)
        theirs = aion.AION.from_pretrained(REPO_ID, revision=revision, **options)
        assert ours.config.to_dict() == pair.model.config.to_dict()
        reference_state = theirs.state_dict()
        for name, tensor in ours.state_dict().items():
            assert torch.equal(tensor, reference_state[name]), (revision, name)
    model = AION.from_pretrained(REPO_ID, map_location="cpu", token=False, force_download=False, **options)
    assert model.device == torch.device("cpu")
    with pytest.raises(hub.CheckpointNotFoundError):
        AION.from_pretrained(REPO_ID, revision="c" * 40, **options)
    with pytest.raises(hub.CheckpointNotFoundError):
        AION.from_pretrained("someone/not-cached", **options)
    with pytest.raises(TypeError):
        AION.from_pretrained(REPO_ID, revison="main", **options)


def _parameters(function) -> dict[str, tuple]:
    return {
        name: (p.kind, p.default)
        for name, p in inspect.signature(function).parameters.items()
        if p.kind is not p.VAR_KEYWORD and name not in ("self", "cls")
    }


def test_hub_mixin_signatures():
    mixin = huggingface_hub.ModelHubMixin
    ours = _parameters(AION.from_pretrained)
    for name, (kind, default) in _parameters(mixin.from_pretrained).items():
        if name != "pretrained_model_name_or_path":
            assert ours[name] == (kind, default), name
    assert _parameters(AION.push_to_hub) == _parameters(mixin.push_to_hub)
    assert {k: v for k, v in _parameters(AION.save_pretrained).items() if k != "directory"} == {
        k: v for k, v in _parameters(mixin.save_pretrained).items() if k != "save_directory"
    }


class _FakeApi:
    """Stands in for huggingface_hub.HfApi: records the calls and the uploaded files (no network)."""

    calls: list = []

    def __init__(self, token=None):
        self.calls.append(("init", token))

    def create_repo(self, repo_id, private=None, exist_ok=False):
        self.calls.append(("create_repo", repo_id, private, exist_ok))
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, **options):
        from pathlib import Path

        files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
        self.calls.append(("upload_folder", repo_id, files, options))
        return f"https://huggingface.co/{repo_id}/commit/0"


def test_save_pretrained_and_push_to_hub(tiny, tmp_path, monkeypatch):
    model = tiny.model
    with pytest.raises(ValueError, match="differs from this model's config"):
        model.save_pretrained(tmp_path / "x", config={**TINY_CONFIG, "dim": 32})
    model.save_pretrained(tmp_path / "same", config=dict(TINY_CONFIG))
    monkeypatch.setattr(huggingface_hub, "HfApi", _FakeApi)
    _FakeApi.calls = []
    path = model.save_pretrained(tmp_path / "pushed", push_to_hub=True, repo_id="me/aion-tiny", private=True,
                                 token="t0k", commit_message="first")  # fmt: skip
    reloaded = AION.from_pretrained(path)
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), model.state_dict().values()))
    init, create, upload = _FakeApi.calls
    assert init == ("init", "t0k") and create == ("create_repo", "me/aion-tiny", True, True)
    assert upload[1] == "me/aion-tiny" and set(upload[2]) == {"config.json", "model.safetensors"}
    assert upload[3]["commit_message"] == "first"
    from safetensors.torch import load as load_safetensors

    uploaded = load_safetensors(upload[2]["model.safetensors"])
    written = load_safetensors((tmp_path / "pushed" / "model.safetensors").read_bytes())
    assert uploaded.keys() == written.keys() and all(torch.equal(uploaded[k], written[k]) for k in written)
    _FakeApi.calls = []
    assert model.push_to_hub("me/other", branch="dev") == "https://huggingface.co/me/other/commit/0"
    assert _FakeApi.calls[-1][3]["revision"] == "dev"


def test_variant_config_is_still_loadable(variant):
    assert VARIANT_CONFIG["num_register_tokens"] == variant.model.register_tokens.shape[1]
