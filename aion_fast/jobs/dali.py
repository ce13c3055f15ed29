r"""``--loader dali``: image crop and preprocessing in an NVIDIA DALI pipeline (on the GPU when one is present).

The HDF5 rows are read and checked by :func:`~aion_fast.data.mmu.prepare_rows` as in the default loader (band
order, masks, NaN at bad pixels set to 0, all on host views of the central window). The image stamps of one survey
then go through one DALI pipeline (``fn.external_source``) that does every step of the image codec's preprocessing
(:func:`aion_fast.ops.image_preprocess`), each as one float32 DALI operation in the codec's order:

1. ``fn.slice``: the central 96x96 window (:func:`~aion_fast.data.mmu.crop_window`);
2. per-band clip ``min(max(x, -m_b), m_b)`` (``dali.math.max`` / ``min`` with a (C, 1, 1) constant);
3. HSC zero-point rescale ``x / s`` (Legacy Survey: none);
4. range compression ``((asinh(x / alpha)) * alpha) * kappa`` (``dali.math.asinh``);
5. placement of the C bands in the 9-band layout (``fn.cat`` of band slices and zero planes, absent bands 0) and
   ``fn.transpose`` to channels last.

The outputs, the cropped flux (n, C, 96, 96) and the codec input (n, 96, 96, 9), equal the default loader's crop
and ``image_preprocess`` of it bit for bit (tested in DALI's CPU mode); the job then enters the image codec after
its preprocessing (:meth:`aion_fast.codecs.image.ImageCodec.encode_preprocessed`). Spectra and scalars are read as in
the default loader. DALI is imported only here; without ``nvidia-dali`` the loader raises a ``ValueError`` saying
how to install it.

Execution: asynchronous and pipelined, ``PREFETCH_DEPTH`` iterations in flight per pipeline (:class:`_Stream`: DALI
runs its first ``depth`` fed chunks at once, then one per fed chunk, so a chunk's outputs are read ``depth - 1``
chunks later, or at :meth:`DaliImagePipeline.flush`). In ``deferred`` mode (the job's loader, see
:func:`in_order`) a call returns the output tensors at once and DALI writes them while the next batches are read;
the loader hands a batch on once its outputs are written. The reading itself (HDF5 rows, band order, masks, the
same checks as the default loader in :func:`~aion_fast.data.mmu.prepare_rows`) runs on the thread that iterates the
loader: the job's prefetch thread on CUDA (:class:`aion_fast.jobs.pipeline.Prefetcher`), not the main thread.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from aion_fast.codecs.preprocessing import CROP_SIZE, zeropoint_scale
from aion_fast.data.mmu import crop_window
from aion_fast.modalities import BAND_CLAMP_MAX, BAND_TO_INDEX

__all__ = ["PREFETCH_DEPTH", "DaliImagePipeline", "dali_available", "in_order"]

#: DALI iterations in flight per pipeline (its ``prefetch_queue_depth``).
PREFETCH_DEPTH = 2

#: Channels of the image codec's multi-survey layout.
_NUM_BANDS = max(BAND_TO_INDEX.values()) + 1


def dali_available() -> bool:
    """True when ``nvidia.dali`` can be imported."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


class DaliImagePipeline:
    """Crop and preprocessing of image stamps with DALI (see the module docstring).

    Args:
        batch_size: the largest number of stamps per DALI run (more are split).
        device: ``"cuda..."`` runs the operators on that GPU and returns CUDA tensors; anything else runs DALI's CPU
            operators (``device_id=None``) and returns CPU tensors.
        num_threads: DALI CPU threads.
        range_compression_factor: :math:`\\alpha` of the arcsinh compression (the image codec's).
        mult_factor: :math:`\\kappa` (the image codec's).
        deferred: calls return the output tensors before DALI has written them (the loader's mode, see
            :func:`in_order`); otherwise each call flushes and returns them written.
        depth: DALI iterations in flight per pipeline (>= 1).

    Attributes:
        factors: ``(range_compression_factor, mult_factor)``; the job uses the outputs only with a codec that has
            the same ones (else the codec preprocesses the cropped flux itself).
    """

    def __init__(self, batch_size: int, device: str = "cpu", num_threads: int = 2,
                 range_compression_factor: float = 0.01, mult_factor: float = 10.0, deferred: bool = False,
                 depth: int = PREFETCH_DEPTH):  # fmt: skip
        if not dali_available():
            raise ValueError(
                "--loader dali needs NVIDIA DALI: pip install nvidia-dali-cuda130 (or nvidia-dali-cuda120 for CUDA "
                "12); or use --loader torch."
            )
        self.gpu = torch.device(device).type == "cuda"
        self.device_id = (torch.device(device).index or 0) if self.gpu else None
        self.batch_size = int(batch_size)
        self.num_threads = num_threads
        self.factors = (float(range_compression_factor), float(mult_factor))
        self.deferred = bool(deferred)
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"DaliImagePipeline: depth={depth!r} must be an integer >= 1")
        self.depth = depth
        self._streams: dict[tuple, _Stream] = {}

    def _pipeline(self, height: int, width: int, bands: tuple[str, ...]):
        import nvidia.dali.math as dmath
        from nvidia.dali import fn, pipeline_def, types

        top, left = crop_window(height, width)
        bounds = np.array([BAND_CLAMP_MAX[b] for b in bands], dtype=np.float32).reshape(-1, 1, 1)
        channels = [BAND_TO_INDEX[b] for b in bands]
        scale = zeropoint_scale(bands[0].split("-")[0])
        alpha, kappa = (np.float32(f) for f in self.factors)

        @pipeline_def(batch_size=self.batch_size, num_threads=self.num_threads, device_id=self.device_id,
                      exec_async=True, exec_pipelined=True, prefetch_queue_depth=self.depth)  # fmt: skip
        def preprocess_pipeline():
            x = fn.external_source(name="flux", layout="CHW", dtype=types.FLOAT)
            if self.gpu:
                x = x.gpu()
            cropped = fn.slice(x, start=[top, left], shape=[CROP_SIZE, CROP_SIZE], axis_names="HW")
            limit = types.Constant(bounds)
            y = dmath.min(dmath.max(cropped, -limit), limit)
            if scale != 1.0:
                y = y / types.Constant(np.float32(scale))
            y = dmath.asinh(y / types.Constant(alpha)) * types.Constant(alpha) * types.Constant(kappa)
            planes = []
            for channel in range(_NUM_BANDS):
                if channel in channels:
                    band = channels.index(channel)
                    planes.append(y[band : band + 1])
                else:
                    zero = fn.constant(fdata=0.0, shape=[1, CROP_SIZE, CROP_SIZE], dtype=types.FLOAT)
                    planes.append(zero.gpu() if self.gpu else zero)
            placed = fn.transpose(fn.cat(*planes, axis=0), perm=[1, 2, 0])
            return cropped, placed

        pipe = preprocess_pipeline()
        pipe.build()
        return pipe

    def _write(self, outputs: Sequence[Any], targets: Sequence[torch.Tensor]) -> None:
        """Copies one iteration's DALI outputs into ``targets``.

        On a GPU the copy is blocking (``feed_ndarray`` without a stream): DALI may reuse an output buffer for a later
        iteration once the next outputs are taken, so the copy must be done by then; it blocks the loader's
        thread, not the one that encodes.
        """
        for out, target in zip(outputs, targets, strict=True):
            dense = out.as_tensor()
            if not self.gpu:
                target.copy_(torch.from_numpy(np.array(dense)))
                continue
            from nvidia.dali.plugin.pytorch import feed_ndarray

            with torch.cuda.device(self.device_id):
                feed_ndarray(dense, target)

    def _empty(self, shape: tuple[int, ...]) -> torch.Tensor:
        device = torch.device("cuda", self.device_id) if self.gpu else torch.device("cpu")
        return torch.empty(shape, dtype=torch.float32, device=device)

    def __call__(self, stamps: Sequence[np.ndarray], bands: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Crops and preprocesses one survey's stamps.

        Args:
            stamps: n arrays (C, H, W) float32, channels in the codec's band order, finite (bad pixels cleaned).
            bands: the C band names (one survey's, codec order), e.g. ``["DES-G", "DES-R", "DES-I", "DES-Z"]``.

        Returns:
            ``cropped``: (n, C, 96, 96) float32; ``preprocessed``: (n, 96, 96, 9) float32 image-codec input.
            CUDA tensors when the pipeline runs on a GPU. ``deferred``: written once :meth:`done` says so.
        """
        if not stamps:
            raise ValueError("DaliImagePipeline: no stamps given; call it with at least one (C, H, W) image.")
        shape = stamps[0].shape
        if len(shape) != 3 or shape[0] != len(bands) or any(s.shape != shape for s in stamps):
            raise ValueError(
                f"DaliImagePipeline: stamps must share one (C, H, W) shape with C = {len(bands)} bands, got "
                f"{sorted({tuple(s.shape) for s in stamps})}; split them by survey and stamp size."
            )
        key = (*shape[1:], tuple(bands))
        if key not in self._streams:
            self._streams[key] = _Stream(self._pipeline(shape[1], shape[2], tuple(bands)), self.depth, self._write)
        stream = self._streams[key]
        cropped = self._empty((len(stamps), len(bands), CROP_SIZE, CROP_SIZE))
        preprocessed = self._empty((len(stamps), CROP_SIZE, CROP_SIZE, _NUM_BANDS))
        for start in range(0, len(stamps), self.batch_size):
            stop = start + self.batch_size
            chunk = [np.ascontiguousarray(s, dtype=np.float32) for s in stamps[start:stop]]
            stream.submit(chunk, (cropped[start:stop], preprocessed[start:stop]))
        if not self.deferred:
            self.flush()
        return cropped, preprocessed

    def ticket(self) -> dict[tuple, int]:
        """Chunks submitted so far per pipeline: the outputs of every call made before are written once
        :meth:`done` is true for this ticket."""
        return {key: stream.submitted for key, stream in self._streams.items()}

    def done(self, ticket: dict[tuple, int]) -> bool:
        """Whether every chunk counted in ``ticket`` has its outputs written."""
        return all(self._streams[key].written >= n for key, n in ticket.items())

    def flush(self) -> None:
        """Runs every pipeline until all submitted chunks have their outputs written."""
        for stream in self._streams.values():
            stream.flush()


class _Stream:
    """Feeds one DALI pipeline (``feed_input`` / ``schedule_run`` / ``outputs``) with ``depth`` iterations in flight.

    DALI's pipelined executor runs ``depth`` iterations at its first ``schedule_run`` (it needs that many chunks
    fed), then one per call. Outputs come back in feeding order and go to the targets given with each chunk. A
    flush before the first run pads with repeats of the last chunk (their outputs are dropped).
    """

    def __init__(self, pipe: Any, depth: int, write: Callable[[Sequence[Any], Any], None]):
        self.pipe, self.depth, self.write = pipe, depth, write
        self.waiting: deque = deque()  # targets of chunks fed, outputs not read yet (None: padding)
        self.primed = False
        self.in_flight = 0  # iterations scheduled, outputs not read
        self.submitted = self.written = 0
        self._last: list[np.ndarray] | None = None

    def submit(self, chunk: list[np.ndarray], targets: Any) -> None:
        self._feed(chunk, targets)
        self.submitted += 1
        if self.primed:
            self.pipe.schedule_run()
            self.in_flight += 1
        elif len(self.waiting) == self.depth:
            self._prime()
        while self.in_flight >= self.depth:  # keep depth - 1 iterations running while the caller reads on
            self._take()

    def flush(self) -> None:
        if not self.primed and self.waiting:
            while len(self.waiting) < self.depth:
                self._feed(self._last, None)
            self._prime()
        while self.in_flight:
            self._take()

    def _feed(self, chunk: list[np.ndarray], targets: Any) -> None:
        self.pipe.feed_input("flux", chunk)
        self.waiting.append(targets)
        self._last = chunk

    def _prime(self) -> None:
        self.pipe.schedule_run()
        self.primed = True
        self.in_flight = self.depth

    def _take(self) -> None:
        outputs = self.pipe.outputs()
        self.in_flight -= 1
        targets = self.waiting.popleft()
        if targets is not None:
            self.write(outputs, targets)
            self.written += 1


def in_order(batches: Iterable[Any], pipeline: DaliImagePipeline) -> Iterator[Any]:
    """``batches`` (made with a ``deferred`` pipeline) in order, each once its DALI outputs are written.

    A batch waits while the next ones are read and fed (DALI works on up to ``depth`` chunks per pipeline meanwhile);
    the last ones are released by a flush when ``batches`` ends.
    """
    held: deque = deque()
    for batch in batches:
        held.append((batch, pipeline.ticket()))
        while held and pipeline.done(held[0][1]):
            yield held.popleft()[0]
    pipeline.flush()
    for batch, _ in held:
        yield batch
