"""Scalar-field (segmentation map) codec: reference checkpoints load both ways, bit-identical tokens, matching decode.

The reference ``aion.codecs.ScalarFieldCodec`` is built with random weights (``SEGMAP_SMALL_CONFIG`` by default,
the paper's size in the ``slow`` test), saved with its own ``save_pretrained`` and loaded by ``aion_fast``.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("aion", reason="needs the reference package aion (polymathic-aion): pip install -e .[test]")
import aion.codecs as ref_codecs
import aion.modalities as ref_modalities
import pytest
import torch
from safetensors.torch import load_file

from aion_fast import modalities as m
from aion_fast.codecs.manager import CodecManager
from aion_fast.codecs.scalar_field import ScalarFieldCodec
from tests.codecs.conftest import SEGMAP_SMALL_CONFIG, segmap_make_field, segmap_randomize_reference
from tests.utils import assert_close_rel, assert_tokens_equal


def _reference_tokens(reference, field: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return reference.encode(ref_modalities.LegacySurveySegmentationMap(field=field.clone())).long()


def _reference_from_folder(folder) -> ref_codecs.ScalarFieldCodec:
    """The reference's from_pretrained cannot read a local directory (its hub mixin looks for
    codecs/segmentation_map/config.json with os.listdir of the root), so build it from config.json and load the
    weights strictly, as its from_pretrained would."""
    reference = ref_codecs.ScalarFieldCodec(**json.loads((folder / "config.json").read_text()))
    reference.load_state_dict(load_file(folder / "model.safetensors"), strict=True)
    return reference.eval()


@pytest.fixture(scope="module")
def segmap_codec_small(segmap_checkpoint_small):
    return ScalarFieldCodec.from_pretrained(segmap_checkpoint_small, modality=m.LegacySurveySegmentationMap)


# ------------------------------------------------------------------------------------------- checkpoint format


@pytest.mark.parametrize("ema", [False, True])
def test_state_dict_keys_and_shapes_match_reference(ema):
    config = {**SEGMAP_SMALL_CONFIG, "ema_model_weights": ema}
    ours = {k: tuple(v.shape) for k, v in ScalarFieldCodec(**config).state_dict().items()}
    ref = {k: tuple(v.shape) for k, v in ref_codecs.ScalarFieldCodec(**config).state_dict().items()}
    assert ours == ref
    assert any(k.startswith("ema.module.") for k in ours) == ema


def test_paper_size_state_dict_matches_reference():
    config = {"encoder_output_dim": 512, "embedding_dim": 4}
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in ScalarFieldCodec(**config).state_dict().items()}
        ref = {k: tuple(v.shape) for k, v in ref_codecs.ScalarFieldCodec(**config).state_dict().items()}
    assert ours == ref


def test_loads_reference_checkpoint(segmap_codec_small, segmap_checkpoint_small, segmap_reference_small):
    config = json.loads((segmap_checkpoint_small / "codecs/segmentation_map/config.json").read_text())
    assert "output_activation" not in config and "reconstruction_loss" not in config
    assert segmap_codec_small.config == config
    assert not segmap_codec_small.training
    for key, value in segmap_reference_small.state_dict().items():
        assert torch.equal(segmap_codec_small.state_dict()[key], value), key


@pytest.mark.parametrize("ema", [False, True])
def test_checkpoint_written_by_aion_fast_loads_into_reference(tmp_path, ema):
    torch.manual_seed(3)
    ours = segmap_randomize_reference(ScalarFieldCodec(**SEGMAP_SMALL_CONFIG, ema_model_weights=ema), seed=3)
    ours.save_pretrained(tmp_path)
    folder = tmp_path / "codecs" / "segmentation_map"
    config = json.loads((folder / "config.json").read_text())
    assert config["ema_model_weights"] == ema and "output_activation" not in config
    reference = _reference_from_folder(folder)
    field = segmap_make_field(3, 100, 100, seed=12)
    assert_tokens_equal(ours.encode(m.LegacySurveySegmentationMap(field=field)), _reference_tokens(reference, field))


def test_identity_activation_is_saved_and_custom_ones_warn(tmp_path):
    codec = ScalarFieldCodec(**SEGMAP_SMALL_CONFIG, output_activation=None)
    codec.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "codecs/segmentation_map/config.json").read_text())
    assert config["output_activation"] is None
    assert ScalarFieldCodec.from_pretrained(tmp_path, m.LegacySurveySegmentationMap).output_activation is None
    with pytest.warns(UserWarning, match="output_activation is not saved"):
        ScalarFieldCodec(**SEGMAP_SMALL_CONFIG, output_activation=torch.tanh)


# ---------------------------------------------------------------------------------------------- token equality


@pytest.mark.parametrize(("height", "width", "batch"), [(96, 96, 3), (160, 160, 1), (97, 101, 3), (128, 99, 1)])
def test_tokens_match_reference(segmap_codec_small, segmap_reference_small, height, width, batch):
    field = segmap_make_field(batch, height, width, seed=height + width)
    before = field.clone()
    tokens = segmap_codec_small.encode(m.LegacySurveySegmentationMap(field=field))
    assert torch.equal(field, before), "encode modified the caller's field"
    assert tokens.dtype == torch.int64 and tokens.shape == (batch, 144)
    assert_tokens_equal(tokens, _reference_tokens(segmap_reference_small, field))


def test_half_precision_input(segmap_codec_small, segmap_reference_small):
    field = segmap_make_field(2, 96, 96, seed=5).half()
    tokens = segmap_codec_small.encode(m.LegacySurveySegmentationMap(field=field))
    assert_tokens_equal(tokens, _reference_tokens(segmap_reference_small, field.float()))


def test_decode_matches_reference(segmap_codec_small, segmap_reference_small):
    tokens = _reference_tokens(segmap_reference_small, segmap_make_field(3, 96, 96, seed=6))
    decoded = segmap_codec_small.decode(tokens)
    with torch.inference_mode():
        expected = segmap_reference_small.decode(tokens)
    assert type(decoded) is m.LegacySurveySegmentationMap and decoded.field.shape == (3, 96, 96)
    assert float(decoded.field.min()) >= 0.0 and float(decoded.field.max()) <= 1.0
    assert_close_rel(decoded.field, expected.field, rtol=1e-5)


def test_codec_manager_round_trip(segmap_checkpoint_small, segmap_reference_small):
    field = segmap_make_field(2, 100, 100, seed=8)
    tokens = CodecManager(repo=segmap_checkpoint_small).encode(m.LegacySurveySegmentationMap(field=field))
    assert_tokens_equal(tokens["tok_segmap"], _reference_tokens(segmap_reference_small, field))
    decoded = CodecManager(repo=segmap_checkpoint_small).decode(tokens, m.LegacySurveySegmentationMap)
    assert type(decoded) is m.LegacySurveySegmentationMap and decoded.field.shape == (2, 96, 96)


# ------------------------------------------------------------------------------------------------- bad inputs


def test_too_small_field(segmap_codec_small):
    with pytest.raises(ValueError, match=r"LegacySurveySegmentationMap\.field is 96x80.*96x96"):
        segmap_codec_small.encode(m.LegacySurveySegmentationMap(field=torch.zeros(1, 96, 80)))


def test_non_finite_field_names_the_rows(segmap_codec_small):
    field = segmap_make_field(3, 96, 96)
    field[2, 40, 40] = float("nan")
    with pytest.raises(ValueError, match=r"LegacySurveySegmentationMap\.field has non-finite.*rows \[2\]"):
        segmap_codec_small.encode(m.LegacySurveySegmentationMap(field=field))


def test_wrong_modality_and_token_shape(segmap_codec_small):
    with pytest.raises(ValueError, match="encodes LegacySurveySegmentationMap batches, got LegacySurveyImage"):
        segmap_codec_small.encode(
            m.LegacySurveyImage(flux=torch.zeros(1, 4, 96, 96), bands=["DES-G", "DES-R", "DES-I", "DES-Z"])
        )
    with pytest.raises(ValueError, match=r"tokens of shape \(batch, 144\)"):
        segmap_codec_small.decode(torch.zeros(1, 576, dtype=torch.long))


def test_constructor_and_variational_errors():
    with pytest.raises(ValueError, match="embedding_dim \\(16\\) must equal the number of FSQ levels"):
        ScalarFieldCodec(encoder_output_dim=16)
    codec = ScalarFieldCodec(**SEGMAP_SMALL_CONFIG, variational=True)
    assert codec.encode_proj.out_channels == 8
    with pytest.raises(NotImplementedError, match="variational"):
        codec.encode(m.LegacySurveySegmentationMap(field=torch.zeros(1, 96, 96)))


# ---------------------------------------------------------------------------------------------- paper size (slow)


@pytest.mark.slow
def test_paper_size_tokens_and_decode_match_reference(tmp_path):
    torch.manual_seed(5)
    config = {"encoder_output_dim": 512, "embedding_dim": 4, "ema_model_weights": True}
    reference = segmap_randomize_reference(ref_codecs.ScalarFieldCodec(**config), seed=5)
    reference.save_pretrained(tmp_path, modality=ref_modalities.LegacySurveySegmentationMap)
    ours = ScalarFieldCodec.from_pretrained(tmp_path, modality=m.LegacySurveySegmentationMap)
    field = segmap_make_field(4, 113, 97, seed=7)
    tokens = ours.encode(m.LegacySurveySegmentationMap(field=field))
    expected_tokens = _reference_tokens(reference, field)
    assert_tokens_equal(tokens, expected_tokens)
    with torch.inference_mode():
        expected = reference.decode(expected_tokens)
    assert_close_rel(ours.decode(expected_tokens).field, expected.field, rtol=1e-5)
