"""``aion-fast encode``: Multimodal Universe HDF5 files in, one Parquet file of embeddings per input file out.

Pipeline: each rank takes its shards (:func:`~aion_fast.jobs.manifest.shards_of_rank`), skips those already
complete, and streams row ranges of the rest through a ``DataLoader`` (worker processes read and preprocess with
:func:`~aion_fast.data.mmu.prepare_rows`; pinned memory on CUDA) or through the DALI loader. The main process
tokenizes each modality batch on the device, then embeds objects with :func:`aion_fast.embed`:

* objects are grouped by which multi-token modalities (image, spectrum, Gaia XP) they have, so no object is
  padded with hundreds of absent image or spectrum tokens;
* within a group, absent single-token modalities (a NaN flux) are given to ``embed`` as ``input_mask`` and
  excluded from the mean.

Tokenization batches beyond the codec's own call: image parts preprocessed by the DALI pipeline enter the image
codec after its preprocessing step, and spectra of several lengths (SDSS) are resampled per length but share one
pass of the spectrum codec's network (:meth:`BatchEncoder.tokens`); both give the tokens ``CodecManager.encode``
gives (tested).

Output and resumption: a shard's rows are collected in memory and, whenever at least ``row_group_rows`` are
pending at a batch boundary, written as a part file ``_parts/<shard>.partNNNNN.parquet`` followed by the shard's
progress record (``_parts/<shard>.progress.json``: input rows done, the part files and their ledger rows). When
the shard is complete, the parts and the rest are joined into ``<shard>.parquet`` (written under a temporary name,
in row groups of exactly ``row_group_rows`` rows, then renamed), its ledger and its record (``_parts/<shard>.json``)
are written, and the parts are deleted. Re-running the same command skips shards whose record matches the job and
resumes the others after their last recorded part (same batch boundaries, so the same embeddings); a part file
without a record entry is simply rewritten. The output equals an uninterrupted run's (tested with SIGKILL both
between shards and inside one).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aion_fast.data.mmu import MODALITY_GROUPS, MMUFile, ObjectBatch, Part, prepare_rows, row_ranges
from aion_fast.jobs.manifest import (
    ERROR_COLUMNS,
    atomic_write_text,
    cached_checkpoint_digest,
    distributed_rank,
    file_sha256,
    merge_manifest,
    shard_names,
    shards_of_rank,
)

__all__ = ["BatchEncoder", "EncodeOptions", "register", "run_encode"]

logger = logging.getLogger(__name__)

#: Rows per Parquet row group (and the least rows per resumable part file).
ROW_GROUP_ROWS = 4096
DEFAULT_GROUPS = ("image", "spectrum", "photometry", "gaia")
#: ``workers=None`` reads in the main process when the job has at most this many batches: forking a DataLoader
#: worker (~0.1 s) costs more than it can overlap.
AUTO_WORKERS_MIN_BATCHES = 3


@dataclass(frozen=True)
class EncodeOptions:
    """What one ``aion-fast encode`` run does (everything but the inputs and the output folder).

    Attributes:
        model: checkpoint directory or hub id; None = the bundled demo model (aion_fast.demo.default_model).
        modalities: groups of :data:`~aion_fast.data.mmu.MODALITY_GROUPS` to use.
        batch_size: objects per device batch.
        device: torch device for codecs and transformer.
        loader: ``"torch"`` (DataLoader) or ``"dali"``.
        workers: DataLoader worker processes (0 = read in the main process); None = automatic: 0 for jobs of at
            most ``AUTO_WORKERS_MIN_BATCHES`` batches, else 1 on a CPU device (the encoder already uses every core;
            one worker overlaps the HDF5 reads) and ``min(4, cores // 4)`` on a GPU.
        pooling: ``"mean"`` (over each object's present tokens).
        dtype: ``"float32"`` or ``"float16"`` embeddings in the Parquet files.
        progress: show a progress bar (objects/s and ETA) on stderr.
        row_group_rows: rows per Parquet row group; also the resumption granularity inside a shard.
    """

    model: str | None = None
    modalities: tuple[str, ...] = DEFAULT_GROUPS
    batch_size: int = 256
    device: str = "cpu"
    loader: str = "torch"
    workers: int | None = None
    pooling: str = "mean"
    dtype: str = "float32"
    progress: bool = True
    row_group_rows: int = ROW_GROUP_ROWS


class BatchEncoder:
    """Tokenizes and embeds :class:`~aion_fast.data.mmu.ObjectBatch` objects with one model on one device.

    Args:
        checkpoint: directory or hub id holding the transformer and the codecs.
        device: where to run.
    """

    def __init__(self, checkpoint: str | os.PathLike, device: str | torch.device = "cpu"):
        from aion_fast.codecs import CodecManager
        from aion_fast.export.runtime import is_exported, load_for_encoding
        from aion_fast.model import AION

        self.device = torch.device(device)
        if is_exported(checkpoint):  # a directory written by `aion-fast export` (ONNX / INT8)
            self.model, self.codecs = load_for_encoding(checkpoint, self.device)
            return
        self.model = AION.from_pretrained(checkpoint, encoder_only=True).eval().to(self.device)
        self.codecs = CodecManager(repo=checkpoint, device=self.device)

    def tokens(self, batch: ObjectBatch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Tokens of every modality for the whole batch, and which objects have each.

        Reads only ``self.codecs`` and ``self.device`` (``aion_fast.train.tokenize`` calls it on its own object).
        Parts of one token key share codec calls where that leaves the tokens unchanged: spectra of several lengths
        go through one pass of the spectrum network, and image parts preprocessed by the DALI loader skip the
        codec's own preprocessing.

        Returns:
            ``tokens``: token key -> (B, T) int64, zeros for objects without the modality;
            ``present``: token key -> (B,) bool.
        """
        by_key: dict[str, list[Part]] = {}
        for part in batch.parts:
            by_key.setdefault(part.modality.token_key, []).append(part)
        tokens: dict[str, torch.Tensor] = {}
        present: dict[str, torch.Tensor] = {}
        for key, parts in by_key.items():
            for part, encoded in zip(parts, _encode_parts(self.codecs, parts)):
                encoded = encoded.to(self.device).reshape(encoded.shape[0], -1)
                rows = torch.as_tensor(part.rows, device=self.device)
                if key not in tokens:
                    tokens[key] = torch.zeros(batch.size, encoded.shape[1], dtype=torch.int64, device=self.device)
                    present[key] = torch.zeros(batch.size, dtype=torch.bool, device=self.device)
                tokens[key][rows] = encoded
                present[key][rows] = True
        return tokens, present

    def __call__(self, batch: ObjectBatch) -> tuple[np.ndarray, torch.Tensor]:
        """Embeds the objects of ``batch`` that have at least one usable modality.

        Returns:
            ``rows``: (n,) int64 positions in the batch, increasing; ``vectors``: (n, D) float32 on the CPU.
        """
        from aion_fast.embedding import embed

        tokens, present = self.tokens(batch)
        if not tokens:
            return np.zeros(0, dtype=np.int64), torch.zeros(0, self.model.config.dim)
        multi = [k for k in tokens if tokens[k].shape[1] > 1]
        single = [k for k in tokens if tokens[k].shape[1] == 1]
        any_present = torch.stack([present[k] for k in tokens]).any(dim=0).cpu()
        has_multi = {k: present[k].cpu().tolist() for k in multi}
        groups: dict[tuple[bool, ...], list[int]] = {}
        for row in torch.nonzero(any_present).flatten().tolist():
            groups.setdefault(tuple(has_multi[k][row] for k in multi), []).append(row)
        vectors = torch.empty(batch.size, self.model.config.dim)
        for pattern, group_rows in groups.items():
            rows = torch.tensor(group_rows, device=self.device)
            keys = [k for k, has in zip(multi, pattern) if has] + [k for k in single if bool(present[k][rows].any())]
            group_tokens = {k: tokens[k][rows] for k in keys}
            input_mask = {
                k: (~present[k][rows])[:, None].expand(-1, tokens[k].shape[1])
                for k in keys
                if not bool(present[k][rows].all())
            }
            vectors[rows.cpu()] = embed(self.model, group_tokens, pooling="mean", input_mask=input_mask or None).cpu()
        encoded_rows = torch.nonzero(any_present).flatten()
        return encoded_rows.numpy(), vectors[encoded_rows]


def _encode_parts(codecs: Any, parts: list[Part]) -> list[torch.Tensor]:
    """Tokens of parts sharing one token key, in part order (see :meth:`BatchEncoder.tokens`)."""
    from aion_fast.codecs.image import ImageCodec
    from aion_fast.codecs.spectrum import SpectrumCodec

    codec = codecs.codec(type(parts[0].modality))
    out: list[torch.Tensor | None] = [None] * len(parts)
    if isinstance(codec, ImageCodec):
        for i, part in enumerate(parts):
            if part.preprocessed is not None and part.preprocessed_with == _image_factors(codec):
                out[i] = codec.encode_preprocessed(part.preprocessed, len(part.modality.bands))
    if isinstance(codec, SpectrumCodec) and len(parts) > 1:
        for i, tokens in enumerate(codec.encode_batches([p.modality for p in parts])):
            out[i] = tokens
    return [t if t is not None else codecs.encode(p.modality)[p.modality.token_key] for t, p in zip(out, parts)]


def _image_factors(codec: Any) -> tuple[float, float]:
    return float(codec.range_compression_factor), float(codec.mult_factor)


class _Tasks(torch.utils.data.IterableDataset):
    """Row ranges of several shards; worker ``w`` of ``W`` prepares tasks ``w, w + W, ...``.

    The DataLoader collects from its workers round-robin, so batches arrive in task order.
    """

    def __init__(self, tasks: Sequence[tuple[str, int, int]], groups: Sequence[str]):
        self.tasks = list(tasks)
        self.groups = tuple(groups)

    def __iter__(self) -> Iterator[ObjectBatch]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        opened: dict[str, MMUFile] = {}
        try:
            for path, start, stop in self.tasks[worker::workers]:
                if path not in opened:
                    for handle in opened.values():
                        handle.close()
                    opened = {path: MMUFile(path)}
                yield prepare_rows(opened[path], start, stop, self.groups)
        finally:
            for handle in opened.values():
                handle.close()


def _batches(tasks: list[tuple[str, int, int]], options: EncodeOptions, workers: int) -> Iterator[ObjectBatch]:
    if options.loader == "dali":
        from aion_fast.jobs.dali import DaliImagePipeline

        pipeline = DaliImagePipeline(options.batch_size, device=options.device)
        opened: MMUFile | None = None
        try:
            for path, start, stop in tasks:
                if opened is None or opened.path != path:
                    if opened is not None:
                        opened.close()
                    opened = MMUFile(path)
                yield prepare_rows(opened, start, stop, options.modalities, image_pipeline=pipeline)
        finally:
            if opened is not None:
                opened.close()
        return
    loader = torch.utils.data.DataLoader(
        _Tasks(tasks, options.modalities),
        batch_size=None,
        num_workers=workers,
        pin_memory=torch.device(options.device).type == "cuda",
        persistent_workers=False,
    )
    yield from loader


def _auto_workers(options: EncodeOptions, num_tasks: int) -> int:
    if options.workers is not None:
        return options.workers
    if num_tasks <= AUTO_WORKERS_MIN_BATCHES:
        return 0
    if torch.device(options.device).type == "cpu":
        return 1
    return max(1, min(4, (os.cpu_count() or 1) // 4))


def _schema(dim: int, dtype: str, job: dict[str, Any]):
    import pyarrow as pa

    value_type = pa.float16() if dtype == "float16" else pa.float32()
    fields = [
        ("object_id", pa.string()),
        ("ra", pa.float64()),
        ("dec", pa.float64()),
        ("file", pa.string()),
        ("row", pa.int64()),
        ("modalities", pa.list_(pa.string())),
        ("embedding", pa.list_(value_type, dim)),
    ]
    return pa.schema(fields, metadata={"aion_fast.job": json.dumps(job, sort_keys=True)})


def _errors_schema():
    import pyarrow as pa

    types = {"object_id": pa.string(), "file": pa.string(), "row": pa.int64(), "modality": pa.string(),
             "reason": pa.string(), "object_encoded": pa.bool_()}  # fmt: skip
    return pa.schema([(name, types[name]) for name in ERROR_COLUMNS])


class _ShardWriter:
    """Collects one shard's rows; writes resumable part files; ``close`` joins them into ``<shard>.parquet``.

    Args:
        output: the job's output folder.
        shard: the shard's name.
        input_path: the input file (written in the ``file`` column).
        dim: embedding width.
        job: the job description (schema metadata, progress record).
        row_group_rows: rows per row group of the final file and least rows per part file.
        progress: the shard's progress record to resume from (None = start the shard afresh).
        identity: what the progress record must match to be resumed (input size and mtime, batch step).
    """

    def __init__(self, output: Path, shard: str, input_path: str, dim: int, job: dict[str, Any], row_group_rows: int,
                 progress: dict[str, Any] | None, identity: dict[str, Any]):  # fmt: skip
        self.output, self.parts_dir = output, output / "_parts"
        self.final = output / f"{shard}.parquet"
        self.shard, self.input = shard, input_path
        self.schema = _schema(dim, job["dtype"], job)
        self.row_group_rows = row_group_rows
        self.progress = progress or {"job": job, **identity, "rows_done": 0, "parts": []}
        self.pending: list[Any] = []
        self.pending_rows = 0
        self.pending_errors: list[dict[str, Any]] = []
        self.rows_done = self.progress["rows_done"]
        self.rows_written = 0

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [e for part in self.progress["parts"] for e in part["errors"]] + self.pending_errors

    def add(self, batch: ObjectBatch, rows: np.ndarray, vectors: torch.Tensor) -> None:
        """Adds the encoded ``rows`` of ``batch`` ((n,) positions, (n, D) vectors) and the batch's ledger rows."""
        import pyarrow as pa

        if batch.start != self.rows_done:
            raise RuntimeError(f"{self.input}: batch starts at row {batch.start}, expected {self.rows_done}")
        used = batch.used()
        half = self.schema.field("embedding").type.value_type == pa.float16()
        values = vectors.to(torch.float16 if half else torch.float32).numpy()
        table = pa.table(
            {
                "object_id": [batch.object_id[r] for r in rows],
                "ra": batch.ra[rows],
                "dec": batch.dec[rows],
                "file": [self.input] * len(rows),
                "row": (batch.start + rows).astype(np.int64),
                "modalities": [used[r] for r in rows],
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1]),
            },
            schema=self.schema,
        )
        self.pending.append(table)
        self.pending_rows += table.num_rows
        encoded = set(rows.tolist())
        for issue in batch.issues:
            self.pending_errors.append(
                {"object_id": batch.object_id[issue.row], "file": self.input, "row": batch.start + issue.row,
                 "modality": issue.modality, "reason": issue.reason, "object_encoded": issue.row in encoded}
            )  # fmt: skip
        self.rows_done = batch.start + batch.size
        if self.pending_rows >= self.row_group_rows:
            self._write_part()

    def _write_part(self) -> None:
        """Writes the pending rows as the next part file, then the progress record naming it."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        name = f"{self.shard}.part{len(self.progress['parts']):05d}.parquet"
        tmp = self.parts_dir / f"{name}.tmp"
        pq.write_table(pa.concat_tables(self.pending), tmp)
        os.replace(tmp, self.parts_dir / name)
        self.progress["parts"].append({"file": name, "rows": self.pending_rows, "errors": self.pending_errors})
        self.progress["rows_done"] = self.rows_done
        atomic_write_text(self.parts_dir / f"{self.shard}.progress.json", json.dumps(self.progress))
        self.pending, self.pending_rows, self.pending_errors = [], 0, []

    def close(self) -> None:
        """Joins the parts and the pending rows into ``<shard>.parquet`` (row groups of ``row_group_rows``) and
        writes the shard's ledger; both via temporary names."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        tmp = self.final.with_name(self.final.name + ".tmp")
        carry: list[Any] = []
        carry_rows = 0
        with pq.ParquetWriter(tmp, self.schema) as writer:
            sources = [pq.read_table(self.parts_dir / p["file"], schema=self.schema) for p in self.progress["parts"]]
            for table in [*sources, *self.pending]:
                carry.append(table)
                carry_rows += table.num_rows
                if carry_rows >= self.row_group_rows:
                    joined = pa.concat_tables(carry)
                    cut = (carry_rows // self.row_group_rows) * self.row_group_rows
                    writer.write_table(joined.slice(0, cut), row_group_size=self.row_group_rows)
                    self.rows_written += cut
                    carry, carry_rows = [joined.slice(cut)], carry_rows - cut
            if carry_rows:
                writer.write_table(pa.concat_tables(carry), row_group_size=self.row_group_rows)
                self.rows_written += carry_rows
        errors = pa.Table.from_pylist(self.errors, schema=_errors_schema())
        ledger = self.parts_dir / f"{self.shard}.errors.parquet"
        pq.write_table(errors, ledger.with_name(ledger.name + ".tmp"))
        os.replace(ledger.with_name(ledger.name + ".tmp"), ledger)
        os.replace(tmp, self.final)


def _remove_progress(parts_dir: Path, shard: str) -> None:
    """Deletes a shard's part files and progress record (after its final file and record exist, or to restart)."""
    for path in [*parts_dir.glob(f"{shard}.part*.parquet"), *parts_dir.glob(f"{shard}.part*.parquet.tmp"),
                 parts_dir / f"{shard}.progress.json"]:  # fmt: skip
        path.unlink(missing_ok=True)


def _load_progress(parts_dir: Path, shard: str, job: dict, identity: dict) -> dict[str, Any] | None:
    """The shard's progress record if it belongs to this job, input and batch step and its parts exist."""
    path = parts_dir / f"{shard}.progress.json"
    try:
        progress = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    same = progress.get("job") == job and all(progress.get(k) == v for k, v in identity.items())
    if not same or not all((parts_dir / p["file"]).is_file() for p in progress.get("parts", [])):
        return None
    return progress


def _job_description(checkpoint: Path | str, options: EncodeOptions, label: str) -> dict[str, Any]:
    import hashlib

    import aion_fast
    from aion_fast.hub import read_config

    config = read_config(checkpoint)
    local = Path(checkpoint).is_dir()
    return {
        "model": label,
        "demo_checkpoint": options.model is None,
        "untrained_demo_checkpoint": label == "untrained-demo",
        "model_config_sha256": hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16],
        "model_weights_sha256_16": cached_checkpoint_digest(checkpoint) if local else None,
        "aion_fast_version": aion_fast.__version__,
        "modalities": list(options.modalities),
        "pooling": options.pooling,
        "dtype": options.dtype,
    }


def _validate(options: EncodeOptions) -> None:
    unknown = sorted(set(options.modalities) - set(MODALITY_GROUPS))
    if unknown or not options.modalities:
        raise ValueError(f"--modalities {list(options.modalities)}: choose one or more of {list(MODALITY_GROUPS)}.")
    if options.pooling != "mean":
        raise ValueError(f"--pooling {options.pooling!r}: only 'mean' writes one fixed-size vector per object.")
    if options.dtype not in ("float32", "float16"):
        raise ValueError(f"--dtype {options.dtype!r}: choose float32 or float16.")
    if options.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {options.batch_size}.")
    if options.loader not in ("torch", "dali"):
        raise ValueError(f"--loader {options.loader!r}: choose torch or dali.")
    if options.workers is not None and options.workers < 0:
        raise ValueError(f"--workers must be >= 0 (or omitted for automatic), got {options.workers}.")
    if options.row_group_rows < 1:
        raise ValueError(f"--row-group-rows must be >= 1, got {options.row_group_rows}.")


def run_encode(inputs: Sequence[str | os.PathLike], output: str | os.PathLike, options: EncodeOptions) -> dict:
    """Encodes this rank's shards of ``inputs`` into ``output`` (see the module docstring).

    Args:
        inputs: MMU ``.hdf5`` files.
        output: output directory (created).
        options: what to run.

    Returns:
        Summary dict of this rank (and ``manifest`` when this call completed the job and merged the manifest).
    """
    from tqdm import tqdm

    from aion_fast.demo import default_model

    start_time = time.perf_counter()
    _validate(options)
    missing = [str(p) for p in inputs if not Path(p).is_file()]
    if missing:
        raise ValueError(f"input files {missing[:5]} do not exist; pass MMU .hdf5 files.")
    checkpoint, label = default_model() if options.model is None else (options.model, str(options.model))
    untrained = label == "untrained-demo"
    job = _job_description(checkpoint, options, label)
    names = shard_names(inputs)
    rank, world, source = distributed_rank()
    distributed = source == "torchrun" and world > 1
    if distributed:
        _init_process_group()
    out = Path(output)
    parts_dir = out / "_parts"
    parts_dir.mkdir(parents=True, exist_ok=True)

    todo: list[int] = []
    skipped: list[str] = []
    done_before = 0  # objects of this rank finished by an earlier run (complete shards and recorded parts)
    for index in shards_of_rank(names, rank, world):
        stat = Path(inputs[index]).stat()
        record_path = parts_dir / f"{names[index]}.json"
        if record_path.is_file() and (out / f"{names[index]}.parquet").is_file():
            record = json.loads(record_path.read_text())
            if record["job"] == job and record["size"] == stat.st_size and record["mtime_ns"] == stat.st_mtime_ns:
                skipped.append(names[index])
                done_before += record.get("rows_in", 0)
                _remove_progress(parts_dir, names[index])  # left over if a run stopped right after the record
                continue
        todo.append(index)

    tasks: list[tuple[str, int, int]] = []
    rows_of: dict[int, int] = {}
    progress_of: dict[int, dict | None] = {}
    identity_of: dict[int, dict] = {}
    for index in todo:
        with MMUFile(inputs[index]) as handle:
            chunk = handle.chunk_rows()
            rows_of[index] = handle.num_rows
        align = chunk if chunk <= options.batch_size else 1
        ranges = row_ranges(rows_of[index], options.batch_size, align)
        stat = Path(inputs[index]).stat()
        step = ranges[0][1] - ranges[0][0] if ranges else 0
        identity_of[index] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "step": step,
                              "row_group_rows": options.row_group_rows}  # fmt: skip
        progress_of[index] = _load_progress(parts_dir, names[index], job, identity_of[index])
        if progress_of[index] is None:
            _remove_progress(parts_dir, names[index])
        first = progress_of[index]["rows_done"] if progress_of[index] else 0
        done_before += first
        tasks += [(str(inputs[index]), a, b) for a, b in ranges if a >= first]
    total = sum(rows_of.values()) - sum(p["rows_done"] for p in progress_of.values() if p)
    workers = _auto_workers(options, len(tasks))

    hashing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aion-fast-sha256")  # overlaps the encoding
    digests: dict[int, Future] = {}
    encoder = BatchEncoder(checkpoint, options.device) if tasks or todo else None
    by_path = {str(inputs[i]): i for i in todo}
    writers: dict[int, _ShardWriter] = {}
    remaining = {i: rows_of[i] - (progress_of[i]["rows_done"] if progress_of[i] else 0) for i in todo}
    shard_start: dict[int, float] = {}
    encoded = failed = issues = partial = 0
    bar = tqdm(total=total, unit="obj", disable=not options.progress, desc=f"rank {rank}/{world}", file=sys.stderr,
               dynamic_ncols=True)  # fmt: skip

    def open_writer(index: int) -> _ShardWriter:
        shard_start[index] = time.perf_counter()
        digests[index] = hashing.submit(file_sha256, inputs[index])
        return _ShardWriter(out, names[index], str(inputs[index]), encoder.model.config.dim, job,
                            options.row_group_rows, progress_of[index], identity_of[index])  # fmt: skip

    def finish(index: int) -> None:
        writer = writers.pop(index) if index in writers else open_writer(index)
        _finish_shard(writer, inputs[index], digests[index].result(), time.perf_counter() - shard_start[index])

    try:
        for index in [i for i in todo if remaining[i] == 0]:  # every row already in recorded parts
            finish(index)
        for batch in _batches(tasks, options, workers):
            index = by_path[batch.file]
            if index not in writers:
                writers[index] = open_writer(index)
            rows, vectors = encoder(batch)
            writers[index].add(batch, rows, vectors)
            encoded += len(rows)
            failed += batch.size - len(rows)
            issues += sum(1 for issue in batch.issues if issue.modality != "*")
            partial += len({issue.row for issue in batch.issues if issue.modality != "*"} & set(rows.tolist()))
            remaining[index] -= batch.size
            bar.update(batch.size)
            if remaining[index] == 0:
                finish(index)
    finally:
        bar.close()
        hashing.shutdown(wait=True)
    wall = time.perf_counter() - start_time

    summary: dict[str, Any] = {
        "rank": rank,
        "world_size": world,
        "launcher": source,
        "checkpoint": str(checkpoint),
        "untrained_demo_checkpoint": untrained,
        "demo_checkpoint": options.model is None,
        "loader": options.loader,
        "workers": workers,
        "shards_encoded": len(todo),
        "shards_skipped_complete": len(skipped),
        "objects_encoded": encoded,
        "objects_encoded_with_modalities_skipped": partial,
        "objects_failed": failed,
        "objects_skipped_done_before": done_before,
        "modalities_skipped": issues,
        "wall_s": round(wall, 3),
        "objects_per_s": round(encoded / wall, 3) if wall > 0 else None,
    }
    if distributed:
        torch.distributed.barrier()
    complete = all((parts_dir / f"{name}.json").is_file() for name in names)
    if complete and (rank == 0 or not distributed):
        summary["manifest"] = str(out / "manifest.json")
        merge_manifest(out, job)
    if distributed:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return summary


def _finish_shard(writer: _ShardWriter, input_path: str | os.PathLike, sha256: str, wall: float) -> None:
    writer.close()
    stat = Path(input_path).stat()
    errors = writer.errors
    record = {
        "shard": writer.shard,
        "input": str(input_path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": sha256,
        "output": writer.final.name,
        "rows_in": writer.rows_done,
        "rows_written": writer.rows_written,
        "objects_failed": sum(1 for e in errors if not e["object_encoded"] and e["modality"] == "*"),
        "modality_issues": sum(1 for e in errors if e["modality"] != "*"),
        "job": writer.progress["job"],
        "wall_s": round(wall, 3),
    }
    atomic_write_text(writer.parts_dir / f"{writer.shard}.json", json.dumps(record, indent=2))
    _remove_progress(writer.parts_dir, writer.shard)


def _init_process_group() -> None:
    """gloo process group for the end-of-job barrier (no tensors are exchanged); times out instead of hanging."""
    import datetime

    if not torch.distributed.is_initialized():
        timeout = float(os.environ.get("AION_FAST_DIST_TIMEOUT_S", "1800"))
        torch.distributed.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout))


# ---------------------------------------------------------------------------------------------------------- CLI


def _run_cli(args: argparse.Namespace) -> int:
    options = EncodeOptions(
        model=args.model,
        modalities=tuple(g.strip() for g in args.modalities.split(",") if g.strip()),
        batch_size=args.batch_size,
        device=args.device,
        loader=args.loader,
        workers=args.workers,
        pooling=args.pooling,
        dtype=args.dtype,
        progress=not args.quiet,
        row_group_rows=args.row_group_rows,
    )
    try:
        summary = run_encode(args.inputs, args.output, options)
    except ValueError as error:
        print(f"aion-fast encode: error: {error}", file=sys.stderr)
        return 2
    if summary["untrained_demo_checkpoint"]:
        print(
            "NOTE: using the UNTRAINED demo checkpoint (random weights, seed 0): the pipeline runs end to end, "
            "but these embeddings carry no science. Pass --model DIR for a trained AION-1 checkpoint."
        )
    elif summary.get("demo_checkpoint"):
        print(
            "NOTE: using the bundled DEMO model (trained by aion_fast on the 27-object sample): NOT AION-1 science "
            "quality. Pass --model DIR_OR_HUB_ID for a real AION-1 checkpoint."
        )
    print(json.dumps(summary, indent=2))
    print(
        f"rank {summary['rank']}/{summary['world_size']}: encoded {summary['objects_encoded']} objects "
        f"({summary['objects_encoded_with_modalities_skipped']} with a modality skipped), "
        f"failed {summary['objects_failed']}, skipped {summary['objects_skipped_done_before']} done by an earlier run "
        f"({summary['shards_skipped_complete']} complete shards), in {summary['wall_s']} s "
        f"({summary['objects_per_s']} objects/s) -> {args.output}"
    )
    return 0


def _run_merge(args: argparse.Namespace) -> int:
    manifest = merge_manifest(args.output)
    print(f"merged {len(manifest['shards'])} shards, {manifest['rows_written']} rows -> {args.output}/manifest.json")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Adds ``encode`` and ``merge-manifest``."""
    encode = commands.add_parser(
        "encode",
        help="encode Multimodal Universe HDF5 files into Parquet embeddings (resumable, multi-process)",
        description="Encode MMU HDF5 files into one Parquet file of embeddings per input. Re-running the same "
        "command resumes; under torchrun or SLURM each rank takes a disjoint set of files.",
    )
    encode.add_argument("inputs", nargs="+", help="MMU .hdf5 files")
    encode.add_argument("--model", default=None, help="checkpoint directory or hub id (default: bundled demo)")
    encode.add_argument("--output", required=True, help="output directory")
    encode.add_argument(
        "--modalities",
        default=",".join(DEFAULT_GROUPS),
        help=f"comma-separated groups from {list(MODALITY_GROUPS)} (default: %(default)s)",
    )
    encode.add_argument("--batch-size", type=int, default=256, help="objects per device batch (default: 256)")
    encode.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    encode.add_argument("--loader", choices=["torch", "dali"], default="torch", help="input pipeline")
    encode.add_argument(
        "--workers",
        type=int,
        default=None,
        help="DataLoader worker processes (default: automatic; 0 for jobs of a few batches, 1 on CPU)",
    )
    encode.add_argument("--pooling", choices=["mean"], default="mean", help="mean over present tokens")
    encode.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="embedding dtype")
    encode.add_argument(
        "--row-group-rows",
        type=int,
        default=ROW_GROUP_ROWS,
        help="rows per Parquet row group, also how often a shard's progress is saved (default: %(default)s)",
    )
    encode.add_argument("--quiet", action="store_true", help="no progress bar")
    encode.set_defaults(run=_run_cli)
    merge = commands.add_parser("merge-manifest", help="join the shard records of an encode output directory")
    merge.add_argument("output", help="the encode --output directory")
    merge.set_defaults(run=_run_merge)
