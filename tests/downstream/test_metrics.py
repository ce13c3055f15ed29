"""nDCG@k against hand-computed values (paper eq. 11), and the probe metrics on known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aion_fast.downstream import accuracy, confusion_matrix, dcg_at_k, ndcg_at_k, r2_score, recall_at_k


def _dcg(rels):
    return sum((2**r - 1) / math.log2(i + 2) for i, r in enumerate(rels))


def test_dcg_hand_computed():
    # ranks 1..3 with relevances 3, 2, 0: 7/1 + 3/log2(3) + 0
    assert dcg_at_k([[3, 2, 0]], k=3)[0] == pytest.approx(7 + 3 / math.log2(3), rel=1e-12)
    assert dcg_at_k([[3, 2, 0]], k=1)[0] == pytest.approx(7.0, rel=1e-12)


def test_ndcg_perfect_and_reversed():
    assert ndcg_at_k([[3, 2, 1, 0]], k=4) == pytest.approx(1.0, abs=1e-12)
    reversed_score = ndcg_at_k([[0, 1, 2, 3]], k=4)
    assert reversed_score == pytest.approx(_dcg([0, 1, 2, 3]) / _dcg([3, 2, 1, 0]), rel=1e-12)


def test_ndcg_ties_in_relevance_are_ideal():
    # equal relevances swapped between ranks change nothing: still the ideal ordering
    assert ndcg_at_k([[1, 1, 0.5, 0.5, 0]], k=5) == pytest.approx(1.0, abs=1e-12)
    assert ndcg_at_k([[0.5, 1, 1, 0.5]], k=4) == pytest.approx(
        _dcg([0.5, 1, 1, 0.5]) / _dcg([1, 1, 0.5, 0.5]), rel=1e-12
    )


def test_ndcg_soft_relevance_with_ideal_candidates():
    # Galaxy-Zoo-style vote fractions; the candidate pool holds better objects that were not retrieved
    retrieved = [[0.7, 0.2, 0.9]]
    pool = [np.array([0.95, 0.9, 0.7, 0.4, 0.2, 0.0])]
    expected = _dcg([0.7, 0.2, 0.9]) / _dcg([0.95, 0.9, 0.7])
    assert ndcg_at_k(retrieved, k=3, ideal=pool) == pytest.approx(expected, rel=1e-12)
    # k larger than the list: missing ranks count 0 in DCG, but the ideal may use 4 candidates
    assert ndcg_at_k(retrieved, k=4, ideal=pool) == pytest.approx(
        _dcg([0.7, 0.2, 0.9]) / _dcg([0.95, 0.9, 0.7, 0.4]), rel=1e-12
    )


def test_ndcg_mean_over_queries_and_zero_ideal():
    relevance = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    per_query = ndcg_at_k(relevance, k=2, per_query=True)
    np.testing.assert_allclose(per_query, [1.0, (1 / math.log2(3)) / 1.0, 0.0], rtol=1e-12)
    assert ndcg_at_k(relevance, k=2) == pytest.approx(per_query.mean(), rel=1e-12)


def test_ndcg_rejects_bad_input():
    with pytest.raises(ValueError, match=">= 0"):
        ndcg_at_k([[0.5, -1.0]], k=2)
    with pytest.raises(ValueError, match="one row per query"):
        ndcg_at_k([[1.0]], k=1, ideal=[[1.0], [1.0]])
    with pytest.raises(ValueError, match="all candidates"):
        ndcg_at_k([[1.0, 1.0]], k=2, ideal=[[1.0]])
    with pytest.raises(ValueError, match="k must be"):
        ndcg_at_k([[1.0]], k=0)


def test_r2_accuracy_confusion_recall():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert r2_score(y, y) == 1.0
    assert r2_score(y, np.full(4, y.mean())) == 0.0
    assert r2_score(y, y + 1) == pytest.approx(1 - 4 / 5, rel=1e-12)
    with pytest.raises(ValueError, match="constant"):
        r2_score(np.ones(3), np.ones(3))
    assert accuracy(["a", "b", "b"], ["a", "b", "a"]) == pytest.approx(2 / 3)
    matrix, labels = confusion_matrix(["a", "b", "b"], ["a", "b", "a"])
    assert labels == ["a", "b"] and matrix.tolist() == [[1, 0], [1, 1]]
    assert recall_at_k([[1, 2, 3]], [[3, 2, 9]]) == pytest.approx(2 / 3)
