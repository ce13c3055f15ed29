"""Similarity-search throughput: exact (FAISS and PyTorch) and approximate (IVF) over 1M x 768 float32 vectors.

Vectors are clustered random embeddings (see ``tests/downstream/test_search.py``); queries are new objects from
the same distribution. The approximate index is calibrated to recall@10 >= 0.95 against exact search, and its
recall on the benchmark queries is recorded in ``extra_info``. Rows: ``AION_FAST_BENCH_SEARCH_ROWS`` (default 1M,
~3 GB of vectors plus ~3 GB for the IVF copy).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import run_timed

from tests.downstream.test_search import clustered_embeddings

faiss = pytest.importorskip("faiss", reason="faiss-cpu (the downstream extra) is needed")

from aion_fast.downstream import EmbeddingIndex  # noqa: E402
from aion_fast.downstream.search import _as_query_matrix, exact_topk  # noqa: E402

ROWS = int(os.environ.get("AION_FAST_BENCH_SEARCH_ROWS", 1_000_000))
DIM = 768
QUERIES = 256
K = 10


@pytest.fixture(scope="module")
def corpus():
    vectors = np.empty((ROWS, DIM), dtype=np.float32)
    for start in range(0, ROWS, 100_000):
        stop = min(ROWS, start + 100_000)
        vectors[start:stop] = clustered_embeddings(stop - start, DIM, seed=start)
    queries = clustered_embeddings(QUERIES, DIM, seed=-1 % 2**32)
    flat = EmbeddingIndex.from_vectors(vectors, kind="flat")
    del vectors
    return flat, _as_query_matrix(queries, DIM)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_exact_search(benchmark, record, bench_device, corpus, backend):
    flat, queries = corpus
    record(f"exact-{backend}", QUERIES, unit="queries")
    benchmark.extra_info.update({"rows": ROWS, "dim": DIM, "k": K})
    run_timed(benchmark, lambda: exact_topk(flat.vectors, queries, K, backend=backend), "cpu", rounds=3)


def test_ivf_search(benchmark, record, bench_device, corpus):
    flat, queries = corpus
    index = EmbeddingIndex._build(flat.vectors, flat.ids, "ivf", 0, 0.95, 0)
    record("ivf", QUERIES, unit="queries")
    benchmark.extra_info.update(
        {
            "rows": ROWS,
            "dim": DIM,
            "k": K,
            "nprobe": index.search_breadth,
            "nlist": index._approximate.nlist,
            "calibration_recall_at_10": index.recall,
            "query_recall_at_10": index.recall_against_flat(queries, K),
        }
    )
    run_timed(benchmark, lambda: index.search(queries, K), "cpu", rounds=5)
