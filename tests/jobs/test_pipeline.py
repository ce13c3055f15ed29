"""Prefetcher and BackgroundWriter (aion_fast.jobs.pipeline) on a CPU device with real threads."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
import torch

from aion_fast.jobs.pipeline import BackgroundWriter, Prefetcher, map_tensors
from aion_fast.modalities import LegacySurveyFluxG


def _batches(n, log=None, delay=0.0):
    for i in range(n):
        if delay:
            time.sleep(delay)
        if log is not None:
            log.append(i)
        yield {"x": torch.full((3, 2), float(i)), "meta": [i, torch.arange(i + 1)], "name": f"b{i}"}


def test_prefetcher_yields_every_batch_in_order_with_values_unchanged():
    with Prefetcher(_batches(7), "cpu", depth=2) as batches:
        out = list(batches)
    assert [b["name"] for b in out] == [f"b{i}" for i in range(7)]
    for i, b in enumerate(out):
        assert torch.equal(b["x"], torch.full((3, 2), float(i)))
        assert b["meta"][0] == i and torch.equal(b["meta"][1], torch.arange(i + 1))


def test_prefetcher_runs_ahead_by_at_most_depth_batches():
    log: list[int] = []
    with Prefetcher(_batches(20, log), "cpu", depth=3) as batches:
        first = next(batches)
        time.sleep(0.3)  # the thread fills the queue and blocks
        # taken: 1; queued: 3; one more read by the thread, waiting to be queued
        assert first["name"] == "b0" and len(log) <= 1 + 3 + 1, log
        assert len(log) >= 1 + 3 - 1, log  # and it did run ahead


def test_prefetcher_overlaps_preparation_with_compute():
    """Source and consumer each sleep 40 ms per batch: in parallel ~8 x 40 ms, not 8 x 80 ms."""
    start = time.perf_counter()
    with Prefetcher(_batches(8, delay=0.04), "cpu", depth=2) as batches:
        for _ in batches:
            time.sleep(0.04)
    elapsed = time.perf_counter() - start
    assert elapsed < 8 * 0.08 * 0.8, elapsed


def test_prefetcher_reraises_source_errors_in_the_consumer():
    def failing():
        yield {"x": torch.zeros(1)}
        raise OSError("disk gone")

    batches = Prefetcher(failing(), "cpu")
    assert torch.equal(next(batches)["x"], torch.zeros(1))
    with pytest.raises(OSError, match="disk gone"):
        next(batches)
    with pytest.raises(StopIteration):
        next(batches)


def test_prefetcher_early_close_stops_the_thread():
    log: list[int] = []
    batches = Prefetcher(_batches(1000, log), "cpu", depth=2)
    next(batches)
    batches.close()
    assert not batches._thread.is_alive()
    assert len(log) < 10


def test_prefetcher_moves_modality_dataclasses_and_rejects_bad_depth():
    flux = LegacySurveyFluxG(value=torch.rand(4))
    (moved,) = list(Prefetcher([flux], "cpu"))
    assert isinstance(moved, LegacySurveyFluxG) and torch.equal(moved.value, flux.value)
    with pytest.raises(ValueError, match="depth"):
        Prefetcher([], "cpu", depth=0)


def test_map_tensors_keeps_structure():
    @dataclasses.dataclass
    class Pair:
        a: torch.Tensor
        b: str

    out = map_tensors({"p": Pair(torch.ones(2), "k"), "t": (torch.zeros(1), 3)}, lambda t: t + 1)
    assert out["p"].b == "k" and torch.equal(out["p"].a, torch.full((2,), 2.0))
    assert isinstance(out["t"], tuple) and out["t"][1] == 3 and torch.equal(out["t"][0], torch.ones(1))


def test_background_writer_runs_in_order_off_the_main_thread():
    done, threads = [], set()

    def write(i, t):
        time.sleep(0.01)
        threads.add(threading.current_thread().name)
        done.append((i, float(t.sum())))

    start = time.perf_counter()
    with BackgroundWriter(max_pending=2) as writer:
        for i in range(6):
            writer.submit(write, i, torch.full((2,), float(i)))
        writer.submit_from_device(lambda batch: done.append(("dev", float(batch["e"].sum()))), {"e": torch.ones(3)})
        submitted = time.perf_counter() - start
    assert done == [(i, 2.0 * i) for i in range(6)] + [("dev", 3.0)]
    assert threads == {"aion_fast-writer"}
    assert submitted < 6 * 0.01 + 0.05  # submit returned before most writes ran (at most 2 pending)


def test_background_writer_reraises_the_first_error():
    writer = BackgroundWriter()
    writer.submit(lambda: (_ for _ in ()).throw(OSError("quota")))
    time.sleep(0.05)
    with pytest.raises(OSError, match="quota"):
        writer.submit(lambda: None)
    writer.close()
    writer = BackgroundWriter()
    writer.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        writer.close()
    with pytest.raises(RuntimeError, match="after close"):
        writer.submit(lambda: None)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_prefetcher_and_writer_on_cuda():
    batches = [{"x": torch.randn(256, 1024), "i": i} for i in range(5)]
    out = []
    with Prefetcher(batches, "cuda", depth=2) as it, BackgroundWriter() as writer:
        for b in it:
            assert b["x"].is_cuda
            y = b["x"] * 2
            writer.submit_from_device(lambda h, i=b["i"]: out.append((i, h)), y)
    assert [i for i, _ in out] == list(range(5))
    for (i, h), b in zip(out, batches, strict=True):
        assert not h.is_cuda and torch.equal(h, b["x"] * 2)
