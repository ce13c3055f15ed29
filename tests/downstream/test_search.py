"""Similarity search: exact results vs brute force, approximate recall vs flat, Parquet streaming, query by id."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aion_fast.downstream import EmbeddingIndex
from aion_fast.downstream.search import exact_topk

faiss = pytest.importorskip("faiss", reason="faiss-cpu (the downstream/test extra) is needed for approximate search")


def clustered_embeddings(rows: int, dim: int, seed: int) -> np.ndarray:
    """Random vectors shaped like real embeddings: 64 clusters on a 16-dimensional subspace, plus noise.

    Isotropic Gaussian vectors in >= 64 dimensions have no neighbourhood structure (every point is about equally
    far from all others), and no approximate index reaches recall 0.95 on them without scanning most of the data.
    """
    fixed = np.random.default_rng(1234)
    basis = np.linalg.qr(fixed.standard_normal((dim, 16)))[0].T
    centres = fixed.standard_normal((64, 16))
    rng = np.random.default_rng(seed)
    latent = centres[rng.integers(0, 64, rows)] + 0.5 * rng.standard_normal((rows, 16))
    return (latent @ basis + 0.05 * rng.standard_normal((rows, dim))).astype(np.float32)


def _brute_force(vectors, queries, k):
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    return np.argsort(-(q.astype(np.float64) @ v.T.astype(np.float64)), axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_exact_search_matches_brute_force(backend):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((70_001, 33)).astype(np.float32)  # two base chunks, awkward width
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = rng.standard_normal((7, 33)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    scores, rows = exact_topk(vectors, queries, 10, backend=backend)
    np.testing.assert_array_equal(rows, _brute_force(vectors, queries, 10))
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_from_vectors_ids_scores_and_no_mutation():
    vectors = clustered_embeddings(500, 24, seed=0) * 3.0
    before = vectors.copy()
    ids = np.arange(500, dtype=np.int64) * 7 + 1000
    index = EmbeddingIndex.from_vectors(vectors, ids=ids)
    assert index.kind == "flat" and np.array_equal(vectors, before)
    found, scores = index.search(vectors[:4] * 10.0, k=5)  # scale does not matter: cosine
    np.testing.assert_array_equal(found, ids[_brute_force(vectors, vectors[:4], 5)])
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    neighbours, _ = index.search_ids([ids[3], ids[9]], k=5)
    assert neighbours.shape == (2, 5) and ids[3] not in neighbours[0] and ids[9] not in neighbours[1]
    with pytest.raises(ValueError, match="not in this index"):
        index.search_ids([12345], k=3)
    with pytest.raises(ValueError, match=r"\(Q, 24\)"):
        index.search(np.ones((2, 5)), k=3)
    with pytest.raises(ValueError, match="all zero"):
        EmbeddingIndex.from_vectors(np.zeros((3, 4)))


def test_approximate_recall_vs_flat_100k():
    vectors = clustered_embeddings(100_000, 64, seed=0)
    queries = clustered_embeddings(300, 64, seed=1)  # new objects, not index rows
    index = EmbeddingIndex.from_vectors(vectors, kind="ivf", target_recall=0.95)
    assert index.kind == "ivf" and index.recall >= 0.95
    assert index.recall_against_flat(queries, k=10) >= 0.95
    flat = EmbeddingIndex.from_vectors(vectors, kind="flat")
    assert flat.recall_against_flat(queries, k=10) == 1.0


@pytest.mark.slow
def test_hnsw_recall_vs_flat_100k():
    vectors = clustered_embeddings(100_000, 64, seed=0)
    queries = clustered_embeddings(300, 64, seed=1)
    index = EmbeddingIndex.from_vectors(vectors, kind="hnsw", target_recall=0.95)
    assert index.recall_against_flat(queries, k=10) >= 0.95


def _write_shard(path, ids, vectors, dtype):
    values = pa.array(vectors.astype(dtype).reshape(-1))
    table = pa.table(
        {
            "object_id": pa.array(ids, type=pa.int64()),
            "ra": pa.array(np.zeros(len(ids))),
            "dec": pa.array(np.zeros(len(ids))),
            "input_file": pa.array(["x.h5"] * len(ids)),
            "modalities": pa.array([["image"]] * len(ids), type=pa.list_(pa.string())),
            "embedding": pa.FixedSizeListArray.from_arrays(values, vectors.shape[1]),
        }
    )
    pq.write_table(table, path, row_group_size=97)


def test_from_parquet_streams_shards_and_skips_errors(tmp_path):
    vectors = clustered_embeddings(1000, 40, seed=3)
    ids = np.arange(1000, dtype=np.int64) + 10**15
    (tmp_path / "shards").mkdir()
    _write_shard(tmp_path / "shards" / "part-00000.parquet", ids[:600], vectors[:600], np.float32)
    _write_shard(tmp_path / "shards" / "part-00001.parquet", ids[600:], vectors[600:], np.float16)
    pq.write_table(pa.table({"object_id": [1], "error": ["bad"]}), tmp_path / "errors.parquet")
    (tmp_path / "manifest.json").write_text("{}")
    index = EmbeddingIndex.from_parquet(tmp_path, cache=tmp_path / "cache.npy")
    assert len(index) == 1000 and isinstance(index.vectors, np.memmap)
    np.testing.assert_array_equal(index.ids, ids)
    reference = EmbeddingIndex.from_vectors(
        np.concatenate([vectors[:600], vectors[600:].astype(np.float16).astype(np.float32)]), ids=ids
    )
    np.testing.assert_allclose(index.vectors, reference.vectors, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(index.search_ids(ids[:5], k=4)[0], reference.search_ids(ids[:5], k=4)[0])


def test_from_parquet_rejects_files_without_embeddings(tmp_path):
    pq.write_table(pa.table({"object_id": [1, 2]}), tmp_path / "labels.parquet")
    with pytest.raises(ValueError, match="no column 'embedding'"):
        EmbeddingIndex.from_parquet(tmp_path)
