"""Keeping a GPU fed: batches prepared and copied ahead of use, results written behind it.

* :class:`Prefetcher` wraps an iterable of host batches (reading, decoding, collating: whatever the iterable does).
  A background thread takes the next batches from it while the current one computes, pins their tensors and, on
  CUDA, starts their host-to-device copies on a side stream (non-blocking, from pinned memory); the consumer's
  stream waits for a batch's copy only when it takes the batch (an event, not a host sync). On a CPU device the
  thread still overlaps preparation with compute. At most ``depth`` batches are ahead.
* :class:`BackgroundWriter` runs write calls (e.g. a Parquet row group) in order on one background thread.
  :meth:`BackgroundWriter.submit_from_device` first starts the device-to-host copies of the batch's results into
  pinned memory on the current stream; the writer thread waits for them (an event), so the main thread never
  synchronises with the GPU for a write.

A batch is any nesting of dicts, lists, tuples and dataclasses (modality batches) with tensors at the leaves;
other leaves pass through unchanged. Exceptions of the source, the copy or a write are re-raised in the consumer.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

__all__ = ["BackgroundWriter", "Prefetcher", "map_tensors"]

_DONE = object()


def map_tensors(batch: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``batch`` with ``fn`` applied to every tensor (dicts, lists, tuples, dataclasses; other leaves unchanged)."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, dict):
        return type(batch)((k, map_tensors(v, fn)) for k, v in batch.items())
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(map_tensors(v, fn) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(map_tensors(v, fn) for v in batch)
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        changes = {f.name: map_tensors(getattr(batch, f.name), fn) for f in dataclasses.fields(batch) if f.init}
        return dataclasses.replace(batch, **changes)
    return batch


def _for_each_tensor(batch: Any, fn: Callable[[torch.Tensor], None]) -> None:
    def visit(t: torch.Tensor) -> torch.Tensor:
        fn(t)
        return t

    map_tensors(batch, visit)


class Prefetcher:
    """Iterates ``batches`` with each batch's tensors already on ``device``, prepared ``depth`` batches ahead.

    Args:
        batches: host batches (the iterable runs on the background thread).
        device: where the consumer computes.
        depth: batches prepared ahead of the one in use (>= 1).
        pin_memory: pin host tensors before a CUDA copy (copies from pageable memory are synchronous).

    Use as an iterator, ideally in a ``with`` block (or call :meth:`close`) so an early exit stops the thread.
    """

    def __init__(self, batches: Iterable[Any], device: torch.device | str, depth: int = 2, pin_memory: bool = True):
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"Prefetcher: depth={depth!r} must be an integer >= 1")
        self.device = torch.device(device)
        self.pin_memory = pin_memory and self.device.type == "cuda"
        self._source = iter(batches)
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._thread = threading.Thread(target=self._work, name="aion_fast-prefetch", daemon=True)
        self._thread.start()

    def _to_device(self, batch: Any) -> tuple[Any, Any]:
        if self.device.type == "cpu":
            return map_tensors(batch, lambda t: t.to(self.device)), None
        if self.pin_memory:
            batch = map_tensors(batch, lambda t: t.pin_memory() if t.device.type == "cpu" else t)
        with torch.cuda.device(self.device), torch.cuda.stream(self._stream):  # this thread's own device/stream
            moved = map_tensors(batch, lambda t: t.to(self.device, non_blocking=True))
            event = torch.cuda.Event()
            event.record(self._stream)
        return moved, event

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            for batch in self._source:
                if self._stop.is_set() or not self._put(("batch", *self._to_device(batch))):
                    return
            self._put(("done", None, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put(("error", exc, None))

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self._stop.is_set():
            raise StopIteration
        kind, batch, event = self._queue.get()
        if kind == "done":
            self.close()
            raise StopIteration
        if kind == "error":
            self.close()
            raise batch
        if event is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(event)  # the GPU waits for the copy, the host does not
            _for_each_tensor(batch, lambda t: t.record_stream(current) if t.device.type == "cuda" else None)
        return batch

    def close(self) -> None:
        """Stops the background thread (idempotent); batches prepared but not taken are dropped."""
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class BackgroundWriter:
    """Runs write calls in submission order on one background thread.

    Args:
        max_pending: calls queued at most; :meth:`submit` blocks beyond (bounds the memory of pending results).

    The first exception of a call is re-raised by the next :meth:`submit` or by :meth:`close`; later calls are then
    skipped. Use in a ``with`` block: leaving it waits for every pending write.
    """

    def __init__(self, max_pending: int = 4):
        if not isinstance(max_pending, int) or max_pending < 1:
            raise ValueError(f"BackgroundWriter: max_pending={max_pending!r} must be an integer >= 1")
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="aion_fast-writer", daemon=True)
        self._thread.start()
        self._closed = False

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            fn, args, event = item
            if self._error is not None:
                continue
            try:
                if event is not None:
                    event.synchronize()  # this thread waits for the device-to-host copies, not the main one
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the submitting thread
                self._error = exc

    def _raise_pending_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queues ``fn(*args)``; raises the error of an earlier call, if any."""
        if self._closed:
            raise RuntimeError("BackgroundWriter: submit after close")
        self._raise_pending_error()
        self._queue.put((fn, args, None))

    def submit_from_device(self, fn: Callable[..., Any], batch: Any) -> None:
        """Queues ``fn(host_batch)``: ``batch``'s device tensors are copied into pinned host memory first.

        The copies are issued on the current stream (after the work that produced them) without waiting; the
        writer thread synchronises on their event before calling ``fn``. CPU tensors are passed as they are.
        """
        event = None
        if any_cuda(batch):
            host = map_tensors(batch, _pinned_copy)
            event = torch.cuda.Event()
            event.record()
        else:
            host = batch
        if self._closed:
            raise RuntimeError("BackgroundWriter: submit after close")
        self._raise_pending_error()
        self._queue.put((fn, (host,), event))

    def close(self) -> None:
        """Waits for every queued call; raises the first error of any of them."""
        if not self._closed:
            self._closed = True
            self._queue.put(_DONE)
            self._thread.join()
        self._raise_pending_error()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.close()
        else:  # already failing: wait, but do not mask the original exception
            try:
                self.close()
            except BaseException:  # noqa: BLE001
                pass


def any_cuda(batch: Any) -> bool:
    """Whether ``batch`` holds a CUDA tensor."""
    found = []
    _for_each_tensor(batch, lambda t: found.append(True) if t.device.type == "cuda" else None)
    return bool(found)


def _pinned_copy(t: torch.Tensor) -> torch.Tensor:
    if t.device.type != "cuda":
        return t
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    host.copy_(t, non_blocking=True)
    return host
