"""The bundled DEMO model (aion_fast/data/demo_model): the main job's default, loadable, and actually trained."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from aion_fast.codecs import CodecManager
from aion_fast.hub import BUNDLED_DEMO_MODEL, DEMO_MODEL_LABEL, default_model
from aion_fast.model import AION
from aion_fast.train.masking import sample_masks
from aion_fast.train.objective import MaskedModelingObjective
from aion_fast.train.tokenize import tokenize_files
from aion_fast.train.tokens import TokenShard, collate_token_batches, find_token_shards

SAMPLE = sorted(str(p) for p in (Path(__file__).parents[1] / "aion_fast/data/sample/mmu").glob("*/healpix=0/*.hdf5"))


def test_default_model_is_the_bundled_demo_and_says_so():
    directory, label = default_model()
    assert directory == BUNDLED_DEMO_MODEL and label == DEMO_MODEL_LABEL
    assert "NOT AION-1 science quality" in label
    assert "NOT AION-1 science quality" in (BUNDLED_DEMO_MODEL / "DEMO_MODEL.md").read_text()
    size = sum(p.stat().st_size for p in BUNDLED_DEMO_MODEL.rglob("*") if p.is_file())
    assert size <= 20 * 2**20, f"the committed demo model must stay <= 20 MB, it is {size / 2**20:.1f} MB"
    AION.from_pretrained(BUNDLED_DEMO_MODEL)
    CodecManager(repo=str(BUNDLED_DEMO_MODEL))


def _masked_modeling_loss(model: AION, batch, seed: int) -> float:
    objective = MaskedModelingObjective(model, input_budget=256, output_budget=128)
    generator = torch.Generator().manual_seed(seed)
    input_mask, target_mask = sample_masks(batch.present, 256, 128, generator=generator)
    with torch.no_grad():
        out = objective(batch.tokens, input_mask, target_mask)
    return float(out["loss_sum"] / out["num_targets"])


def test_demo_model_predicts_its_sample_far_better_than_its_untrained_twin(tmp_path):
    """Training happened: on the sample it learnt from, masked-token cross-entropy drops well below an untrained model
    of the same architecture (the demo memorises 27 objects; this is a check of the pipeline, not of science)."""
    tokenize_files(SAMPLE, tmp_path / "tokens", BUNDLED_DEMO_MODEL)
    shards = [TokenShard(path) for path in find_token_shards(tmp_path / "tokens")]
    batch = collate_token_batches([shard[0 : len(shard)] for shard in shards])
    trained = AION.from_pretrained(BUNDLED_DEMO_MODEL).eval()
    torch.manual_seed(0)
    untrained = AION(json.loads((BUNDLED_DEMO_MODEL / "config.json").read_text())).eval()
    for seed in (1, 2):
        trained_loss = _masked_modeling_loss(trained, batch, seed)
        untrained_loss = _masked_modeling_loss(untrained, batch, seed)
        assert trained_loss < 0.5 * untrained_loss, (seed, trained_loss, untrained_loss)
