"""Streaming reader for embedding Parquet files (the demo's and the survey encoding job's output).

Schema read: ``object_id`` (integers, or strings such as the survey encoding job writes) and ``embedding``
(``fixed_size_list<float32|float16>``, or a list of one length per row); other columns are ignored. A directory
is searched recursively for ``*.parquet``; the encoding job's ``errors.parquet`` (failed objects, no embeddings),
``manifest.json`` and its bookkeeping folders (names starting with ``_`` or ``.``, e.g. ``_parts/`` with per-shard
error ledgers) hold no embeddings and are skipped.
Files are read one record batch at a time, so memory holds the output array plus one batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = ["check_one_model", "embedding_files", "id_array", "id_key", "iter_embedding_batches", "read_embeddings"]

#: File names in an encoding output directory that hold no embeddings.
NON_EMBEDDING_FILES = frozenset({"errors.parquet"})


def id_key(value) -> str:
    """The lookup key of one object id: ids compare as text, so ``39633300968442591``, ``"39633300968442591"`` and
    ``b"39633300968442591"`` (HDF5 bytes) name the same object across Parquet, CSV and MMU HDF5 files."""
    if isinstance(value, bytes | np.bytes_):
        return value.decode()
    if isinstance(value, np.integer | int):
        return str(int(value))
    return str(value)


def id_array(values) -> np.ndarray:
    """Object ids as a numpy array: int64 when every id is an integer type, else ``str`` (bytes decoded)."""
    array = np.asarray(values)
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64, copy=False)
    return np.array([id_key(v) for v in array.tolist()], dtype=str)


def embedding_files(path: str | Path) -> list[Path]:
    """The embedding Parquet files at ``path`` (a file, or a directory searched recursively), sorted by path."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ValueError(f"embeddings path {str(path)!r} does not exist; pass a Parquet file or a directory of them")
    files = sorted(
        p
        for p in path.rglob("*.parquet")
        if p.name not in NON_EMBEDDING_FILES
        and not p.name.endswith(".errors.parquet")
        and not any(part.startswith(("_", ".")) for part in p.relative_to(path).parts[:-1])
    )
    if not files:
        raise ValueError(f"no *.parquet embedding files under {str(path)!r} (errors.parquet is not one)")
    return files


def _embedding_width(file: Path, column: str, id_column: str) -> tuple[int, int]:
    """``(rows, D)`` of one file from its metadata and schema (``D`` = -1 for variable-size lists)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(file)
    schema = parquet.schema_arrow
    for name in (id_column, column):
        if name not in schema.names:
            raise ValueError(f"{file}: no column {name!r} (columns: {schema.names}); pass id_column=/column= to match")
    kind = schema.field(column).type
    if pa.types.is_fixed_size_list(kind):
        width = kind.list_size
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
        width = -1
    else:
        raise ValueError(f"{file}: column {column!r} has type {kind}; expected fixed_size_list<float32|float16>")
    return parquet.metadata.num_rows, width


def _batch_vectors(file: Path, column: str, array, first_row: int) -> np.ndarray:
    """``(n, D)`` float32 array of one record batch's embedding column; rejects null rows and ragged lists."""
    import pyarrow as pa

    if array.null_count:
        rows = np.nonzero(array.is_null().to_numpy(zero_copy_only=False))[0][:10] + first_row
        raise ValueError(f"{file}: {column!r} is null in rows {rows.tolist()}; re-encode or drop those objects")
    if pa.types.is_fixed_size_list(array.type):
        width = array.type.list_size
        values = array.flatten()
    else:
        lengths = np.diff(array.offsets.to_numpy())
        if lengths.size and (lengths != lengths[0]).any():
            raise ValueError(f"{file}: {column!r} rows have different lengths {sorted(set(lengths.tolist()))[:5]}")
        width = int(lengths[0]) if lengths.size else 0
        values = array.flatten()
    if values.null_count:
        raise ValueError(f"{file}: {column!r} contains null elements; re-encode those objects")
    return values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(len(array), width)


def iter_embedding_batches(
    path: str | Path, column: str = "embedding", id_column: str = "object_id", batch_rows: int = 65_536
) -> Iterator[tuple[Path, np.ndarray, np.ndarray]]:
    """Yields ``(file, ids (n,), vectors (n, D) float32)`` one record batch at a time, files in path order.

    ids are int64 for integer id columns and ``str`` otherwise (see :func:`id_array`)."""
    import pyarrow.parquet as pq

    for file in embedding_files(path):
        parquet = pq.ParquetFile(file)
        row = 0
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=[id_column, column]):
            ids_array = batch.column(id_column)
            if ids_array.null_count:
                raise ValueError(f"{file}: {id_column!r} has nulls near row {row}; every row needs an id")
            ids = id_array(ids_array.to_numpy(zero_copy_only=False))
            yield file, ids, _batch_vectors(file, column, batch.column(column), row)
            row += batch.num_rows


#: Keys of the ``aion_fast.job`` Parquet metadata (written by ``aion-fast encode``) that name the model.
_MODEL_KEYS = ("model", "model_config_sha256", "model_weights_sha256_16", "codec_configs_sha256_16")


def check_one_model(files: list[Path]) -> None:
    """Refuses embedding files that ``aion-fast encode`` wrote with different models (their vectors do not compare).

    Raises:
        ValueError: naming two files of different models.
    """
    import pyarrow.parquet as pq

    seen: dict[str, Path] = {}
    for file in files:
        metadata = pq.read_schema(file).metadata or {}
        try:
            job = json.loads(metadata.get(b"aion_fast.job", b"null"))
        except ValueError:
            job = None
        if not isinstance(job, dict):
            continue
        model = json.dumps({k: job.get(k) for k in _MODEL_KEYS}, sort_keys=True)
        seen.setdefault(model, file)
        if len(seen) > 1:
            first, second = list(seen.values())[:2]
            raise ValueError(f"{first} and {second} hold embeddings of different models (aion_fast.job metadata); "
                             f"search or probe one model's output directory at a time.")  # fmt: skip


def read_embeddings(
    path: str | Path,
    column: str = "embedding",
    id_column: str = "object_id",
    out: np.ndarray | None = None,
    batch_rows: int = 65_536,
) -> tuple[np.ndarray, np.ndarray]:
    """Reads every embedding row under ``path`` into one array.

    Args:
        path: A Parquet file or a directory of them.
        column: The embedding column.
        id_column: The object id column.
        out: Optional preallocated ``(N, D)`` float32 array to fill (e.g. a ``numpy.memmap``); its shape must be
            ``(total rows, D)``.
        batch_rows: Rows per record batch read.

    Returns:
        ``ids (N,)`` (int64, or ``str`` when any file has non-integer ids) and ``vectors (N, D) float32``
        (``out`` when given).

    Raises:
        ValueError: Missing columns, null or ragged embeddings, or files whose embedding widths differ.
    """
    files = embedding_files(path)
    shapes = {file: _embedding_width(file, column, id_column) for file in files}
    check_one_model(files)
    total = sum(rows for rows, _ in shapes.values())
    widths = {width for _, width in shapes.values() if width >= 0}
    if len(widths) > 1:
        raise ValueError(f"embedding widths differ between files: { {str(f): w for f, (_, w) in shapes.items()} }")
    id_batches: list[np.ndarray] = []
    vectors = out
    start = 0
    for file, batch_ids, batch_vectors in iter_embedding_batches(path, column, id_column, batch_rows):
        if vectors is None:
            vectors = np.empty((total, batch_vectors.shape[1]), dtype=np.float32)
        if vectors.shape != (total, batch_vectors.shape[1]):
            raise ValueError(
                f"{file}: embeddings are {batch_vectors.shape[1]} wide; expected an (N, D) output of shape "
                f"{vectors.shape} for {total} rows (all files must have one width)"
            )
        stop = start + len(batch_ids)
        id_batches.append(batch_ids)
        vectors[start:stop] = batch_vectors
        start = stop
    if vectors is None:
        raise ValueError(f"the embedding files under {str(path)!r} hold no rows")
    if len({batch.dtype.kind for batch in id_batches}) > 1:  # integer ids in some files, text in others
        id_batches = [id_array([id_key(v) for v in batch.tolist()]) for batch in id_batches]
    return np.concatenate(id_batches), vectors
