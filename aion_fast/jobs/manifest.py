"""Job bookkeeping: shard names, rank assignment, per-shard records and the merged ``manifest.json``.

Output directory layout::

    <output>/<shard>.parquet             embeddings of one input file (renamed into place when complete)
    <output>/_parts/<shard>.errors.parquet   that shard's ledger of unusable modalities / failed objects
    <output>/_parts/<shard>.json         that shard's record (written last: its presence marks the shard done)
    <output>/_parts/<shard>.partNNNNN.parquet, <shard>.progress.json
                                         a shard in progress: its completed parts and their record (resumption)
    <output>/manifest.json               the merged manifest (``merge_manifest``)
    <output>/errors.parquet              every shard's ledger, in shard order

Every file is written to a ``.tmp`` name, flushed to disk (``fsync``), renamed, and the directory flushed
(:func:`durable_replace`), so a crash, even of the machine, leaves either the old state or the new one; readers
still check what they read (:func:`read_record`, :func:`parquet_rows`) and redo what is torn.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "ERROR_COLUMNS",
    "atomic_write_text",
    "durable_replace",
    "parquet_rows",
    "read_record",
    "warn",
    "cached_checkpoint_digest",
    "distributed_rank",
    "file_sha256",
    "merge_manifest",
    "input_stat",
    "shards_of_rank",
]

#: Columns of ``errors.parquet``.
ERROR_COLUMNS = ("object_id", "file", "row", "modality", "reason", "object_encoded")


def warn(message: str) -> None:
    """One line on stderr: something the job found and repaired (a torn file redone, duplicate ids)."""
    print(f"aion-fast: warning: {message}", file=sys.stderr, flush=True)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_replace(tmp: Path, path: Path) -> None:
    """Renames a fully written ``tmp`` to ``path`` durably: ``fsync`` of the file before the rename (its bytes are
    on disk before its name), of the directory after (the rename itself is on disk)."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(Path(path).parent)


def atomic_write_text(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` via a temporary file of this process and a durable rename."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # two processes never share a temporary file
    tmp.write_text(text)
    durable_replace(tmp, path)


def read_record(path: Path, required: Sequence[str] = ()) -> dict[str, Any] | None:
    """A JSON record the job wrote, or None if it is missing, torn (not JSON, 0 bytes) or lacks a ``required`` key."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or any(key not in record for key in required):
        return None
    return record


def parquet_rows(path: Path) -> int | None:
    """Rows of a complete Parquet file (footer read, no data), or None if it is missing, empty or torn."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (OSError, ValueError):  # pyarrow's ArrowInvalid (a torn footer) is a ValueError
        return None


def file_sha256(path: str | os.PathLike, block: int = 1 << 20) -> str:
    """SHA-256 of a file, read in 1 MiB blocks; of a directory (an Arrow dataset), of its files' relative paths and
    digests in path order."""
    if Path(path).is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
            digest.update(f"{file.relative_to(path).as_posix()}\0{file_sha256(file)}\n".encode())
        return digest.hexdigest()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def input_stat(path: str | os.PathLike) -> tuple[int, int]:
    """``(size, mtime_ns)`` of an input file; of a directory, the total size and latest mtime of its files."""
    if not Path(path).is_dir():
        stat = Path(path).stat()
        return stat.st_size, stat.st_mtime_ns
    stats = [p.stat() for p in Path(path).rglob("*") if p.is_file()]
    return sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)


def _digest_cache_file() -> Path:
    root = os.environ.get("AION_FAST_CACHE_DIR") or Path.home() / ".cache" / "aion_fast"
    return Path(root) / "checkpoint_digests.json"


def cached_checkpoint_digest(directory: str | os.PathLike) -> str:
    """:func:`aion_fast.model.checkpoint.checkpoint_digest` of a local checkpoint, remembered across runs.

    The digest reads every tensor (seconds for aion-base), so it is kept in
    ``~/.cache/aion_fast/checkpoint_digests.json`` (``$AION_FAST_CACHE_DIR`` overrides the folder) under the
    checkpoint's resolved path, valid while every ``*.safetensors`` file below it has the same relative path, size
    and modification time (the rule ``make`` and ``git status`` use). A changed or added weight file recomputes it;
    an unwritable cache only costs the recomputation.
    """
    from aion_fast.model.checkpoint import checkpoint_digest

    root = Path(directory).resolve()
    stamp = []
    for path in sorted(root.rglob("*.safetensors")):
        stat = path.stat()
        stamp.append([str(path.relative_to(root)), stat.st_size, stat.st_mtime_ns])
    cache_file = _digest_cache_file()
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(str(root))
    if isinstance(entry, dict) and entry.get("files") == stamp and isinstance(entry.get("digest"), str):
        return entry["digest"]
    digest = checkpoint_digest(root)
    cache[str(root)] = {"files": stamp, "digest": digest}
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.tmp")  # concurrent ranks: last rename wins
        tmp.write_text(json.dumps(cache, indent=1))
        os.replace(tmp, cache_file)
    except OSError:
        pass
    return digest


def distributed_rank(environ: dict[str, str] | None = None) -> tuple[int, int, str]:
    """``(rank, world_size, source)`` from torchrun (``RANK``/``WORLD_SIZE``) or SLURM, else ``(0, 1, "single")``.

    SLURM arrays use ``SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN`` of ``SLURM_ARRAY_TASK_COUNT``; plain SLURM job
    steps use ``SLURM_PROCID`` of ``SLURM_NTASKS``.
    """
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" in env and "RANK" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), "torchrun"
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        offset = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        return int(env["SLURM_ARRAY_TASK_ID"]) - offset, int(env["SLURM_ARRAY_TASK_COUNT"]), "slurm-array"
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), "slurm"
    return 0, 1, "single"


def shards_of_rank(names: Sequence[str], rank: int, world_size: int) -> list[int]:
    """Indices of the shards rank ``rank`` encodes: every ``world_size``-th one of the names sorted.

    Deterministic and disjoint: the union over ranks is every shard exactly once, whatever the input order.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside [0, {world_size}); check RANK/WORLD_SIZE or the SLURM variables.")
    order = sorted(range(len(names)), key=lambda i: names[i])
    return sorted(order[rank::world_size])


def merge_manifest(output: str | os.PathLike, job: dict[str, Any] | None = None) -> dict[str, Any]:
    """Joins the shard records under ``<output>/_parts`` into ``manifest.json`` and their ledgers into
    ``errors.parquet``.

    Args:
        output: the job's output directory.
        job: the job description to check records against (model hash, modalities, ...); default: the one the
            records carry (they must all agree).

    Returns:
        The manifest dict.

    Raises:
        ValueError: no shard records (not an encode output), a torn record, shard file or ledger (named), or
            records of different jobs (another model or options) share the directory.
    """
    import fcntl

    parts = Path(output) / "_parts"
    if not parts.is_dir():
        raise ValueError(f"{output} holds no shard records (no {parts}); give the --output directory of an "
                         f"aion-fast encode job that has finished at least one shard.")  # fmt: skip
    with open(Path(output) / ".aion-fast.merge.lock", "a") as lock:  # ranks finishing together merge in turn
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _merge(Path(output), parts, job)


def _merge(output: Path, parts: Path, job: dict[str, Any] | None) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = []
    for path in sorted(parts.glob("*.json")):
        if path.name.endswith(".progress.json"):
            continue
        record = read_record(path, ("shard", "job", "rows_written", "output"))
        if record is None:
            raise ValueError(f"{path} is not a complete shard record (torn or empty); rerun the encode command "
                             f"with the same options to redo that shard, then merge again.")  # fmt: skip
        records.append(record)
    if not records:
        raise ValueError(f"{output} holds no shard records (nothing in {parts}); give the --output directory of "
                         f"an aion-fast encode job that has finished at least one shard.")  # fmt: skip
    jobs = {json.dumps(r["job"], sort_keys=True) for r in records}
    if job is not None:
        records = [r for r in records if r["job"] == job]
    elif len(jobs) > 1:
        raise ValueError(
            f"{parts} holds shard records of {len(jobs)} different jobs (model or options differ); "
            f"write each job to its own --output directory."
        )
    records.sort(key=lambda r: r["shard"])
    for record in records:
        ledger = parts / f"{record['shard']}.errors.parquet"
        if parquet_rows(ledger) is None:
            raise ValueError(f"{ledger} is missing or torn; rerun the encode command to redo that shard.")
        if parquet_rows(output / record["output"]) != record["rows_written"]:
            raise ValueError(
                f"{output / record['output']} is missing or torn (the record says {record['rows_written']} rows); "
                f"rerun the encode command to redo that shard."
            )
    ledgers = [pq.read_table(parts / f"{r['shard']}.errors.parquet") for r in records]
    schema = pa.schema(
        [("object_id", pa.string()), ("file", pa.string()), ("row", pa.int64()), ("modality", pa.string()),
         ("reason", pa.string()), ("object_encoded", pa.bool_())]
    )  # fmt: skip
    errors = pa.concat_tables(ledgers) if ledgers else schema.empty_table()
    tmp = output / f"errors.parquet.{os.getpid()}.tmp"
    pq.write_table(errors, tmp)
    durable_replace(tmp, output / "errors.parquet")
    manifest = {
        "job": records[0]["job"] if records else job,
        "shards": records,
        "inputs": [{k: r[k] for k in ("input", "size", "sha256")} for r in records],
        "rows_written": sum(r["rows_written"] for r in records),
        "objects_failed": sum(r["objects_failed"] for r in records),
        "modality_issues": sum(r["modality_issues"] for r in records),
        "duplicate_object_ids": sum(r.get("duplicate_object_ids", 0) for r in records),
        "errors": "errors.parquet",
    }
    atomic_write_text(output / "manifest.json", json.dumps(manifest, indent=2))
    return manifest
