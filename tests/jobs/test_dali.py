"""The DALI loader's feeding logic (aion_fast.jobs.dali): chunks in flight, outputs in order, batches released once
written. Tested against a stand-in that enforces DALI's pipelined-executor rules, and against DALI itself in its CPU
mode when ``nvidia-dali`` is installed."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
import torch

from aion_fast.jobs.dali import _Stream, dali_available, in_order


class FakePipe:
    """DALI's rules for ``feed_input``/``schedule_run``/``outputs`` with ``prefetch_queue_depth=depth``: the first
    ``schedule_run`` runs ``depth`` iterations (each needs a chunk fed), later ones one; ``outputs`` returns the
    oldest finished iteration. An iteration doubles its chunk."""

    def __init__(self, depth: int):
        self.depth, self.first = depth, True
        self.fed: deque = deque()
        self.done: deque = deque()
        self.max_in_flight = 0

    def feed_input(self, name, chunk):
        assert name == "flux"
        self.fed.append([np.array(c) for c in chunk])

    def schedule_run(self):
        runs = self.depth if self.first else 1
        if len(self.fed) < runs:
            raise IndexError("Attempted to peek the data batch that doesn't exist")
        self.first = False
        for _ in range(runs):
            self.done.append([np.stack(self.fed.popleft()) * 2])
        self.max_in_flight = max(self.max_in_flight, len(self.done))

    def outputs(self):
        if not self.done:
            raise RuntimeError("no iteration scheduled")
        return [type("Out", (), {"as_tensor": lambda self, a=a: a})() for a in self.done.popleft()]


def _write(outputs, targets):
    targets[0].copy_(torch.from_numpy(np.array(outputs[0].as_tensor())))


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("chunks", [1, 2, 5])
def test_stream_writes_every_chunk_in_order_with_depth_in_flight(depth, chunks):
    pipe = FakePipe(depth)
    stream = _Stream(pipe, depth, _write)
    targets = [torch.full((2, 3), -1.0) for _ in range(chunks)]
    for i, target in enumerate(targets):
        stream.submit([np.full(3, i, np.float32), np.full(3, 10 + i, np.float32)], (target,))
        assert stream.written == max(0, i + 2 - depth) if stream.primed else stream.written == 0
        assert stream.in_flight <= depth - 1 or depth == 1
    stream.flush()
    assert stream.written == stream.submitted == chunks and stream.in_flight == 0
    for i, target in enumerate(targets):
        assert torch.equal(target, torch.tensor([[2.0 * i] * 3, [2.0 * (10 + i)] * 3]))
    assert pipe.max_in_flight <= depth and not pipe.fed and not pipe.done
    # the stream goes on after a flush: one iteration per chunk from now on
    late = torch.zeros(1, 3)
    stream.submit([np.full(3, 7, np.float32)], (late,))
    stream.flush()
    assert torch.equal(late, torch.full((1, 3), 14.0))


class FakePipeline:
    """The ticket/done/flush side of DaliImagePipeline over one stream: each batch submits one chunk."""

    def __init__(self, depth: int):
        self.stream = _Stream(FakePipe(depth), depth, _write)

    def make(self, n: int):
        for i in range(n):
            target = torch.full((1, 2), -1.0)
            self.stream.submit([np.full(2, i, np.float32)], (target,))
            yield i, target

    def ticket(self):
        return {"key": self.stream.submitted}

    def done(self, ticket):
        return self.stream.written >= ticket["key"]

    def flush(self):
        self.stream.flush()


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_in_order_releases_each_batch_once_written(depth):
    pipeline = FakePipeline(depth)
    released = []
    for i, target in in_order(pipeline.make(6), pipeline):
        assert torch.equal(target, torch.full((1, 2), 2.0 * i))  # written before it is handed on
        released.append(i)
        # while batch i is in use, DALI already holds the next depth - 1 batches' chunks
        assert pipeline.stream.submitted == min(6, i + depth)
    assert released == list(range(6))


@pytest.mark.skipif(not dali_available(), reason="nvidia-dali is not installed (pip install nvidia-dali-cuda130)")
@pytest.mark.parametrize("depth", [1, 3])
def test_deferred_dali_cpu_calls_equal_synchronous_ones(depth):
    """DALI's CPU mode, several surveys' pipelines interleaved: deferred outputs equal the synchronous ones."""
    from aion_fast.jobs.dali import DaliImagePipeline

    rng = np.random.default_rng(0)
    calls = []
    for i in range(5):
        bands = ["DES-G", "DES-R", "DES-I", "DES-Z"] if i % 2 else ["HSC-G", "HSC-R", "HSC-I", "HSC-Z", "HSC-Y"]
        size = 100 if i % 2 else 120
        calls.append(([(rng.normal(size=(len(bands), size, size)) * 20).astype(np.float32) for _ in range(3)], bands))
    sync = DaliImagePipeline(batch_size=2)
    want = [sync(stamps, bands) for stamps, bands in calls]
    deferred = DaliImagePipeline(batch_size=2, deferred=True, depth=depth)
    tickets, got = [], []
    for stamps, bands in calls:
        got.append(deferred(stamps, bands))
        tickets.append(deferred.ticket())
    deferred.flush()
    assert all(deferred.done(t) for t in tickets)
    for (gc, gp), (wc, wp) in zip(got, want, strict=True):
        assert torch.equal(gc, wc) and torch.equal(gp, wp)
