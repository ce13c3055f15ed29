"""The modality table must state the same facts as the reference's ``MODALITY_INFO``."""

from __future__ import annotations

import pytest

from aion_fast.model import MODALITY_INFO, modality_id

aion_modality_info = pytest.importorskip("aion.fourm.modality_info")
REFERENCE = aion_modality_info.MODALITY_INFO


def test_same_token_keys():
    assert set(MODALITY_INFO) == set(REFERENCE)


@pytest.mark.parametrize("key", sorted(REFERENCE))
def test_facts_match_reference(key):
    ours, theirs = MODALITY_INFO[key], REFERENCE[key]
    assert ours.id == theirs["id"] == aion_modality_info.generate_uint15_hash(key)
    assert ours.vocab_size == theirs["vocab_size"]
    assert ours.kind == {"img": "grid", "seq_token": "sequence"}[theirs["type"]]
    encoder_kwargs = theirs["encoder_embedding"].keywords
    if ours.kind == "grid":
        assert ours.patch_size == theirs["patch_size"] == encoder_kwargs["patch_size"]
        image_size = encoder_kwargs["image_size"]
        assert ours.image_size == (image_size if isinstance(image_size, tuple) else (image_size, image_size))
        assert ours.num_tokens == theirs["encoder_embedding"]().num_patches
        if theirs["max_tokens"] is not None:
            assert ours.num_tokens == theirs["max_tokens"]
    else:
        assert ours.max_length == theirs["max_tokens"] == encoder_kwargs["max_length"]
        assert ours.padding_idx == encoder_kwargs["padding_idx"]


def test_realistic_token_counts():
    assert MODALITY_INFO["tok_image"].num_tokens == 576
    assert MODALITY_INFO["tok_image_hsc"].num_tokens == 576
    assert MODALITY_INFO["tok_segmap"].num_tokens == 144
    assert MODALITY_INFO["tok_spectrum_desi"].num_tokens == 273
    assert MODALITY_INFO["tok_xp_rp"].num_tokens == 55
    assert MODALITY_INFO["tok_z"].num_tokens == 1
    assert MODALITY_INFO["tok_z"].vocab_size == 1025
    assert MODALITY_INFO["catalog"].num_tokens is None


def test_ids_are_unique_int16():
    ids = [spec.id for spec in MODALITY_INFO.values()]
    assert len(set(ids)) == len(ids)
    assert all(0 <= i < 2**15 for i in ids)
    assert modality_id("tok_image") == MODALITY_INFO["tok_image"].id
