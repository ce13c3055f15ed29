"""Evaluation metrics for probes and retrieval: R², accuracy, confusion matrix, recall@k and nDCG@k.

nDCG follows the AION-1 paper (Sec. 7.2.3, eq. 11): with :math:`r_i` the relevance of the item ranked ``i``,
:math:`\\mathrm{DCG}@k = \\sum_{i=1}^{k} (2^{r_i} - 1) / \\log_2(i + 1)`, the ideal DCG orders the candidates by
descending relevance, and :math:`\\mathrm{nDCG}@k = \\mathrm{DCG}@k / \\mathrm{IDCG}@k`. Relevances may be soft
(e.g. a Galaxy Zoo vote fraction in [0, 1]).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["accuracy", "confusion_matrix", "dcg_at_k", "ndcg_at_k", "r2_score", "recall_at_k"]


def _as_array(name: str, value: Any, dtype: Any = None) -> np.ndarray:
    """numpy view of an array-like or tensor (detached, on the CPU)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be array-like (numpy array, torch tensor or list), got {type(value)}") from error


def r2_score(y_true: Any, y_pred: Any) -> float | np.ndarray:
    """Coefficient of determination :math:`R^2 = 1 - \\sum_j (y_j - \\hat y_j)^2 / \\sum_j (y_j - \\bar y)^2`.

    Args:
        y_true: ``(N,)`` or ``(N, T)`` ground truth.
        y_pred: predictions of the same shape.

    Returns:
        A float for ``(N,)`` inputs, an ``(T,)`` array (one R² per target) for ``(N, T)``.

    Raises:
        ValueError: Shapes differ, fewer than 2 rows, non-finite values, or a constant target (R² undefined).
    """
    truth = _as_array("y_true", y_true, np.float64)
    pred = _as_array("y_pred", y_pred, np.float64)
    if truth.shape != pred.shape or truth.ndim not in (1, 2):
        raise ValueError(
            f"y_true and y_pred must both be (N,) or (N, T) of one shape, got {truth.shape} and {pred.shape}"
        )
    if truth.shape[0] < 2:
        raise ValueError(f"R² needs at least 2 rows, got y_true of shape {truth.shape}")
    if not (np.isfinite(truth).all() and np.isfinite(pred).all()):
        raise ValueError("y_true and y_pred must be finite; drop rows with NaN/inf before scoring")
    total = ((truth - truth.mean(axis=0)) ** 2).sum(axis=0)
    if np.any(total == 0):
        raise ValueError("y_true is constant (zero variance), so R² is undefined; score on a sample with spread")
    score = 1.0 - ((truth - pred) ** 2).sum(axis=0) / total
    return float(score) if truth.ndim == 1 else score


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of ``(N,)`` labels predicted exactly."""
    truth, pred = _as_array("y_true", y_true), _as_array("y_pred", y_pred)
    if truth.shape != pred.shape or truth.ndim != 1 or truth.size == 0:
        raise ValueError(
            f"y_true and y_pred must be non-empty (N,) arrays of one shape, got {truth.shape}, {pred.shape}"
        )
    return float(np.mean(truth == pred))


def confusion_matrix(y_true: Any, y_pred: Any, labels: Sequence[Any] | None = None) -> tuple[np.ndarray, list[Any]]:
    """Counts of (true label, predicted label) pairs.

    Args:
        y_true: ``(N,)`` labels.
        y_pred: ``(N,)`` predicted labels.
        labels: Row/column order; default: the sorted union of both.

    Returns:
        ``(C, C)`` int64 matrix, rows = true label, columns = predicted label, and the labels in that order.

    Raises:
        ValueError: Shapes differ, or a label is missing from ``labels``.
    """
    truth, pred = _as_array("y_true", y_true), _as_array("y_pred", y_pred)
    if truth.shape != pred.shape or truth.ndim != 1:
        raise ValueError(f"y_true and y_pred must be (N,) arrays of one shape, got {truth.shape} and {pred.shape}")
    order = list(np.unique(np.concatenate([truth, pred]))) if labels is None else list(labels)
    position = {label: i for i, label in enumerate(order)}
    unknown = sorted({str(v) for v in np.concatenate([truth, pred]) if v not in position})
    if unknown:
        raise ValueError(f"labels {unknown} are not in `labels` ({order}); add them or pass labels=None")
    matrix = np.zeros((len(order), len(order)), dtype=np.int64)
    np.add.at(matrix, ([position[v] for v in truth], [position[v] for v in pred]), 1)
    return matrix, order


def _relevance_matrix(name: str, relevance: Any) -> np.ndarray:
    rel = _as_array(name, relevance, np.float64)
    if rel.ndim == 1:
        rel = rel[None, :]
    if rel.ndim != 2 or rel.shape[1] == 0:
        raise ValueError(f"{name} must be (Q, K) relevances in rank order (K >= 1), got shape {rel.shape}")
    if not np.isfinite(rel).all() or (rel < 0).any():
        raise ValueError(f"{name} must be finite and >= 0 (e.g. vote fractions in [0, 1]); fix or drop those rows")
    return rel


def dcg_at_k(relevance: Any, k: int) -> np.ndarray:
    """Discounted cumulative gain of ranked relevances (paper eq. 11).

    Args:
        relevance: ``(Q, K)`` (or ``(K,)``) relevances in rank order; ranks beyond ``K`` count as 0.
        k: Cut-off rank (>= 1).

    Returns:
        ``(Q,)`` float64 :math:`\\sum_{i \\le k} (2^{r_i} - 1) / \\log_2(i + 1)`.
    """
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    rel = _relevance_matrix("relevance", relevance)[:, :k]
    discount = np.log2(np.arange(2, rel.shape[1] + 2, dtype=np.float64))
    return ((np.exp2(rel) - 1.0) / discount).sum(axis=1)


def ndcg_at_k(relevance: Any, k: int = 10, ideal: Any = None, per_query: bool = False) -> float | np.ndarray:
    """Normalised DCG@k of retrieval results, averaged over queries (AION-1 paper, Sec. 7.2.3).

    Args:
        relevance: ``(Q, K)`` relevance of the retrieved items of each query, in rank order (best first). Soft
            relevances (any value >= 0) are allowed.
        k: Cut-off rank.
        ideal: Relevances of *all* candidates of each query, in any order: an ``(Q, M)`` array or a sequence of Q
            1-D arrays of any lengths. The ideal DCG uses their top ``k`` in descending order. Default: the rows of
            ``relevance`` themselves (the best possible re-ordering of what was retrieved).
        per_query: Return the ``(Q,)`` scores instead of their mean.

    Returns:
        Mean nDCG@k (float), or ``(Q,)`` scores. A query whose ideal DCG is 0 (no relevant candidate at all) scores 0.

    Raises:
        ValueError: Bad shapes, negative or non-finite relevances, ``ideal`` with a different number of queries, or
            an ideal DCG smaller than the achieved DCG (``ideal`` misses some retrieved relevances).
    """
    dcg = dcg_at_k(relevance, k)
    rel = _relevance_matrix("relevance", relevance)
    if ideal is None:
        candidates = [row for row in rel]
    elif isinstance(ideal, (list, tuple)):
        candidates = [_relevance_matrix(f"ideal[{q}]", row)[0] for q, row in enumerate(ideal)]
    else:
        candidates = list(_relevance_matrix("ideal", ideal))
    if len(candidates) != rel.shape[0]:
        raise ValueError(
            f"ideal has {len(candidates)} queries but relevance has {rel.shape[0]}; give one row per query"
        )
    idcg = np.array([dcg_at_k(np.sort(row)[::-1][None, :k], k)[0] for row in candidates])
    short = np.nonzero(idcg < dcg * (1 - 1e-12))[0]
    if short.size:
        raise ValueError(
            f"ideal DCG < achieved DCG for queries {short[:10].tolist()}: `ideal` must hold the relevances of all "
            "candidates, retrieved ones included"
        )
    scores = np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)
    return scores if per_query else float(scores.mean())


def recall_at_k(found: Any, truth: Any, k: int | None = None) -> float:
    """Mean fraction of each query's true top-``k`` ids that appear in its found top-``k`` (order ignored).

    Args:
        found: ``(Q, K1)`` ids returned by an approximate search.
        truth: ``(Q, K2)`` ids returned by exact search.
        k: Cut-off; default ``min(K1, K2)``.
    """
    found_ids, true_ids = _as_array("found", found), _as_array("truth", truth)
    if found_ids.ndim != 2 or true_ids.ndim != 2 or found_ids.shape[0] != true_ids.shape[0]:
        raise ValueError(
            f"found and truth must be (Q, K) id arrays with one Q, got {found_ids.shape}, {true_ids.shape}"
        )
    k = min(found_ids.shape[1], true_ids.shape[1]) if k is None else k
    hits = [len(set(f[:k].tolist()) & set(t[:k].tolist())) for f, t in zip(found_ids, true_ids)]
    return float(np.mean(hits) / k)
