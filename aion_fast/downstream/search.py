"""Cosine-similarity search over object embeddings (AION-1 paper, Sec. 7.2.3, eq. 10).

Vectors are L2-normalised once, so cosine similarity is an inner product. Exact ("flat") search is a chunked matrix
product with a running top-k in PyTorch, over an in-memory or memory-mapped array (no FAISS needed). Above
``approximate_threshold`` rows an approximate FAISS index (IVF by default, HNSW on request) is built and its search
breadth (``nprobe`` / ``efSearch``) is raised until recall@10 against exact search, measured on rows of the index
itself, reaches ``target_recall``; the measured value is kept in :attr:`EmbeddingIndex.recall`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from aion_fast.downstream.metrics import recall_at_k
from aion_fast.downstream.parquet import embedding_files, id_key, read_embeddings
from aion_fast.downstream.parquet import id_array as as_id_array

__all__ = ["EmbeddingIndex", "normalize_rows"]

_log = logging.getLogger(__name__)

IndexKind = Literal["auto", "flat", "ivf", "hnsw"]

#: Rows per chunk of the base matrix in exact search, and the query rows scored against one chunk at once.
_BASE_CHUNK = 65_536
_QUERY_CHUNK = 512
#: Index rows used as queries when calibrating an approximate index against exact search.
_CALIBRATION_QUERIES = 256
_CALIBRATION_K = 10


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def normalize_rows(vectors: np.ndarray, ids: np.ndarray | None = None, what: str = "vectors") -> np.ndarray:
    """L2-normalises the rows of a float32 ``(N, D)`` array **in place** and returns it.

    Raises:
        ValueError: Rows with NaN/inf or zero norm (cosine similarity is undefined), named by id or row.
    """
    for start in range(0, vectors.shape[0], _BASE_CHUNK):
        chunk = vectors[start : start + _BASE_CHUNK]
        norms = np.sqrt(np.einsum("ij,ij->i", chunk, chunk, dtype=np.float64))
        bad = np.nonzero(~np.isfinite(norms) | (norms == 0))[0]
        if bad.size:
            rows = bad[:10] + start
            named = f"object ids {ids[rows].tolist()}" if ids is not None else f"rows {rows.tolist()}"
            raise ValueError(
                f"{what}: {bad.size} row(s) in this chunk are NaN/inf or all zero ({named}); cosine similarity is "
                "undefined for them: drop or re-encode those objects"
            )
        chunk /= norms.astype(np.float32)[:, None]
    return vectors


def _as_query_matrix(queries: Any, dim: int) -> np.ndarray:
    """Normalised float32 ``(Q, D)`` copy of the queries (the caller's array is not modified)."""
    if isinstance(queries, torch.Tensor):
        queries = queries.detach().cpu().numpy()
    matrix = np.array(queries, dtype=np.float32, copy=True)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2 or matrix.shape[1] != dim or matrix.shape[0] == 0:
        raise ValueError(f"query_vectors must be (Q, {dim}) or ({dim},) for this index, got shape {matrix.shape}")
    return normalize_rows(matrix, what="query_vectors")


def _merge_topk(
    best_scores: np.ndarray | None, best_rows: np.ndarray | None, scores: np.ndarray, rows: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of the union of two ``(Q, *)`` candidate sets, by descending score (ties: lower row first)."""
    if best_scores is None:
        all_scores, all_rows = scores, rows
    else:
        all_scores = np.concatenate([best_scores, scores], axis=1)
        all_rows = np.concatenate([best_rows, rows], axis=1)
    order = np.lexsort((all_rows, -all_scores), axis=1)[:, :k]
    return np.take_along_axis(all_scores, order, axis=1), np.take_along_axis(all_rows, order, axis=1)


def exact_topk(
    vectors: np.ndarray, queries: np.ndarray, k: int, backend: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k of normalised queries against normalised rows, chunk by chunk.

    Args:
        vectors: ``(N, D)`` float32, L2-normalised rows (in memory or a ``numpy.memmap``).
        queries: ``(Q, D)`` float32, L2-normalised.
        k: Neighbours per query (``k <= N``).
        backend: ``"torch"`` (chunked matmul + topk), ``"faiss"`` (``faiss.knn`` per chunk), or ``"auto"``: torch (no
            FAISS needed; ``bench/bench_search.py`` measured the two within noise of each other at 1M x 768).

    Returns:
        ``scores (Q, k) float32`` descending and ``rows (Q, k) int64``.
    """
    faiss = _faiss() if backend == "faiss" else None
    if backend == "faiss" and faiss is None:
        raise ValueError("backend='faiss' needs faiss-cpu: pip install 'aion-fast[downstream]' (or backend='torch')")
    out_scores, out_rows = [], []
    for q0 in range(0, queries.shape[0], _QUERY_CHUNK):
        query = queries[q0 : q0 + _QUERY_CHUNK]
        best_scores = best_rows = None
        for start in range(0, vectors.shape[0], _BASE_CHUNK):
            chunk = np.ascontiguousarray(vectors[start : start + _BASE_CHUNK])
            kk = min(k, chunk.shape[0])
            if faiss is not None:
                scores, rows = faiss.knn(query, chunk, kk, metric=faiss.METRIC_INNER_PRODUCT)
            else:
                top = torch.topk(torch.from_numpy(query) @ torch.from_numpy(chunk).T, kk, dim=1)
                scores, rows = top.values.numpy(), top.indices.numpy()
            best_scores, best_rows = _merge_topk(best_scores, best_rows, scores, rows.astype(np.int64) + start, k)
        out_scores.append(best_scores)
        out_rows.append(best_rows)
    return np.concatenate(out_scores), np.concatenate(out_rows)


class EmbeddingIndex:
    """Nearest neighbours by cosine similarity over ``(N, D)`` object embeddings.

    Build with :meth:`from_vectors` or :meth:`from_parquet`; query with :meth:`search` (vectors) or
    :meth:`search_ids` (object ids of indexed objects).

    Attributes:
        vectors: ``(N, D)`` float32 L2-normalised rows (a ``numpy.memmap`` when built with ``cache=``).
        ids: ``(N,)`` int64 object ids (row numbers when none were given).
        kind: ``"flat"``, ``"ivf"`` or ``"hnsw"``.
        recall: Measured recall@10 of the approximate index against exact search (``None`` for flat).
        search_breadth: ``nprobe`` (IVF) or ``efSearch`` (HNSW) chosen by calibration (``None`` for flat).
    """

    def __init__(self, vectors: np.ndarray, ids: np.ndarray, kind: str, approximate: Any = None):
        self.vectors = vectors
        self.ids = ids
        self.kind = kind
        self._approximate = approximate
        self.recall: float | None = None
        self.search_breadth: int | None = None
        self._row_of_id: dict[str, int] | None = None

    # ------------------------------------------------------------------------------------------------------------
    # Construction

    @classmethod
    def from_vectors(
        cls,
        vectors: Any,
        ids: Any = None,
        kind: IndexKind = "auto",
        approximate_threshold: int = 200_000,
        target_recall: float = 0.95,
        seed: int = 0,
    ) -> EmbeddingIndex:
        """Indexes an in-memory ``(N, D)`` array (numpy or torch; copied and normalised, the input is untouched).

        Args:
            vectors: ``(N, D)`` embeddings.
            ids: ``(N,)`` integer object ids; default ``0 .. N-1``.
            kind: ``"flat"`` (exact), ``"ivf"`` / ``"hnsw"`` (approximate, FAISS), or ``"auto"``: flat below
                ``approximate_threshold`` rows (or without FAISS), IVF above.
            approximate_threshold: Row count from which ``"auto"`` builds an approximate index.
            target_recall: Recall@10 against exact search that calibration must reach (approximate kinds).
            seed: Seed of the IVF training sample and of the calibration queries.

        Raises:
            ValueError: Bad shapes, NaN/inf or zero rows, ids of the wrong length, unknown ``kind``.
        """
        if isinstance(vectors, torch.Tensor):
            vectors = vectors.detach().cpu().numpy()
        matrix = np.array(vectors, dtype=np.float32, copy=True, order="C")
        if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
            raise ValueError(f"vectors must be a non-empty (N, D) array, got shape {matrix.shape}")
        id_array = cls._check_ids(ids, matrix.shape[0])
        normalize_rows(matrix, id_array)
        return cls._build(matrix, id_array, kind, approximate_threshold, target_recall, seed)

    @classmethod
    def from_parquet(
        cls,
        path: str | Path,
        column: str = "embedding",
        id_column: str = "object_id",
        kind: IndexKind = "auto",
        cache: str | Path | None = None,
        approximate_threshold: int = 200_000,
        target_recall: float = 0.95,
        seed: int = 0,
    ) -> EmbeddingIndex:
        """Indexes the embeddings of a Parquet file or directory (streamed one record batch at a time).

        Args:
            path: A Parquet file, or a directory searched recursively (``errors.parquet`` is skipped).
            column: Embedding column (``fixed_size_list<float32|float16>``).
            id_column: Object id column (int64).
            kind: As in :meth:`from_vectors`.
            cache: Optional ``.npy`` path: the normalised vectors are streamed into a memory-mapped file there
                (overwritten) instead of RAM, and exact search reads it chunk by chunk. Approximate indexes still
                hold their own copy in memory.
            approximate_threshold: As in :meth:`from_vectors`.
            target_recall: As in :meth:`from_vectors`.
            seed: As in :meth:`from_vectors`.
        """
        out = None
        if cache is not None:
            from aion_fast.downstream.parquet import _embedding_width

            shapes = [_embedding_width(f, column, id_column) for f in embedding_files(path)]
            width = next((w for _, w in shapes if w >= 0), None)
            if width is None:
                raise ValueError("cache= needs a fixed_size_list embedding column (its width is read from the schema)")
            rows = sum(r for r, _ in shapes)
            out = np.lib.format.open_memmap(Path(cache), mode="w+", dtype=np.float32, shape=(rows, width))
        ids, vectors = read_embeddings(path, column=column, id_column=id_column, out=out)
        normalize_rows(vectors, ids)
        if isinstance(vectors, np.memmap):
            vectors.flush()
        return cls._build(vectors, ids, kind, approximate_threshold, target_recall, seed)

    @staticmethod
    def _check_ids(ids: Any, rows: int) -> np.ndarray:
        if ids is None:
            return np.arange(rows, dtype=np.int64)
        if isinstance(ids, torch.Tensor):
            ids = ids.detach().cpu().numpy()
        id_array = np.asarray(ids)
        if id_array.shape != (rows,) or not (np.issubdtype(id_array.dtype, np.integer) or id_array.dtype.kind in "USO"):
            raise ValueError(
                f"ids must be ({rows},) integers or strings (one per vector row), got {id_array.dtype} {id_array.shape}"
            )
        return as_id_array(id_array).copy()

    @classmethod
    def _build(
        cls, vectors: np.ndarray, ids: np.ndarray, kind: str, threshold: int, target_recall: float, seed: int
    ) -> EmbeddingIndex:
        if kind not in ("auto", "flat", "ivf", "hnsw"):
            raise ValueError(f"kind must be 'auto', 'flat', 'ivf' or 'hnsw', got {kind!r}")
        if not 0.0 < target_recall <= 1.0:
            raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
        faiss = _faiss()
        if kind == "auto":
            kind = "ivf" if len(ids) >= threshold and faiss is not None else "flat"
            if len(ids) >= threshold and faiss is None:
                _log.warning("faiss-cpu is not installed: exact search over %d rows (pip install faiss-cpu)", len(ids))
        if kind == "flat":
            return cls(vectors, ids, "flat")
        if faiss is None:
            raise ValueError(f"kind={kind!r} needs faiss-cpu: pip install 'aion-fast[downstream]', or use kind='flat'")
        if len(ids) <= _CALIBRATION_K:
            raise ValueError(f"an approximate index needs more than {_CALIBRATION_K} rows, got {len(ids)}; use 'flat'")
        rng = np.random.default_rng(seed)
        dim = vectors.shape[1]
        if kind == "ivf":
            lists = int(min(max(16, round(math.sqrt(len(ids)))), len(ids) // 39))
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, max(lists, 1), faiss.METRIC_INNER_PRODUCT)
            sample = np.sort(rng.choice(len(ids), size=min(len(ids), 64 * index.nlist), replace=False))
            index.train(np.ascontiguousarray(vectors[sample]))
            index.quantizer_trains_alone = 0
        else:
            index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 80
        for start in range(0, len(ids), _BASE_CHUNK):
            index.add(np.ascontiguousarray(vectors[start : start + _BASE_CHUNK]))
        built = cls(vectors, ids, kind, index)
        built._calibrate(target_recall, rng)
        return built

    def _set_breadth(self, breadth: int) -> None:
        if self.kind == "ivf":
            self._approximate.nprobe = breadth
        else:
            self._approximate.hnsw.efSearch = breadth
        self.search_breadth = breadth

    def _calibrate(self, target_recall: float, rng: np.random.Generator) -> None:
        """Doubles nprobe / efSearch until recall@10 vs exact search on sampled index rows reaches the target.

        The query rows themselves are removed from both result lists, so a trivially found self-match does not
        inflate the recall.
        """
        rows = np.sort(rng.choice(len(self.ids), size=min(len(self.ids), _CALIBRATION_QUERIES), replace=False))
        queries = np.ascontiguousarray(self.vectors[rows])
        k = min(_CALIBRATION_K, len(self.ids) - 1)
        _, exact_rows = exact_topk(self.vectors, queries, k + 1)
        exact = _drop_rows(exact_rows, rows, k)
        breadth, limit = (1, self._approximate.nlist) if self.kind == "ivf" else (16, 4096)
        while True:
            self._set_breadth(breadth)
            _, found_rows = self._approximate.search(queries, k + 1)
            self.recall = recall_at_k(_drop_rows(found_rows, rows, k), exact, k)
            if self.recall >= target_recall or breadth >= limit:
                break
            breadth = min(2 * breadth, limit)
        if self.recall < target_recall:
            _log.warning(
                "%s index reached recall@%d %.3f < target %.3f at full breadth",
                self.kind,
                k,
                self.recall,
                target_recall,
            )

    # ------------------------------------------------------------------------------------------------------------
    # Queries

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        """Embedding width ``D``."""
        return int(self.vectors.shape[1])

    def _check_k(self, k: int, extra: int = 0) -> None:
        if not isinstance(k, (int, np.integer)) or k < 1 or k + extra > len(self):
            raise ValueError(
                f"k must be an integer in [1, {len(self) - extra}] for an index of {len(self)} rows, got {k!r}"
            )

    def search(self, query_vectors: Any, k: int = 10, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar indexed objects of each query vector.

        Args:
            query_vectors: ``(Q, D)`` or ``(D,)`` (numpy or torch; not modified).
            k: Neighbours per query.
            exact: Force exact search on an approximate index.

        Returns:
            ``ids (Q, k) int64`` and cosine ``scores (Q, k) float32``, best first.
        """
        self._check_k(k)
        queries = _as_query_matrix(query_vectors, self.dim)
        rows, scores = self._search_rows(queries, k, exact)
        return self.ids[rows], scores

    def _search_rows(self, queries: np.ndarray, k: int, exact: bool) -> tuple[np.ndarray, np.ndarray]:
        if self._approximate is None or exact:
            scores, rows = exact_topk(self.vectors, queries, k)
        else:
            scores, rows = self._approximate.search(queries, k)
            short = np.nonzero((rows < 0).any(axis=1))[0]
            if short.size:  # the probed cells held fewer than k rows: answer those queries exactly
                scores[short], rows[short] = exact_topk(self.vectors, np.ascontiguousarray(queries[short]), k)
        return rows.astype(np.int64), scores.astype(np.float32)

    def rows_of(self, object_ids: Any) -> np.ndarray:
        """Row numbers of indexed object ids.

        Raises:
            ValueError: An id that is not indexed, or that is indexed more than once (ambiguous).
        """
        if self._row_of_id is None:
            unique, first, counts = np.unique(self.ids, return_index=True, return_counts=True)
            self._row_of_id = {id_key(i): int(r) if c == 1 else -1 for i, r, c in zip(unique, first, counts)}
        wanted = [id_key(i) for i in np.atleast_1d(np.asarray(object_ids)).tolist()]
        missing = [i for i in wanted if i not in self._row_of_id]
        if missing:
            raise ValueError(f"object ids {missing[:10]} are not in this index of {len(self)} rows; check --query")
        duplicated = [i for i in wanted if self._row_of_id[i] < 0]
        if duplicated:
            raise ValueError(f"object ids {duplicated[:10]} occur in several rows of the index; deduplicate the files")
        return np.array([self._row_of_id[i] for i in wanted], dtype=np.int64)

    def search_ids(
        self, object_ids: Any, k: int = 10, exclude_self: bool = True, exact: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Neighbours of indexed objects, queried by object id.

        Args:
            object_ids: ``(Q,)`` ids (or one id) present in the index.
            k: Neighbours per query.
            exclude_self: Leave each query object out of its own result list.
            exact: Force exact search on an approximate index.

        Returns:
            ``ids (Q, k)`` and ``scores (Q, k)``, as :meth:`search`.
        """
        self._check_k(k, extra=1 if exclude_self else 0)
        rows = self.rows_of(object_ids)
        queries = np.ascontiguousarray(self.vectors[rows])
        if not exclude_self:
            found, scores = self._search_rows(queries, k, exact)
            return self.ids[found], scores
        found, scores = self._search_rows(queries, k + 1, exact)
        keep = found != rows[:, None]
        keep[keep.sum(axis=1) > k, -1] = False  # self not among the k + 1: drop the last instead
        return self.ids[found[keep].reshape(-1, k)], scores[keep].reshape(-1, k)

    def recall_against_flat(self, query_vectors: Any, k: int = 10) -> float:
        """Recall@k of this index's search against exact search for the given queries (1.0 for a flat index)."""
        self._check_k(k)
        queries = _as_query_matrix(query_vectors, self.dim)
        found, _ = self._search_rows(queries, k, exact=False)
        exact, _ = self._search_rows(queries, k, exact=True)
        return recall_at_k(found, exact, k)


def _drop_rows(found: np.ndarray, query_rows: np.ndarray, k: int) -> np.ndarray:
    """First ``k`` entries of each ``(Q, k + 1)`` row after removing the query's own row number."""
    return np.array([[r for r in row if r != q][:k] for row, q in zip(found, query_rows)], dtype=np.int64)
