"""Token shards and MixedTokenDataset: reads, key union, mixing ratios, exact resume, disjoint ranks, masking input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from aion_fast.data.make_sample import desi_columns, legacysurvey_columns, write_mmu
from aion_fast.demo import ensure_demo_checkpoint
from aion_fast.jobs.plan import shard_name
from aion_fast.train.masking import sample_masks
from aion_fast.train.tokenize import tokenize_files
from aion_fast.train.tokens import MixedTokenDataset, TokenBatch, TokenShard, collate_token_batches

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = sorted((ROOT / "aion_fast" / "data" / "sample" / "mmu").glob("*/healpix=0/001-of-001.hdf5"))


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> dict[str, list[Path]]:
    """Sources of the bundled sample (desi 3, gaia 16, legacysurvey 8 objects) and a cross-matched LS x DESI file of
    5 objects, the last with nothing usable."""
    tmp = tmp_path_factory.mktemp("mixed")
    ls, desi = legacysurvey_columns(n=5), desi_columns()
    desi = {k: np.concatenate([v, v[:2]]) for k, v in desi.items()}
    ls["image_mask"][4] = False
    desi["spectrum_ivar"][4] = 0
    for name in ("FLUX_G", "FLUX_R", "FLUX_I", "FLUX_Z", "FLUX_W1", "FLUX_W2", "FLUX_W3", "FLUX_W4", "EBV",
                 "SHAPE_R", "SHAPE_E1", "SHAPE_E2"):  # fmt: skip
        ls[name][4] = np.nan
    columns = {f"legacysurvey_{k}": v for k, v in ls.items()} | {f"desi_{k}": v for k, v in desi.items()}
    columns["object_id"] = np.array([f"x{i}" for i in range(5)])
    cross = write_mmu(tmp / "in" / "legacysurvey_x_desi" / "healpix=0" / "001-of-001.hdf5", columns)
    tokenize_files(SAMPLE, tmp / "tokens", ensure_demo_checkpoint())
    tokenize_files([cross], tmp / "tokens_x", ensure_demo_checkpoint())
    folders = {p.name.split("__")[0]: p for p in (tmp / "tokens").iterdir()}
    sources = {name: [folders[name]] for name in ("legacysurvey", "desi", "gaia")}
    return sources | {"legacysurvey_x_desi": [tmp / "tokens_x" / shard_name(cross)]}


def test_shard_take_preserves_order_and_repeats(shards):
    shard = TokenShard(shards["gaia"][0])
    batch = shard.take([5, 2, 5, 0])
    full = shard[:]
    assert batch.object_ids == [full.object_ids[i] for i in (5, 2, 5, 0)]
    for key in shard.keys:
        assert batch.tokens[key].shape == (4, shard.num_tokens[key]) and batch.tokens[key].dtype == torch.int64
        assert torch.equal(batch.tokens[key], full.tokens[key][[5, 2, 5, 0]])
        assert batch.present[key].dtype == torch.bool and batch.present[key].shape == batch.tokens[key].shape
    assert shard[3].object_ids == [full.object_ids[3]] and len(shard[-1]) == 1
    with pytest.raises(ValueError, match="rows must lie"):
        shard.take([16])
    with pytest.raises(IndexError):
        shard[16]


def test_collate_fills_absent_keys():
    a = TokenBatch({"tok_z": torch.tensor([[3]])}, {"tok_z": torch.tensor([[True]])}, ["a"])
    b = TokenBatch({"tok_xp_bp": torch.ones(2, 55, dtype=torch.int64)}, {"tok_xp_bp": torch.ones(2, 55, dtype=bool)},
                   ["b", "c"])  # fmt: skip
    joined = collate_token_batches([a, b], {"tok_z": 1, "tok_xp_bp": 55, "tok_image": 576})
    assert joined.object_ids == ["a", "b", "c"]
    assert joined.tokens["tok_z"].tolist() == [[3], [0], [0]]
    assert joined.present["tok_z"].tolist() == [[True], [False], [False]]
    assert joined.present["tok_xp_bp"].sum(1).tolist() == [0, 55, 55]
    assert joined.tokens["tok_image"].shape == (3, 576) and not joined.present["tok_image"].any()
    moved = joined.to("cpu")
    assert torch.equal(moved.tokens["tok_z"], joined.tokens["tok_z"]) and moved.object_ids == joined.object_ids


def test_batches_have_the_union_of_keys_and_each_source_its_own_presence(shards):
    data = MixedTokenDataset(shards, batch_size=12, seed=1)
    keys = set()
    for folders in shards.values():
        keys |= set(TokenShard(folders[0]).keys)
    for batch in (data.next_batch() for _ in range(5)):
        assert set(batch.tokens) == keys and len(batch) == 12 and len(batch.sources) == 12
        has = batch.object_present()
        for i, source in enumerate(batch.sources):
            present_keys = {k for k in keys if has[k][i]}
            assert present_keys <= set(TokenShard(shards[source][0]).keys)
            assert present_keys, "an object without any modality was yielded"
            if source == "gaia":
                assert present_keys >= {"tok_xp_bp", "tok_xp_rp"} and "tok_image" not in present_keys
            if source == "legacysurvey_x_desi":
                assert batch.object_ids[i] != "x4"
        for key in keys:
            assert not bool(batch.tokens[key][~batch.present[key]].any()), "absent tokens must hold 0"


def test_source_ratios_follow_the_weights(shards):
    weights = {"legacysurvey": 5.0, "desi": 1.0, "gaia": 2.0, "legacysurvey_x_desi": 2.0}
    data = MixedTokenDataset(shards, batch_size=16, weights=weights, seed=3)
    counts = dict.fromkeys(weights, 0)
    n = 0
    for _ in range(100):
        for source in data.next_batch().sources:
            counts[source] += 1
            n += 1
    for name, weight in weights.items():
        p = weight / sum(weights.values())
        assert abs(counts[name] / n - p) < 5 * (p * (1 - p) / n) ** 0.5, (name, counts)
    only = MixedTokenDataset(shards, batch_size=8, weights={**dict.fromkeys(weights, 0.0), "desi": 1.0})
    assert set(only.next_batch().sources) == {"desi"}


def test_every_object_once_per_source_epoch(shards):
    data = MixedTokenDataset({"gaia": shards["gaia"]}, batch_size=5, seed=0)
    seen = [i for _ in range(16) for i in data.next_batch().object_ids]  # 80 objects = 5 epochs of 16
    all_ids = sorted(TokenShard(shards["gaia"][0]).object_ids.tolist())
    epochs = [seen[k : k + 16] for k in range(0, 80, 16)]
    assert all(sorted(epoch) == all_ids for epoch in epochs)
    assert epochs[0] != epochs[1], "each epoch is shuffled anew"


def _same(a: TokenBatch, b: TokenBatch) -> bool:
    return (a.object_ids == b.object_ids and a.sources == b.sources
            and all(torch.equal(a.tokens[k], b.tokens[k]) and torch.equal(a.present[k], b.present[k])
                    for k in a.tokens))  # fmt: skip


def test_deterministic_and_exactly_resumable(shards):
    weights = {"legacysurvey": 1.0, "desi": 1.0, "gaia": 1.0, "legacysurvey_x_desi": 1.0}
    make = lambda seed=7: MixedTokenDataset(shards, batch_size=6, weights=weights, seed=seed)  # noqa: E731
    uninterrupted = make()
    stream = iter(uninterrupted)
    reference = [next(stream) for _ in range(12)]
    first = make()
    for _ in range(7):
        first.next_batch()
    state = json.loads(json.dumps(first.state_dict()))  # survives a JSON round trip (checkpoint metadata)
    resumed = make()
    resumed.load_state_dict(state)
    assert all(_same(resumed.next_batch(), expected) for expected in reference[7:])
    assert not _same(make(seed=8).next_batch(), reference[0])
    with pytest.raises(ValueError, match="cannot resume"):
        MixedTokenDataset(shards, batch_size=5, weights=weights, seed=7).load_state_dict(state)


def test_ranks_get_disjoint_objects(shards):
    """Within each source epoch the ranks' objects are disjoint (each rank: n // world_size distinct objects)."""
    ranks = [MixedTokenDataset(shards, batch_size=8, seed=2, rank=r, world_size=2) for r in (0, 1)]
    drawn: list[dict[str, list[str]]] = [{name: [] for name in shards} for _ in ranks]
    for _ in range(20):
        batches = [data.next_batch() for data in ranks]
        assert batches[0].sources == batches[1].sources, "ranks draw the same source mix"
        for r, batch in enumerate(batches):
            for source, object_id in zip(batch.sources, batch.object_ids):
                drawn[r][source].append(object_id)
    for name in shards:
        per_epoch = len(ranks[0].sources[ranks[0].names.index(name)]) // 2
        assert len(drawn[0][name]) == len(drawn[1][name]) >= per_epoch
        for start in range(0, len(drawn[0][name]) - per_epoch + 1, per_epoch):
            epoch = [set(drawn[r][name][start : start + per_epoch]) for r in (0, 1)]
            assert all(len(e) == per_epoch for e in epoch), f"{name}: an object repeated within an epoch"
            assert not epoch[0] & epoch[1], f"{name}: both ranks got an object in one epoch"
    # A source larger than a step's draw: the two ranks' batches never share an object.
    gaia = [MixedTokenDataset({"gaia": shards["gaia"]}, batch_size=4, seed=5, rank=r, world_size=2) for r in (0, 1)]
    for _ in range(6):
        assert not set(gaia[0].next_batch().object_ids) & set(gaia[1].next_batch().object_ids)
    with pytest.raises(ValueError, match="fewer than world_size"):
        MixedTokenDataset({"desi": shards["desi"]}, batch_size=2, rank=0, world_size=4)


def test_batches_feed_the_masking(shards):
    data = MixedTokenDataset(shards, batch_size=7, seed=0)
    batch = data.next_batch()
    input_mask, target_mask = sample_masks(batch.present, generator=torch.Generator().manual_seed(0))
    for key in batch.present:
        assert not bool((~input_mask[key] & ~batch.present[key]).any())
    inputs = torch.cat([~input_mask[k] for k in batch.present], dim=1).sum(1)
    assert bool((inputs >= 1).all()) and int(inputs.max()) <= 256


def test_bad_dataset_arguments(shards):
    with pytest.raises(ValueError, match="weights must name exactly"):
        MixedTokenDataset(shards, batch_size=4, weights={"desi": 1.0})
    with pytest.raises(ValueError, match="finite"):
        MixedTokenDataset({"desi": shards["desi"]}, batch_size=4, weights={"desi": -1.0})
    with pytest.raises(ValueError, match="batch_size"):
        MixedTokenDataset(shards, batch_size=0)
    with pytest.raises(ValueError, match="no shards"):
        MixedTokenDataset({"desi": []}, batch_size=4)
