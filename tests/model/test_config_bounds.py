"""Item 10 of issue 19: a hostile config.json is bounded before any allocation (dim = 2**22 used to allocate 5 GB,
encoder_depth = 10**6 to hang, huge codec sizes to ask for terabytes): a clear error naming the field and the bound,
in well under a second."""

from __future__ import annotations

import json
import resource
import shutil
import time

import pytest

from aion_fast import modalities as m
from aion_fast.codecs import CodecManager
from aion_fast.demo import build_untrained_checkpoint
from aion_fast.model import AION


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_untrained_checkpoint(tmp_path_factory.mktemp("ckpt"))


def _edited(checkpoint, tmp_path, relative, **changes):
    copy = tmp_path / "ckpt"
    shutil.copytree(checkpoint, copy)
    path = copy / relative
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return copy


def _peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize(
    ("field", "value", "bound"),
    [("dim", 2**22, 16384), ("encoder_depth", 10**6, 256), ("decoder_depth", 10**6, 256), ("num_heads", 2**20, 512),
     ("mlp_ratio", 1e9, 64), ("num_register_tokens", 10**9, 4096)],
)  # fmt: skip
def test_hostile_model_config_fails_fast_without_allocating(checkpoint, tmp_path, field, value, bound):
    hostile = _edited(checkpoint, tmp_path, "config.json", **{field: value})
    peak, start = _peak_mb(), time.perf_counter()
    with pytest.raises(ValueError, match=rf"config\['{field}'\] = .* exceeds the bound {bound}"):
        AION.from_pretrained(hostile, encoder_only=True)
    assert time.perf_counter() - start < 1.0
    assert _peak_mb() - peak < 200


@pytest.mark.parametrize(
    ("folder", "field", "value"),
    [("spectrum", "codebook_size", 2**40), ("spectrum", "encoder_dims", [16, 2**30, 64, 128]),
     ("spectrum", "encoder_depths", [1, 10**6, 1, 1]), ("spectrum", "num_pixels", 2**31),
     ("FLUX_G", "reservoir_size", 2**40), ("image", "quantizer_levels", [2**20, 5, 5])],
)  # fmt: skip
def test_hostile_codec_config_fails_fast_without_allocating(checkpoint, tmp_path, folder, field, value):
    hostile = _edited(checkpoint, tmp_path, f"codecs/{folder}/config.json", **{field: value})
    modality = {"spectrum": m.DESISpectrum, "FLUX_G": m.LegacySurveyFluxG, "image": m.LegacySurveyImage}[folder]
    peak, start = _peak_mb(), time.perf_counter()
    with pytest.raises(ValueError, match=rf"codecs/{folder}/config.json: {field} = \d+ exceeds the bound \d+"):
        CodecManager(repo=hostile).codec(modality)
    assert time.perf_counter() - start < 1.0
    assert _peak_mb() - peak < 200


def test_released_sizes_stay_accepted(checkpoint):
    from aion_fast.model.config import AIONConfig, architecture

    AIONConfig.from_dict(architecture(["tok_image"], ["tok_image"], dim=2048, encoder_depth=24, num_heads=32))
    AION.from_pretrained(checkpoint, encoder_only=True)
    CodecManager(repo=checkpoint).codec(m.DESISpectrum)
