"""Accuracy measures of a quantized model against its fp32 original (used by export, tests and bench)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["cosine_summary", "knn_overlap", "token_agreement"]


def cosine_summary(reference: Tensor, candidate: Tensor) -> dict[str, float]:
    """Per-object cosine similarity between two ``(n, D)`` embedding sets.

    Returns:
        ``median``, ``p1`` (1st percentile, linear interpolation), ``min`` and ``n``.

    Raises:
        ValueError: shapes differ or ``n == 0``.
    """
    if reference.shape != candidate.shape or reference.ndim != 2 or reference.shape[0] == 0:
        raise ValueError(
            f"expected two (n, D) embedding sets of one shape with n >= 1, got {tuple(reference.shape)} and "
            f"{tuple(candidate.shape)}"
        )
    cosine = torch.nn.functional.cosine_similarity(reference.double(), candidate.double(), dim=1)
    return {
        "median": float(cosine.median()),
        "p1": float(torch.quantile(cosine, 0.01)),
        "min": float(cosine.min()),
        "n": int(cosine.numel()),
    }


def knn_overlap(reference: Tensor, candidate: Tensor, k: int = 10) -> float:
    """Mean fraction of shared members between the k-nearest-neighbour sets (cosine, self excluded) of each object.

    Args:
        reference: ``(n, D)`` fp32 embeddings.
        candidate: ``(n, D)`` embeddings of the same objects from the quantized model.
        k: neighbours per object; must be < n.

    Returns:
        Overlap in [0, 1].

    Raises:
        ValueError: ``k`` not in ``[1, n)`` or shapes differ.
    """
    n = reference.shape[0]
    if reference.shape != candidate.shape or not 1 <= k < n:
        raise ValueError(f"knn_overlap needs two (n, D) sets of one shape and 1 <= k < n; got n={n}, k={k}")

    def neighbours(x: Tensor) -> Tensor:
        x = torch.nn.functional.normalize(x.double(), dim=1)
        similarity = x @ x.T
        similarity.fill_diagonal_(-float("inf"))
        return similarity.topk(k, dim=1).indices

    a, b = neighbours(reference), neighbours(candidate)
    shared = [len(set(ra.tolist()) & set(rb.tolist())) for ra, rb in zip(a, b)]
    return sum(shared) / (k * n)


def token_agreement(reference: Tensor, candidate: Tensor) -> float:
    """Fraction of equal token ids between two integer tensors of one shape."""
    if reference.shape != candidate.shape:
        raise ValueError(f"token tensors differ in shape: {tuple(reference.shape)} vs {tuple(candidate.shape)}")
    return float((reference == candidate).double().mean())
