"""Output side of the survey jobs (``aion-fast encode``, ``predict``): one shard's Parquet file, its resumable parts,
ledger and record.

A shard's rows are collected in memory and, whenever at least ``row_group_rows`` are pending at a batch boundary,
written as a part file ``_parts/<shard>.partNNNNN.parquet`` followed by the shard's progress record
(``_parts/<shard>.progress.json``: input rows done, the part files and their ledger rows). When the shard is complete,
the parts and the rest are joined into ``<shard>.parquet`` (written under a temporary name, in row groups of exactly
``row_group_rows`` rows, then renamed), its ledger and its record (``_parts/<shard>.json``) are written, and the parts
are deleted. A resumed shard continues after its last recorded part (same batch boundaries, so the same embeddings).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aion_fast.data.mmu import ObjectBatch
from aion_fast.jobs.manifest import ERROR_COLUMNS, atomic_write_text, durable_replace, parquet_rows, read_record, warn

__all__ = ["ShardWriter", "finish_shard", "load_progress", "object_fields", "remove_progress"]


def object_fields() -> list[tuple[str, Any]]:
    """The columns every job's rows start with: ``object_id``, ``ra``, ``dec``, ``file``, ``row``, ``modalities``."""
    import pyarrow as pa

    return [
        ("object_id", pa.string()),
        ("ra", pa.float64()),
        ("dec", pa.float64()),
        ("file", pa.string()),
        ("row", pa.int64()),
        ("modalities", pa.list_(pa.string())),
    ]


def _schema(dim: int, dtype: str, job: dict[str, Any]):
    import pyarrow as pa

    value_type = pa.float16() if dtype == "float16" else pa.float32()
    fields = [*object_fields(), ("embedding", pa.list_(value_type, dim))]
    return pa.schema(fields, metadata={"aion_fast.job": json.dumps(job, sort_keys=True)})


def _errors_schema():
    import pyarrow as pa

    types = {"object_id": pa.string(), "file": pa.string(), "row": pa.int64(), "modality": pa.string(),
             "reason": pa.string(), "object_encoded": pa.bool_()}  # fmt: skip
    return pa.schema([(name, types[name]) for name in ERROR_COLUMNS])


class ShardWriter:
    """Collects one shard's rows; writes resumable part files; ``close`` joins them into ``<shard>.parquet``.

    Args:
        output: the job's output folder.
        shard: the shard's name.
        input_path: the input file (written in the ``file`` column).
        dim: embedding width (``aion-fast encode``'s schema; unused when ``schema`` is given).
        job: the job description (schema metadata, progress record).
        row_group_rows: rows per row group of the final file and least rows per part file.
        progress: the shard's progress record to resume from (None = start the shard afresh).
        identity: what the progress record must match to be resumed (input size and mtime, batch step).
        schema: the rows' Arrow schema, :func:`object_fields` first (default: the embedding schema of
            ``aion-fast encode``); other jobs add their own columns through :meth:`add_rows`.
    """

    def __init__(self, output: Path, shard: str, input_path: str, dim: int | None, job: dict[str, Any],
                 row_group_rows: int, progress: dict[str, Any] | None, identity: dict[str, Any],
                 schema: Any = None):  # fmt: skip
        self.output, self.parts_dir = output, output / "_parts"
        self.final = output / f"{shard}.parquet"
        self.shard, self.input = shard, input_path
        self.schema = _schema(dim, job["dtype"], job) if schema is None else schema
        self.row_group_rows = row_group_rows
        self.progress = progress or {"job": job, **identity, "rows_done": 0, "parts": []}
        self.pending: list[Any] = []
        self.pending_rows = 0
        self.pending_errors: list[dict[str, Any]] = []
        self.rows_done = self.progress["rows_done"]
        self.rows_written = 0
        #: Rows whose object_id an earlier row of the shard has, and a few such ids (set by ``close``).
        self.duplicates, self.duplicate_examples = 0, []

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [e for part in self.progress["parts"] for e in part["errors"]] + self.pending_errors

    def add(self, batch: ObjectBatch, rows: np.ndarray, vectors: torch.Tensor) -> None:
        """Adds the encoded ``rows`` of ``batch`` ((n,) positions, (n, D) vectors) and the batch's ledger rows."""
        import pyarrow as pa

        half = self.schema.field("embedding").type.value_type == pa.float16()
        values = vectors.to(torch.float16 if half else torch.float32).numpy()
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
        self.add_rows(batch, rows, {"embedding": embedding})

    def add_rows(self, batch: ObjectBatch, rows: np.ndarray, columns: dict[str, Any]) -> None:
        """Adds ``rows`` of ``batch`` ((n,) positions) with the job's own ``columns`` (name -> n values, in the
        schema's order after :func:`object_fields`) and the batch's ledger rows."""
        import pyarrow as pa

        if batch.start != self.rows_done:
            raise RuntimeError(f"{self.input}: batch starts at row {batch.start}, expected {self.rows_done}")
        used = batch.used()
        table = pa.table(
            {
                "object_id": [batch.object_id[r] for r in rows],
                "ra": batch.ra[rows],
                "dec": batch.dec[rows],
                "file": [self.input] * len(rows),
                "row": (batch.start + rows).astype(np.int64),
                "modalities": [used[r] for r in rows],
                **columns,
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
        durable_replace(tmp, self.parts_dir / name)
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
            self._count_duplicates([t.column("object_id") for t in [*sources, *self.pending]])
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
        durable_replace(ledger.with_name(ledger.name + ".tmp"), ledger)
        durable_replace(tmp, self.final)

    def _count_duplicates(self, columns: list[Any]) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        if not columns:
            return
        counts = pc.value_counts(pa.chunked_array(columns, type=pa.string()))
        repeated = [(v["values"], v["counts"]) for v in counts.to_pylist() if v["counts"] > 1]
        self.duplicates = sum(c - 1 for _, c in repeated)
        self.duplicate_examples = [v for v, _ in repeated[:5]]


def remove_progress(parts_dir: Path, shard: str) -> None:
    """Deletes a shard's part files and progress record (after its final file and record exist, or to restart)."""
    for path in [*parts_dir.glob(f"{shard}.part*.parquet"), *parts_dir.glob(f"{shard}.part*.parquet.tmp"),
                 parts_dir / f"{shard}.progress.json"]:  # fmt: skip
        path.unlink(missing_ok=True)


def load_progress(parts_dir: Path, shard: str, job: dict, identity: dict) -> dict[str, Any] | None:
    """The shard's progress record if it belongs to this job, input and batch step and every part it names is a
    complete Parquet file of the recorded rows; None (the shard starts afresh) otherwise. A torn record or part
    (an OS crash can leave one) is named on stderr."""
    path = parts_dir / f"{shard}.progress.json"
    if not path.exists():
        return None
    progress = read_record(path, ("job", "rows_done", "parts"))
    if progress is None:
        warn(f"{path} is torn or empty; shard {shard} is encoded again from its first row.")
        return None
    if progress.get("job") != job or any(progress.get(k) != v for k, v in identity.items()):
        return None
    for part in progress["parts"]:
        rows = parquet_rows(parts_dir / part["file"])
        if rows != part["rows"]:
            state = "missing" if rows is None and not (parts_dir / part["file"]).exists() else "torn or empty"
            warn(f"{parts_dir / part['file']} is {state}; shard {shard} is encoded again from its first row.")
            return None
    return progress


def finish_shard(
    writer: ShardWriter, input_path: str | os.PathLike, sha256: str, wall: float, details: dict[str, Any]
) -> None:
    """Closes the shard's writer, then writes its record (which marks it done) and drops its parts.

    ``details`` (input format, id column, modalities used or not in the model) go into the record and the manifest.
    """
    from aion_fast.jobs.manifest import input_stat

    writer.close()
    if writer.duplicates:
        warn(f"{input_path}: {writer.duplicates} rows repeat an object_id of an earlier row (e.g. "
             f"{writer.duplicate_examples[:3]}); they are written as they are; `aion-fast search` needs unique ids, "
             f"so de-duplicate the input or its id column.")  # fmt: skip
    size, mtime_ns = input_stat(input_path)
    errors = writer.errors
    record = {
        "shard": writer.shard,
        "input": os.path.realpath(input_path),
        "size": size,
        "mtime_ns": mtime_ns,
        "sha256": sha256,
        "output": writer.final.name,
        "rows_in": writer.rows_done,
        "rows_written": writer.rows_written,
        "objects_failed": sum(1 for e in errors if not e["object_encoded"] and e["modality"] == "*"),
        "modality_issues": sum(1 for e in errors if e["modality"] != "*"),
        "duplicate_object_ids": writer.duplicates,
        "duplicate_object_id_examples": writer.duplicate_examples,
        "job": writer.progress["job"],
        "wall_s": round(wall, 3),
        **details,
    }
    atomic_write_text(writer.parts_dir / f"{writer.shard}.json", json.dumps(record, indent=2))
    remove_progress(writer.parts_dir, writer.shard)
