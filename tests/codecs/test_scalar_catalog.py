"""Scalar and catalog codecs: reference checkpoints (saved by the reference itself) load and give identical tokens."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("aion", reason="needs the reference package aion (polymathic-aion): pip install -e .[test]")
from aion import codecs as ref_codecs
from aion import modalities as ref_modalities

from aion_fast import modalities as m
from aion_fast.codecs import CatalogCodec, GridScalarCodec, LogScalarCodec, MultiScalarCodec, ScalarCodec
from aion_fast.codecs.manager import CodecManager
from tests.utils import assert_close_rel, assert_tokens_equal


@pytest.fixture(scope="module")
def scalar_checkpoint(tmp_path_factory):
    """Reference scalar/catalog codecs fitted on realistic values and saved with the reference's save_pretrained."""
    root = tmp_path_factory.mktemp("scalar_ckpt")
    torch.manual_seed(1)
    flux_g = ref_codecs.LogScalarCodec("FLUX_G", 1024, 5000)
    flux_g._quantizer._update_reservoirs(torch.distributions.LogNormal(1.0, 1.5).sample((8000,)) - 0.3)
    flux_g.save_pretrained(root, modality=ref_modalities.LegacySurveyFluxG)
    e1 = ref_codecs.ScalarCodec("SHAPE_E1", 1024, 5000)
    e1._quantizer._update_reservoirs(torch.randn(8000) * 0.2)
    e1.save_pretrained(root, modality=ref_modalities.LegacySurveyShapeE1)
    xp = ref_codecs.MultiScalarCodec("bp_coefficients", ["arcsinh"], ["sinh"], 1024, 2000, 55)
    xp._quantizer._update_reservoirs(torch.randn(3000, 55) * torch.logspace(3, 0, 55))
    xp.save_pretrained(root, modality=ref_modalities.GaiaXpBp)
    ref_codecs.GridScalarCodec("Z", 1024).save_pretrained(root, modality=ref_modalities.Z)
    catalog = ref_codecs.CatalogCodec()
    for name in ("SHAPE_E1", "SHAPE_E2", "SHAPE_R"):
        catalog._quantizer.quantizers[name]._update_reservoirs(torch.rand(200_000))
    catalog.save_pretrained(root, modality=ref_modalities.LegacySurveyCatalog)
    return root, {
        "FLUX_G": flux_g,
        "SHAPE_E1": e1,
        "XP": xp,
        "Z": ref_codecs.GridScalarCodec("Z", 1024),
        "catalog": catalog,
    }


def test_scalar_codecs_match_reference(scalar_checkpoint):
    root, ref = scalar_checkpoint
    cases = [
        (
            LogScalarCodec,
            m.LegacySurveyFluxG,
            ref_modalities.LegacySurveyFluxG,
            ref["FLUX_G"],
            torch.rand(257) * 80 - 2,
        ),
        (ScalarCodec, m.LegacySurveyShapeE1, ref_modalities.LegacySurveyShapeE1, ref["SHAPE_E1"], torch.randn(3) * 0.3),
        (GridScalarCodec, m.Z, ref_modalities.Z, ref["Z"], torch.cat([torch.rand(7) * 1.2, torch.tensor([0.0, 1.0])])),
        (MultiScalarCodec, m.GaiaXpBp, ref_modalities.GaiaXpBp, ref["XP"], torch.randn(7, 55) * 300),
    ]
    for codec_class, modality, ref_modality, ref_codec, values in cases:
        codec = codec_class.from_pretrained(root, modality=modality)
        before = values.clone()
        tokens = codec.encode(modality(value=values))
        assert torch.equal(values, before), "caller's tensor modified"
        assert tokens.dtype == torch.int64
        expected = ref_codec.encode(ref_modality(value=values))
        assert tokens.shape == expected.shape
        assert_tokens_equal(tokens, expected, codec_class.__name__)
        decoded = codec.decode(tokens)
        assert type(decoded) is modality
        assert_close_rel(decoded.value, ref_codec.decode(expected).value)


def test_catalog_codec_matches_reference(scalar_checkpoint):
    root, ref = scalar_checkpoint
    codec = CatalogCodec.from_pretrained(root, modality=m.LegacySurveyCatalog)
    batch, sources = 3, 7
    columns = {
        "X": torch.randint(0, 96, (batch, sources)),
        "Y": torch.randint(0, 96, (batch, sources)),
        "SHAPE_E1": torch.rand(batch, sources),
        "SHAPE_E2": torch.rand(batch, sources),
        "SHAPE_R": torch.rand(batch, sources),
    }
    for name in columns:  # the last two slots of object 0 are empty
        columns[name][0, 5:] = 9999
    before = {k: v.clone() for k, v in columns.items()}
    tokens = codec.encode(m.LegacySurveyCatalog(**columns))
    expected = ref["catalog"].encode(ref_modalities.LegacySurveyCatalog(**columns))
    assert tokens.shape == (batch, sources * 5)
    assert_tokens_equal(tokens, expected, "catalog tokens")
    assert all(torch.equal(columns[k], before[k]) for k in columns)
    decoded = codec.decode(tokens)
    ref_decoded = ref["catalog"].decode(expected.clone())
    for name in columns:
        assert_close_rel(getattr(decoded, name).float(), getattr(ref_decoded, name).float())


def test_saved_scalar_codec_loads_in_reference(scalar_checkpoint, tmp_path):
    root, ref = scalar_checkpoint
    ours = LogScalarCodec.from_pretrained(root, modality=m.LegacySurveyFluxG)
    ours.save_pretrained(tmp_path)
    folder = tmp_path / "codecs" / "FLUX_G"
    # The reference's hub mixin cannot read local directories (it lists the root), so build it from the files.
    from safetensors.torch import load_file

    reloaded = ref_codecs.LogScalarCodec(**json.loads((folder / "config.json").read_text()))
    reloaded.load_state_dict(load_file(folder / "model.safetensors"), strict=True)
    values = torch.rand(50) * 30
    assert_tokens_equal(
        ours.encode(m.LegacySurveyFluxG(value=values)),
        reloaded.encode(ref_modalities.LegacySurveyFluxG(value=values)),
    )


def test_published_key_names_are_accepted(scalar_checkpoint, tmp_path):
    """The hub's scalar codecs store ``quantizer.*`` keys; they load into ``_quantizer``."""
    from safetensors.torch import load_file, save_file

    root, _ = scalar_checkpoint
    source = root / "codecs" / "FLUX_G"
    target = tmp_path / "codecs" / "FLUX_G"
    target.mkdir(parents=True)
    state = {k.replace("_quantizer.", "quantizer.", 1): v for k, v in load_file(source / "model.safetensors").items()}
    save_file(state, target / "model.safetensors")
    (target / "config.json").write_text((source / "config.json").read_text())
    codec = LogScalarCodec.from_pretrained(tmp_path, modality=m.LegacySurveyFluxG)
    assert torch.equal(
        codec.quantizer.codebook, LogScalarCodec.from_pretrained(root, m.LegacySurveyFluxG).quantizer.codebook
    )


def test_scalar_bad_inputs(scalar_checkpoint):
    root, _ = scalar_checkpoint
    codec = LogScalarCodec.from_pretrained(root, modality=m.LegacySurveyFluxG)
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        codec.encode(m.LegacySurveyFluxG(value=torch.tensor([1.0, float("nan"), 2.0])))
    with pytest.raises(ValueError, match="encodes LegacySurveyFluxG"):
        codec.encode(m.LegacySurveyFluxR(value=torch.tensor([1.0])))
    with pytest.raises(ValueError, match="floating dtype"):
        m.LegacySurveyFluxG(value=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="empty batch"):
        m.LegacySurveyFluxG(value=torch.zeros(0))
    with pytest.raises(ValueError, match=r"\(batch, 55\)"):
        m.GaiaXpBp(value=torch.zeros(3, 54))


def test_manager_encodes_loads_once_and_refuses_duplicates(scalar_checkpoint):
    root, ref = scalar_checkpoint
    manager = CodecManager(repo=root, device="cpu")
    flux = m.LegacySurveyFluxG(value=torch.rand(4) * 10)
    e1 = m.LegacySurveyShapeE1(value=torch.randn(4) * 0.1)
    tokens = manager.encode(flux, e1)
    assert set(tokens) == {"tok_flux_g", "tok_shape_e1"}
    assert_tokens_equal(tokens["tok_flux_g"], ref["FLUX_G"].encode(ref_modalities.LegacySurveyFluxG(value=flux.value)))
    assert manager.codec(m.LegacySurveyFluxG) is manager.codec(m.LegacySurveyFluxG)
    with pytest.raises(ValueError, match="two inputs of modality LegacySurveyFluxG"):
        manager.encode(flux, m.LegacySurveyFluxG(value=torch.rand(4)))
    with pytest.raises(ValueError, match="different numbers of objects"):
        manager.encode(flux, m.LegacySurveyShapeE1(value=torch.randn(3)))
    decoded = manager.decode(tokens, m.LegacySurveyFluxG)
    assert isinstance(decoded, m.LegacySurveyFluxG) and decoded.value.shape == (4,)
    with pytest.raises(ValueError, match="tok_z"):
        manager.decode(tokens, m.Z)


def test_missing_checkpoint_explains_layout(tmp_path):
    from aion_fast.hub import CheckpointNotFoundError

    with pytest.raises(CheckpointNotFoundError, match="codecs/<modality name>"):
        LogScalarCodec.from_pretrained(tmp_path, modality=m.LegacySurveyFluxG)
    with pytest.raises(CheckpointNotFoundError, match="local directory"):
        LogScalarCodec.from_pretrained("no-such-org/no-such-model", modality=m.LegacySurveyFluxG)
