"""The bundled demo: a reproducible untrained checkpoint and a Parquet of embeddings for the real DESI sample."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import torch

import aion_fast
from aion_fast.demo import build_untrained_checkpoint, checkpoint_digest, run_demo


def test_demo_checkpoint_is_reproducible(tmp_path):
    first = build_untrained_checkpoint(tmp_path / "a")
    second = build_untrained_checkpoint(tmp_path / "b")
    configs = sorted(p.relative_to(first) for p in first.rglob("config.json"))
    assert len(configs) == 22  # transformer + spectrum + image + 19 scalar codecs
    for relative in configs:
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative
    assert checkpoint_digest(first) == checkpoint_digest(second)
    from safetensors.torch import load_file, save_file

    weights = load_file(second / "model.safetensors")
    weights["mask_token"] += 1e-3
    save_file(weights, second / "model.safetensors")
    assert checkpoint_digest(first) != checkpoint_digest(second)


def test_demo_writes_embeddings_equal_to_embed(tmp_path):
    checkpoint = build_untrained_checkpoint(tmp_path / "ckpt")
    summary = run_demo(tmp_path / "out", model_dir=checkpoint)
    table = pq.read_table(tmp_path / "out" / "embeddings.parquet")
    assert summary["objects_encoded"] == table.num_rows == 3
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["embedding_dim"] == 128
    assert all("spectrum" in used for used in table.column("modalities").to_pylist())
    vectors = torch.tensor(table.column("embedding").to_pylist())
    assert vectors.shape == (3, 128) and torch.isfinite(vectors).all()

    from aion_fast.data.desi import load_desi_sample

    spectrum, _ = load_desi_sample()
    model = aion_fast.AION.from_pretrained(checkpoint)
    codecs = aion_fast.CodecManager(repo=checkpoint)
    only_spectrum = aion_fast.embed(model, codecs.encode(spectrum))
    # The demo adds photometry, so its vectors differ from spectrum-only ones, but not by everything.
    assert not torch.allclose(vectors, only_spectrum)
