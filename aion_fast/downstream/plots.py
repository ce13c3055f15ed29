"""PNG plots of probe predictions and retrieval results (matplotlib, headless ``Agg`` backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from aion_fast.downstream.metrics import confusion_matrix, r2_score

__all__ = ["plot_predictions", "plot_retrieval"]


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("plots need matplotlib: pip install 'aion-fast[downstream]'") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_predictions(y_true: Any, y_pred: Any, path: str | Path, title: str = "") -> Path:
    """Predicted vs true values (regression: scatter, 1:1 line, R² in the title; labels: confusion matrix).

    Args:
        y_true: ``(N,)`` truth (floats, or class labels).
        y_pred: ``(N,)`` predictions.
        path: Output PNG path.
        title: Title prefix.

    Returns:
        The written path.
    """
    plt = _pyplot()
    truth, pred = np.asarray(y_true), np.asarray(y_pred)
    figure, axes = plt.subplots(figsize=(5, 5))
    if np.issubdtype(truth.dtype, np.floating):
        axes.scatter(truth, pred, s=6, alpha=0.5)
        low, high = float(min(truth.min(), pred.min())), float(max(truth.max(), pred.max()))
        axes.plot([low, high], [low, high], color="black", linewidth=1)
        axes.set_xlabel("true")
        axes.set_ylabel("predicted")
        axes.set_title(f"{title} R² = {r2_score(truth, pred):.3f}".strip())
    else:
        matrix, labels = confusion_matrix(truth, pred)
        axes.imshow(matrix, cmap="Blues")
        for (row, col), count in np.ndenumerate(matrix):
            axes.text(col, row, str(count), ha="center", va="center")
        axes.set_xticks(range(len(labels)), [str(v) for v in labels])
        axes.set_yticks(range(len(labels)), [str(v) for v in labels])
        axes.set_xlabel("predicted")
        axes.set_ylabel("true")
        axes.set_title(f"{title} accuracy = {np.mean(truth == pred):.3f}".strip())
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)


def plot_retrieval(
    query_ids: Any, ids: Any, scores: Any, path: str | Path, images: dict[int, np.ndarray] | None = None
) -> Path:
    """Retrieval results: one row per query, with thumbnails when ``images`` are given, else similarity vs rank.

    Args:
        query_ids: ``(Q,)`` query object ids.
        ids: ``(Q, k)`` retrieved ids, best first.
        scores: ``(Q, k)`` cosine similarities.
        path: Output PNG path.
        images: Optional object id -> ``(H, W)`` or ``(H, W, 3)`` array for thumbnails (query in the first column).

    Returns:
        The written path.
    """
    plt = _pyplot()
    query_ids, ids, scores = np.atleast_1d(query_ids), np.atleast_2d(ids), np.atleast_2d(scores)
    if ids.shape != scores.shape or ids.shape[0] != len(query_ids):
        raise ValueError(f"ids {ids.shape} and scores {scores.shape} must be (Q, k) with Q = {len(query_ids)} queries")
    if images is None:
        figure, axes = plt.subplots(figsize=(6, 4))
        for query, row in zip(query_ids, scores):
            axes.plot(np.arange(1, len(row) + 1), row, marker="o", label=str(query))
        axes.set_xlabel("rank")
        axes.set_ylabel("cosine similarity")
        axes.legend(title="query", fontsize="small")
    else:
        columns = ids.shape[1] + 1
        figure, grid = plt.subplots(
            len(query_ids), columns, figsize=(1.6 * columns, 1.8 * len(query_ids)), squeeze=False
        )
        for q, query in enumerate(query_ids):
            cells = [(int(query), "query")] + [(int(i), f"{s:.3f}") for i, s in zip(ids[q], scores[q])]
            for axis, (object_id, caption) in zip(grid[q], cells):
                if object_id in images:
                    axis.imshow(np.asarray(images[object_id]))
                axis.set_title(f"{object_id}\n{caption}", fontsize=6)
                axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)
