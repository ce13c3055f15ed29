"""``aion-fast encode``: Multimodal Universe HDF5 files in, one Parquet file of embeddings per input file out.

Pipeline: each rank takes its shards (:func:`~aion_fast.jobs.manifest.shards_of_rank`), skips those already
complete, and streams row ranges of the rest through a ``DataLoader`` (worker processes read and preprocess with
:func:`~aion_fast.data.mmu.prepare_rows`; pinned memory on CUDA) or through the DALI loader. The main process
tokenizes each modality batch on the device, then embeds objects with :func:`aion_fast.embed`:

* objects are grouped by which multi-token modalities (image, spectrum, Gaia XP) they have, so no object is
  padded with hundreds of absent image or spectrum tokens;
* within a group, absent single-token modalities (a NaN flux) are given to ``embed`` as ``input_mask`` and
  excluded from the mean.

A shard's Parquet file is written under a temporary name in row groups and renamed when complete; its record
(``_parts/<shard>.json``) is written last. Re-running the same command skips shards whose record matches the job
and finishes the others, so the output equals an uninterrupted run's.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aion_fast.data.mmu import MODALITY_GROUPS, MMUFile, ObjectBatch, prepare_rows, row_ranges
from aion_fast.jobs.manifest import (
    atomic_write_text,
    distributed_rank,
    file_sha256,
    merge_manifest,
    shard_names,
    shards_of_rank,
)

__all__ = ["BatchEncoder", "EncodeOptions", "register", "run_encode"]

logger = logging.getLogger(__name__)

#: Rows per Parquet row group.
ROW_GROUP_ROWS = 4096
DEFAULT_GROUPS = ("image", "spectrum", "photometry", "gaia")


@dataclass(frozen=True)
class EncodeOptions:
    """What one ``aion-fast encode`` run does (everything but the inputs and the output folder).

    Attributes:
        model: checkpoint directory or hub id; None = the untrained demo checkpoint.
        modalities: groups of :data:`~aion_fast.data.mmu.MODALITY_GROUPS` to use.
        batch_size: objects per device batch.
        device: torch device for codecs and transformer.
        loader: ``"torch"`` (DataLoader) or ``"dali"``.
        workers: DataLoader worker processes (0 = read in the main process).
        pooling: ``"mean"`` (over each object's present tokens).
        dtype: ``"float32"`` or ``"float16"`` embeddings in the Parquet files.
        progress: show a progress bar.
    """

    model: str | None = None
    modalities: tuple[str, ...] = DEFAULT_GROUPS
    batch_size: int = 256
    device: str = "cpu"
    loader: str = "torch"
    workers: int = 1
    pooling: str = "mean"
    dtype: str = "float32"
    progress: bool = True


class BatchEncoder:
    """Tokenizes and embeds :class:`~aion_fast.data.mmu.ObjectBatch` objects with one model on one device.

    Args:
        checkpoint: directory or hub id holding the transformer and the codecs.
        device: where to run.
    """

    def __init__(self, checkpoint: str | os.PathLike, device: str | torch.device = "cpu"):
        from aion_fast.codecs import CodecManager
        from aion_fast.model import AION

        self.device = torch.device(device)
        self.model = AION.from_pretrained(checkpoint).eval().to(self.device)
        self.codecs = CodecManager(repo=checkpoint, device=self.device)

    def tokens(self, batch: ObjectBatch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Tokens of every modality for the whole batch, and which objects have each.

        Returns:
            ``tokens``: token key -> (B, T) int64, zeros for objects without the modality;
            ``present``: token key -> (B,) bool.
        """
        tokens: dict[str, torch.Tensor] = {}
        present: dict[str, torch.Tensor] = {}
        for part in batch.parts:
            key = part.modality.token_key
            encoded = self.codecs.encode(part.modality)[key]
            encoded = encoded.reshape(encoded.shape[0], -1)
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


def _batches(tasks: list[tuple[str, int, int]], options: EncodeOptions) -> Iterator[ObjectBatch]:
    if options.loader == "dali":
        from aion_fast.jobs.dali import DaliCropper

        cropper = DaliCropper(options.batch_size, device=options.device)
        for path, start, stop in tasks:
            with MMUFile(path) as source:
                yield prepare_rows(source, start, stop, options.modalities, crop=cropper)
        return
    loader = torch.utils.data.DataLoader(
        _Tasks(tasks, options.modalities),
        batch_size=None,
        num_workers=options.workers,
        pin_memory=torch.device(options.device).type == "cuda",
        persistent_workers=False,
    )
    yield from loader


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


class _ShardWriter:
    """Streams one shard's rows into ``<shard>.parquet.tmp`` in row groups; ``close`` renames it into place."""

    def __init__(self, output: Path, shard: str, input_path: str, dim: int, job: dict[str, Any]):
        import pyarrow.parquet as pq

        self.final = output / f"{shard}.parquet"
        self.tmp = output / f"{shard}.parquet.tmp"
        self.shard, self.input = shard, input_path
        self.schema = _schema(dim, job["dtype"], job)
        self.writer = pq.ParquetWriter(self.tmp, self.schema)
        self.pending: list[Any] = []
        self.pending_rows = 0
        self.rows_written = 0
        self.errors: list[dict[str, Any]] = []

    def add(self, batch: ObjectBatch, rows: np.ndarray, vectors: torch.Tensor) -> None:
        import pyarrow as pa

        used = batch.used()
        values = vectors.to(torch.float16 if self.schema.field("embedding").type.value_type == pa.float16() else
                            torch.float32).numpy()  # fmt: skip
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
            self.errors.append(
                {"object_id": batch.object_id[issue.row], "file": self.input, "row": batch.start + issue.row,
                 "modality": issue.modality, "reason": issue.reason, "object_encoded": issue.row in encoded}
            )  # fmt: skip
        if self.pending_rows >= ROW_GROUP_ROWS:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        import pyarrow as pa

        if not self.pending:
            return
        table = pa.concat_tables(self.pending)
        cut = table.num_rows if final else (table.num_rows // ROW_GROUP_ROWS) * ROW_GROUP_ROWS
        if cut:
            self.writer.write_table(table.slice(0, cut), row_group_size=ROW_GROUP_ROWS)
            self.rows_written += cut
        rest = table.slice(cut)
        self.pending = [rest] if rest.num_rows else []
        self.pending_rows = rest.num_rows

    def close(self, parts: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._flush(final=True)
        self.writer.close()
        errors = pa.Table.from_pylist(
            self.errors,
            schema=pa.schema(
                [("object_id", pa.string()), ("file", pa.string()), ("row", pa.int64()), ("modality", pa.string()),
                 ("reason", pa.string()), ("object_encoded", pa.bool_())]
            ),
        )  # fmt: skip
        ledger = parts / f"{self.shard}.errors.parquet"
        pq.write_table(errors, ledger.with_name(ledger.name + ".tmp"))
        os.replace(ledger.with_name(ledger.name + ".tmp"), ledger)
        os.replace(self.tmp, self.final)


def _job_description(checkpoint: Path | str, options: EncodeOptions, untrained: bool) -> dict[str, Any]:
    import hashlib

    import aion_fast
    from aion_fast.demo import checkpoint_digest
    from aion_fast.hub import read_config

    config = read_config(checkpoint)
    local = Path(checkpoint).is_dir()
    return {
        "model": str(options.model) if options.model else "untrained-demo",
        "untrained_demo_checkpoint": untrained,
        "model_config_sha256": hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16],
        "model_weights_sha256_16": checkpoint_digest(checkpoint) if local else None,
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

    from aion_fast.demo import ensure_demo_checkpoint

    _validate(options)
    missing = [str(p) for p in inputs if not Path(p).is_file()]
    if missing:
        raise ValueError(f"input files {missing[:5]} do not exist; pass MMU .hdf5 files.")
    untrained = options.model is None
    checkpoint = ensure_demo_checkpoint() if untrained else options.model
    job = _job_description(checkpoint, options, untrained)
    names = shard_names(inputs)
    rank, world, source = distributed_rank()
    distributed = source == "torchrun" and world > 1
    if distributed:
        _init_process_group()
    out = Path(output)
    parts = out / "_parts"
    parts.mkdir(parents=True, exist_ok=True)
    mine = shards_of_rank(names, rank, world)

    start_time = time.perf_counter()
    todo, skipped = [], []
    for index in mine:
        path = Path(inputs[index])
        stat = path.stat()
        record_path = parts / f"{names[index]}.json"
        if record_path.is_file() and (out / f"{names[index]}.parquet").is_file():
            record = json.loads(record_path.read_text())
            if record["job"] == job and record["size"] == stat.st_size and record["mtime_ns"] == stat.st_mtime_ns:
                skipped.append(names[index])
                continue
        todo.append(index)

    tasks: list[tuple[str, int, int]] = []
    rows_of: dict[int, int] = {}
    for index in todo:
        with MMUFile(inputs[index]) as handle:
            chunk = handle.chunk_rows()
            rows_of[index] = handle.num_rows
        align = chunk if chunk <= options.batch_size else 1
        tasks += [(str(inputs[index]), a, b) for a, b in row_ranges(rows_of[index], options.batch_size, align)]
    total = sum(rows_of.values())

    encoder = BatchEncoder(checkpoint, options.device) if tasks else None
    by_path = {str(inputs[i]): i for i in todo}
    writers: dict[int, _ShardWriter] = {}
    remaining = {i: rows_of[i] for i in todo}
    shard_start: dict[int, float] = {}
    encoded = failed = issues = 0
    bar = tqdm(total=total, unit="obj", disable=not options.progress, desc=f"rank {rank}/{world}", file=sys.stderr)
    for batch in _batches(tasks, options):
        index = by_path[batch.file]
        if index not in writers:
            shard_start[index] = time.perf_counter()
            writers[index] = _ShardWriter(out, names[index], batch.file, encoder.model.config.dim, job)
        rows, vectors = encoder(batch)
        writers[index].add(batch, rows, vectors)
        encoded += len(rows)
        failed += batch.size - len(rows)
        issues += sum(1 for issue in batch.issues if issue.modality != "*")
        remaining[index] -= batch.size
        bar.update(batch.size)
        if remaining[index] == 0:
            _finish_shard(writers.pop(index), parts, inputs[index], job, time.perf_counter() - shard_start[index])
    bar.close()
    wall = time.perf_counter() - start_time

    summary: dict[str, Any] = {
        "rank": rank,
        "world_size": world,
        "launcher": source,
        "checkpoint": str(checkpoint),
        "untrained_demo_checkpoint": untrained,
        "shards_encoded": len(todo),
        "shards_skipped_complete": len(skipped),
        "objects_encoded": encoded,
        "objects_failed": failed,
        "modalities_skipped": issues,
        "wall_s": round(wall, 3),
        "objects_per_s": round(encoded / wall, 3) if wall > 0 else None,
    }
    if distributed:
        torch.distributed.barrier()
    complete = all((parts / f"{name}.json").is_file() for name in names)
    if complete and (rank == 0 or not distributed):
        summary["manifest"] = str(out / "manifest.json")
        merge_manifest(out, job)
    if distributed:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return summary


def _finish_shard(writer: _ShardWriter, parts: Path, input_path: str | os.PathLike, job: dict, wall: float) -> None:
    writer.close(parts)
    stat = Path(input_path).stat()
    record = {
        "shard": writer.shard,
        "input": str(input_path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": file_sha256(input_path),
        "output": writer.final.name,
        "rows_written": writer.rows_written,
        "objects_failed": sum(1 for e in writer.errors if not e["object_encoded"] and e["modality"] == "*"),
        "modality_issues": sum(1 for e in writer.errors if e["modality"] != "*"),
        "job": job,
        "wall_s": round(wall, 3),
    }
    atomic_write_text(parts / f"{writer.shard}.json", json.dumps(record, indent=2))


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
    print(json.dumps(summary, indent=2))
    print(
        f"rank {summary['rank']}/{summary['world_size']}: encoded {summary['objects_encoded']} objects, "
        f"failed {summary['objects_failed']}, modalities skipped {summary['modalities_skipped']}, "
        f"shards skipped as complete {summary['shards_skipped_complete']}, in {summary['wall_s']} s "
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
    encode.add_argument("--model", default=None, help="checkpoint directory or hub id (default: untrained demo)")
    encode.add_argument("--output", required=True, help="output directory")
    encode.add_argument(
        "--modalities",
        default=",".join(DEFAULT_GROUPS),
        help=f"comma-separated groups from {list(MODALITY_GROUPS)} (default: %(default)s)",
    )
    encode.add_argument("--batch-size", type=int, default=256, help="objects per device batch (default: 256)")
    encode.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    encode.add_argument("--loader", choices=["torch", "dali"], default="torch", help="input pipeline")
    encode.add_argument("--workers", type=int, default=1, help="DataLoader worker processes (default: 1)")
    encode.add_argument("--pooling", choices=["mean"], default="mean", help="mean over present tokens")
    encode.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="embedding dtype")
    encode.add_argument("--quiet", action="store_true", help="no progress bar")
    encode.set_defaults(run=_run_cli)
    merge = commands.add_parser("merge-manifest", help="join the shard records of an encode output directory")
    merge.add_argument("output", help="the encode --output directory")
    merge.set_defaults(run=_run_merge)
