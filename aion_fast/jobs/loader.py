"""Input side of ``aion-fast encode``: row ranges of the shards read and turned into modality batches.

The default loader is a ``DataLoader`` whose worker processes read and prepare row ranges with
:func:`~aion_fast.data.mmu.prepare_rows` (pinned memory on CUDA); ``--loader dali`` reads on the thread that
iterates the loader (the job's prefetch thread on CUDA) and runs the image preprocessing in asynchronous, pipelined
DALI pipelines (:mod:`aion_fast.jobs.dali`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from aion_fast.data.columns import Selection
from aion_fast.data.mmu import ObjectBatch, prepare_rows

__all__ = ["AUTO_WORKERS_MIN_BATCHES", "Task", "auto_workers", "batches", "open_input"]

#: ``workers=None`` reads in the main process when the job has at most this many batches: forking a DataLoader
#: worker costs more than it can overlap.
AUTO_WORKERS_MIN_BATCHES = 3

#: ``(input path, first row, stop row)``.
Task = tuple[str, int, int]


def open_input(path: str | os.PathLike) -> Any:
    """Opens one input with the format its content says (see :mod:`aion_fast.data.formats`)."""
    from aion_fast.data.formats import open_source

    return open_source(path)


class _Tasks(torch.utils.data.IterableDataset):
    """Row ranges of several shards; worker ``w`` of ``W`` prepares tasks ``w, w + W, ...``.

    The DataLoader collects from its workers round-robin, so batches arrive in task order.
    """

    def __init__(self, tasks: Sequence[Task], selections: Mapping[str, Selection]):
        self.tasks = list(tasks)
        self.selections = dict(selections)

    def __iter__(self) -> Iterator[ObjectBatch]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        yield from _prepared(self.tasks[worker::workers], self.selections)


def _prepared(
    tasks: Sequence[Task], selections: Mapping[str, Selection], pipeline: Any = None
) -> Iterator[ObjectBatch]:
    """Prepares tasks in order, keeping one input open at a time."""
    opened: Any = None
    try:
        for path, start, stop in tasks:
            if opened is None or opened.path != path:
                if opened is not None:
                    opened.close()
                opened = open_input(path)
            yield prepare_rows(opened, start, stop, selections[path], image_pipeline=pipeline)
    finally:
        if opened is not None:
            opened.close()


def batches(
    tasks: list[Task], selections: Mapping[str, Selection], *, loader: str, batch_size: int, device: str, workers: int
) -> Iterator[ObjectBatch]:
    """Prepared batches of ``tasks`` in task order."""
    if loader == "dali":  # DALI writes a batch's images while the next batches are read (jobs.dali.in_order)
        from aion_fast.jobs.dali import DaliImagePipeline, in_order

        pipeline = DaliImagePipeline(batch_size, device=device, deferred=True)
        yield from in_order(_prepared(tasks, selections, pipeline), pipeline)
        return
    yield from torch.utils.data.DataLoader(
        _Tasks(tasks, selections),
        batch_size=None,
        num_workers=workers,
        pin_memory=torch.device(device).type == "cuda",
        persistent_workers=False,
    )


def auto_workers(requested: int | None, device: str, num_tasks: int) -> int:
    """DataLoader workers: ``requested``, else 0 for jobs of a few batches, 1 on a CPU (the encoder already uses
    every core; one worker overlaps the reads) and ``min(4, cores // 4)`` on a GPU."""
    if requested is not None:
        return requested
    if num_tasks <= AUTO_WORKERS_MIN_BATCHES:
        return 0
    if torch.device(device).type == "cpu":
        return 1
    return max(1, min(4, (os.cpu_count() or 1) // 4))
