"""``BatchEncoder.__call__`` waits for the device at most once per batch in its own code (issue 15).

On a CPU no call blocks, so the test counts the calls that would: every ATen op that reads a value on the host
(``.item()``, ``int()``, ``bool()``: ``aten._local_scalar_dense``) or whose output size depends on values
(``nonzero`` and kin), and every ``.cpu()`` / ``.tolist()`` / ``.numpy()`` / ``.item()`` of a tensor, made while the
encoder's own code runs. The codecs and the model are stand-ins (their syncs are theirs); they produce tokens of
the real shapes (one- and multi-token keys, catalog holes) so the grouping runs as in the job.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from aion_fast.data.mmu import ObjectBatch, Part
from aion_fast.jobs import encoder as encoder_mod
from aion_fast.modalities import LegacySurveyCatalog

DIM = 6
DATA_DEPENDENT = {"nonzero", "nonzero_static", "masked_select", "unique_dim", "_unique2", "unique_consecutive"}
HOST_METHODS = ("cpu", "tolist", "numpy", "item")


class SyncCounter(TorchDispatchMode):
    """Counts host reads of device values while ``active``."""

    def __init__(self):
        super().__init__()
        self.active = True
        self.calls: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if self.active and (name == "_local_scalar_dense" or name in DATA_DEPENDENT):
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def _fake_modality(key: str, tokens: int):
    @dataclasses.dataclass
    class Fake:
        value: torch.Tensor
        token_key: ClassVar[str] = key
        num_tokens: ClassVar[int] = tokens

    return Fake


class FakeCodecs:
    """Token ids computed from the values: ``T`` tokens per object, the catalog with empty (mask value) slots."""

    mask_value = 99

    def __init__(self, counter: SyncCounter):
        self.counter = counter

    def codec(self, modality):
        assert modality is LegacySurveyCatalog
        return self

    def encode_batches(self, batches, preprocessed):
        self.counter.active = False  # the codecs' own syncs are not the encoder's
        try:
            out = []
            for b in batches:
                ids = (b.value.abs() * 10).long()[:, None] + torch.arange(b.num_tokens)
                if b.token_key == LegacySurveyCatalog.token_key:
                    ids[:, -1] = self.mask_value
                out.append(ids)
            return out
        finally:
            self.counter.active = True


def fake_embed(counter: SyncCounter):
    def embed(model, tokens, pooling="mean", input_mask=None):
        counter.active = False
        try:
            total = sum(t.float().sum(dim=1) for t in tokens.values())
            masked = sum(m.float().sum(dim=1) for m in (input_mask or {}).values()) if input_mask else 0.0
            return (total + 1000 * masked)[:, None] + torch.arange(DIM, dtype=torch.float32)
        finally:
            counter.active = True

    return embed


def _batch(size: int, seed: int) -> ObjectBatch:
    """Objects with random subsets of two multi-token keys, a catalog (with holes) and two one-token keys."""
    g = np.random.default_rng(seed)
    batch = ObjectBatch("f", 0, [str(i) for i in range(size)], np.zeros(size), np.zeros(size))
    kinds = [("tok_image", 4), ("tok_spectrum_desi", 3), (LegacySurveyCatalog.token_key, 5), ("tok_z", 1),
             ("tok_ebv", 1)]  # fmt: skip
    for key, tokens in kinds:
        rows = np.flatnonzero(g.random(size) < 0.6)
        if key == "tok_z":  # two parts of one key
            halves = (rows[: len(rows) // 2], rows[len(rows) // 2 :])
        else:
            halves = (rows,)
        for part_rows in halves:
            if len(part_rows):
                value = torch.from_numpy(g.normal(size=len(part_rows)).astype(np.float32))
                batch.parts.append(Part(_fake_modality(key, tokens)(value=value), part_rows))
    return batch


@pytest.fixture
def encoder(monkeypatch):
    counter = SyncCounter()
    monkeypatch.setattr("aion_fast.embedding.embed", fake_embed(counter))
    enc = encoder_mod.BatchEncoder.__new__(encoder_mod.BatchEncoder)
    enc.device = torch.device("cpu")
    enc.codecs = FakeCodecs(counter)
    enc.model = type("Model", (), {"config": type("Config", (), {"dim": DIM})()})()
    return enc, counter


def _reference(enc, batch):
    """Rows and vectors by the public presence_groups (the grouping the predict job uses), then sorted."""
    from aion_fast.embedding import embed

    tokens, present, holes = encoder_mod.model_inputs(enc.codecs, batch, enc.device)
    rows, vectors = [], []
    for r, group_tokens, input_mask in encoder_mod.presence_groups(tokens, present, holes):
        rows.append(r)
        vectors.append(embed(None, group_tokens, input_mask=input_mask))
    rows = torch.cat(rows)
    order = torch.argsort(rows)
    return rows[order].numpy(), torch.cat(vectors)[order]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_at_most_one_host_sync_per_batch(encoder, seed):
    enc, counter = encoder
    batch = _batch(40, seed)
    originals = {name: getattr(torch.Tensor, name) for name in HOST_METHODS}

    def counting(name):
        def counted(self, *args, **kwargs):
            if counter.active:
                counter.calls.append(f"Tensor.{name}")
            return originals[name](self, *args, **kwargs)

        return counted

    try:
        for name in HOST_METHODS:
            setattr(torch.Tensor, name, counting(name))
        with counter:
            rows, vectors = enc(batch)
    finally:
        for name, method in originals.items():
            setattr(torch.Tensor, name, method)
    assert len(counter.calls) <= 1, counter.calls
    want_rows, want_vectors = _reference(enc, batch)
    assert np.array_equal(rows, want_rows) and rows.dtype == np.int64
    assert torch.equal(vectors, want_vectors)
    present = np.zeros(batch.size, dtype=bool)
    for part in batch.parts:
        present[part.rows] = True
    assert np.array_equal(rows, np.flatnonzero(present))


def test_groups_match_the_presence_patterns(encoder):
    """Each group is one multi-token pattern; one-token keys and catalog holes go to input_mask."""
    enc, _ = encoder
    batch = _batch(30, 5)
    tokens, present, holes = encoder_mod.model_inputs(enc.codecs, batch, enc.device)
    seen = []
    for rows, group_tokens, input_mask in encoder_mod.presence_groups(tokens, present, holes):
        r = rows.numpy()
        seen.extend(r.tolist())
        for key in ("tok_image", "tok_spectrum_desi"):
            has = present[key][rows]
            assert bool(has.all()) == (key in group_tokens) and (bool(has.all()) or not bool(has.any()))
        for key in ("tok_z", "tok_ebv"):
            has = present[key][rows]
            assert (key in group_tokens) == bool(has.any())
            if key in group_tokens:
                assert (key in (input_mask or {})) == (not bool(has.all()))
                if input_mask and key in input_mask:
                    assert torch.equal(input_mask[key][:, 0], ~has)
        catalog = LegacySurveyCatalog.token_key
        if catalog in group_tokens:
            assert bool(input_mask[catalog][:, -1].all())  # the empty slot
            assert torch.equal(input_mask[catalog][:, 0], ~present[catalog][rows])
    assert sorted(seen) == np.flatnonzero(np.stack([v.numpy() for v in present.values()]).any(0)).tolist()
