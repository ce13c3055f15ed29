"""Probes on frozen AION-1 embeddings (AION-1 paper, Sec. 7.2): linear and two-layer MLP heads, attentive pooling
over the encoder's token outputs with a head, trained with early stopping on a validation split.

Regression targets are standardised with the training split's mean and spread (undone by :meth:`Probe.predict`);
classification labels of any type are mapped to class indices (and back). Vector inputs ``(N, D)`` are
standardised with the training split's feature statistics, stored in the probe.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aion_fast.downstream.pooling import AttentivePooling

__all__ = ["AttentiveProbe", "LinearProbe", "MLPProbe", "Probe", "fit_probe", "train_test_split"]

Task = Literal["regression", "classification"]


@dataclass
class FitHistory:
    """Per-epoch losses of :func:`fit_probe` (validation loss: MSE on standardised targets, or cross-entropy)."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False


class Probe(nn.Module):
    """Base class of the heads: input standardisation, target (de)standardisation or label mapping, ``predict``.

    Args:
        dim: Embedding width ``D``.
        out: Outputs: number of regression targets, or number of classes.
    """

    takes_tokens = False
    #: AdamW learning rate :func:`fit_probe` uses when none is given.
    default_lr = 1e-3

    def __init__(self, dim: int, out: int):
        super().__init__()
        if dim < 1 or out < 1:
            raise ValueError(f"dim and out must be >= 1, got dim={dim}, out={out}")
        self.dim, self.out = dim, out
        self.register_buffer("feature_mean", torch.zeros(dim))
        self.register_buffer("feature_scale", torch.ones(dim))
        self.register_buffer("target_mean", torch.zeros(out))
        self.register_buffer("target_scale", torch.ones(out))
        self.task: Task | None = None
        self.classes: np.ndarray | None = None
        self.history = FitHistory()

    def head(self, features: Tensor, padding: Tensor | None) -> Tensor:
        raise NotImplementedError

    def forward(self, features: Tensor, padding: Tensor | None = None) -> Tensor:
        """Raw outputs (standardised targets or class logits) ``(B, out)`` of ``(B, D)`` (or ``(B, T, D)``) inputs."""
        return self.head((features - self.feature_mean) / self.feature_scale, padding)

    @torch.no_grad()
    def predict(self, features: Any, padding: Any = None, batch_size: int = 4096) -> np.ndarray:
        """Predictions in target units (regression) or original labels (classification).

        Args:
            features: ``(N, D)`` embeddings (``(N, T, D)`` token outputs for :class:`AttentiveProbe`), numpy or torch.
            padding: ``(N, T)`` bool, True at padded tokens (token inputs only).
            batch_size: Rows per forward pass.

        Returns:
            ``(N,)`` (one target, or labels) or ``(N, out)`` numpy array.
        """
        if self.task is None:
            raise ValueError("this probe is not fitted; call fit_probe(probe, X, y) first")
        x, pad = _as_inputs(self, features, padding, "X")
        was_training = self.training
        self.eval()
        outputs = torch.cat(
            [self(x[i : i + batch_size], _slice(pad, i, batch_size)) for i in range(0, len(x), batch_size)]
        )
        self.train(was_training)
        if self.task == "classification":
            return self.classes[outputs.argmax(dim=1).numpy()]
        values = (outputs * self.target_scale + self.target_mean).numpy()
        return values[:, 0] if self.out == 1 else values

    @torch.no_grad()
    def predict_proba(self, features: Any, padding: Any = None) -> np.ndarray:
        """``(N, C)`` class probabilities, columns in the order of :attr:`classes` (classification only)."""
        if self.task != "classification":
            raise ValueError("predict_proba is for classification probes; this one is fitted for regression")
        x, pad = _as_inputs(self, features, padding, "X")
        was_training = self.training
        self.eval()
        probs = torch.softmax(self(x, pad), dim=1).numpy()
        self.train(was_training)
        return probs


class LinearProbe(Probe):
    """A linear head ``y = W e + b`` on ``(B, D)`` embeddings."""

    default_lr = 1e-2

    def __init__(self, dim: int, out: int):
        super().__init__(dim, out)
        self.linear = nn.Linear(dim, out)

    def head(self, features: Tensor, padding: Tensor | None) -> Tensor:
        return self.linear(features)


class MLPProbe(Probe):
    """Two-layer MLP head (paper Sec. 7.2.1: hidden 256, GELU), with dropout after the activation."""

    def __init__(self, dim: int, out: int, hidden: int = 256, dropout: float = 0.1):
        super().__init__(dim, out)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out))

    def head(self, features: Tensor, padding: Tensor | None) -> Tensor:
        return self.mlp(features)


class AttentiveProbe(Probe):
    """Attentive pooling (paper eq. 8) over the frozen encoder's token outputs, trained jointly with an MLP head.

    Inputs are ``(B, T, D)`` token outputs (``aion_fast.embed(model, tokens, pooling="none")`` or
    ``AION.encode_with_padding``) and a ``(B, T)`` padding mask. Features are not standardised (token outputs
    share one scale); the pooled ``(B, num_queries * D)`` vector feeds the head.
    """

    takes_tokens = True

    def __init__(
        self, dim: int, out: int, num_queries: int = 1, num_heads: int = 1, hidden: int = 256, dropout: float = 0.1
    ):
        super().__init__(dim, out)
        self.pool = AttentivePooling(dim, num_queries=num_queries, num_heads=num_heads)
        self.mlp = nn.Sequential(
            nn.LayerNorm(num_queries * dim),
            nn.Linear(num_queries * dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out),
        )

    def forward(self, features: Tensor, padding: Tensor | None = None) -> Tensor:
        return self.mlp(self.pool(features, padding).flatten(1))


def _slice(value: Tensor | None, start: int, size: int) -> Tensor | None:
    return None if value is None else value[start : start + size]


def _as_inputs(probe: Probe, features: Any, padding: Any, name: str) -> tuple[Tensor, Tensor | None]:
    """float32 CPU tensors of a probe's inputs, shape-checked (copies: the caller's arrays are never modified)."""
    x = torch.as_tensor(
        np.asarray(features.detach().cpu() if isinstance(features, Tensor) else features, dtype=np.float32)
    ).clone()
    want = "(N, T, D)" if probe.takes_tokens else "(N, D)"
    if x.ndim != (3 if probe.takes_tokens else 2) or x.shape[-1] != probe.dim or x.shape[0] == 0:
        raise ValueError(f"{name} must be {want} with D={probe.dim} for {type(probe).__name__}, got {tuple(x.shape)}")
    pad = None
    if padding is not None:
        if not probe.takes_tokens:
            raise ValueError(f"padding is only for token inputs (AttentiveProbe), not {type(probe).__name__}")
        pad = torch.as_tensor(np.asarray(padding.cpu() if isinstance(padding, Tensor) else padding, dtype=bool))
        if pad.shape != x.shape[:2]:
            raise ValueError(f"{name} padding must be (N, T) = {tuple(x.shape[:2])} bool, got {tuple(pad.shape)}")
    present = x if pad is None else x[~pad]
    if not bool(torch.isfinite(present).all()):
        rows = (
            torch.nonzero(
                ~torch.isfinite(x.flatten(1) if pad is None else x.masked_fill(pad[..., None], 0).flatten(1)).all(dim=1)
            )
            .flatten()[:10]
            .tolist()
        )
        raise ValueError(f"{name} has NaN/inf in rows {rows}; drop or re-encode those objects")
    return x, pad


def _as_targets(probe: Probe, labels: Any, rows: int, task: Task, name: str) -> np.ndarray:
    y = np.asarray(labels.detach().cpu().numpy() if isinstance(labels, Tensor) else labels)
    if y.shape[0] != rows:
        raise ValueError(f"{name} has {y.shape[0]} rows but the features have {rows}; give one target per object")
    if task == "regression":
        y = y.astype(np.float64).reshape(rows, -1)
        if y.shape[1] != probe.out:
            raise ValueError(f"{name} has {y.shape[1]} target column(s) but the probe has out={probe.out}")
        if not np.isfinite(y).all():
            raise ValueError(
                f"{name} has NaN/inf targets in rows {np.nonzero(~np.isfinite(y).all(1))[0][:10].tolist()}"
            )
    elif y.ndim != 1:
        raise ValueError(f"{name} class labels must be (N,), got {y.shape}")
    return y


def infer_task(labels: Any) -> Task:
    """``"classification"`` for integer, bool or string labels, ``"regression"`` for floats."""
    y = np.asarray(labels.detach().cpu().numpy() if isinstance(labels, Tensor) else labels)
    return "regression" if np.issubdtype(y.dtype, np.floating) else "classification"


def train_test_split(
    num_rows: int, test_fraction: float = 0.2, labels: Any = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Random row split, class-stratified when ``labels`` are given.

    Each class puts ``round(test_fraction * count)`` rows in the test part (at least one when it has two or more,
    never all); a class of one object stays in the training part.

    Returns:
        Sorted ``train_rows`` and ``test_rows`` (int64).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    groups = (
        [np.arange(num_rows)]
        if labels is None
        else [np.nonzero(np.asarray(labels) == c)[0] for c in np.unique(np.asarray(labels))]
    )
    test = []
    for rows in groups:
        if len(rows) < 2:
            continue
        count = min(max(1, round(test_fraction * len(rows))), len(rows) - 1)
        test.append(rng.permutation(rows)[:count])
    test_rows = np.sort(np.concatenate(test)) if test else np.zeros(0, dtype=np.int64)
    train_rows = np.setdiff1d(np.arange(num_rows), test_rows)
    return train_rows.astype(np.int64), test_rows.astype(np.int64)


def fit_probe(
    probe: Probe,
    X: Any,
    y: Any,
    val: tuple[Any, ...] | None = None,
    *,
    padding: Any = None,
    task: Task | None = None,
    val_fraction: float = 0.2,
    epochs: int = 500,
    batch_size: int = 256,
    lr: float | None = None,
    weight_decay: float = 1e-4,
    patience: int = 20,
    seed: int = 0,
) -> Probe:
    """Trains a probe on frozen embeddings with early stopping on validation loss; returns it at its best epoch.

    Args:
        probe: A :class:`LinearProbe`, :class:`MLPProbe` or :class:`AttentiveProbe` (``out`` = number of targets,
            or of classes).
        X: ``(N, D)`` embeddings, or ``(N, T, D)`` token outputs for :class:`AttentiveProbe` (numpy or torch).
        y: ``(N,)`` / ``(N, out)`` float targets, or ``(N,)`` class labels (int, bool or str).
        val: ``(X_val, y_val)`` or ``(X_val, y_val, padding_val)``; default: ``val_fraction`` of the rows (split by
            class for classification).
        padding: ``(N, T)`` bool, True at padded tokens (token inputs only).
        task: ``"regression"`` or ``"classification"``; default: from the dtype of ``y`` (floats: regression).
        val_fraction: Validation fraction when ``val`` is not given.
        epochs: Maximum epochs.
        batch_size: Mini-batch rows.
        lr: AdamW learning rate; default ``probe.default_lr`` (1e-2 linear, 1e-3 MLP and attentive).
        weight_decay: AdamW weight decay.
        patience: Epochs without a better validation loss before stopping.
        seed: Seed of the split, the initialisation-independent shuffling and dropout.

    Returns:
        The probe (trained in place), with ``task``, ``classes`` and ``history`` set.

    Raises:
        ValueError: Mismatched shapes, NaN/inf, a class count different from ``probe.out``, too few rows.
    """
    task = infer_task(y) if task is None else task
    if task not in ("regression", "classification"):
        raise ValueError(f"task must be 'regression' or 'classification', got {task!r}")
    x, pad = _as_inputs(probe, X, padding, "X")
    targets = _as_targets(probe, y, len(x), task, "y")
    if val is None:
        train_rows, val_rows = train_test_split(
            len(x), val_fraction, targets if task == "classification" else None, seed
        )
        if len(val_rows) == 0 or len(train_rows) == 0:
            raise ValueError(f"{len(x)} rows are too few to split off a validation set; pass val= or more rows")
        x_val, pad_val, y_val = x[val_rows], _take(pad, val_rows), targets[val_rows]
        x, pad, targets = x[train_rows], _take(pad, train_rows), targets[train_rows]
    else:
        if len(val) not in (2, 3):
            raise ValueError("val must be (X_val, y_val) or (X_val, y_val, padding_val)")
        x_val, pad_val = _as_inputs(probe, val[0], val[2] if len(val) == 3 else None, "val X")
        y_val = _as_targets(probe, val[1], len(x_val), task, "val y")

    probe.task = task
    if task == "classification":
        probe.classes = np.unique(targets)
        if len(probe.classes) != probe.out:
            raise ValueError(
                f"y has {len(probe.classes)} classes {probe.classes[:10].tolist()} but probe.out = "
                f"{probe.out}; build the probe with out={len(probe.classes)}"
            )
        unseen = sorted({str(v) for v in np.unique(y_val)} - {str(v) for v in probe.classes})
        if unseen:
            raise ValueError(f"validation labels {unseen} do not occur in the training labels")
        train_t = torch.as_tensor(np.searchsorted(probe.classes, targets))
        val_t = torch.as_tensor(np.searchsorted(probe.classes, y_val))
        loss_fn = F.cross_entropy
    else:
        mean, scale = targets.mean(axis=0), targets.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        probe.target_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        probe.target_scale.copy_(torch.as_tensor(scale, dtype=torch.float32))
        train_t = torch.as_tensor((targets - mean) / scale, dtype=torch.float32)
        val_t = torch.as_tensor((y_val - mean) / scale, dtype=torch.float32)
        loss_fn = F.mse_loss
    if not probe.takes_tokens:
        probe.feature_mean.copy_(x.mean(dim=0))
        probe.feature_scale.copy_(x.std(dim=0, unbiased=False).clamp_min(1e-6 * float(x.abs().max().clamp_min(1e-30))))

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(
        probe.parameters(), lr=probe.default_lr if lr is None else lr, weight_decay=weight_decay
    )
    history = FitHistory()
    best_loss, best_state, waited = math.inf, copy.deepcopy(probe.state_dict()), 0
    for epoch in range(epochs):
        probe.train()
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), batch_size):
            rows = order[start : start + batch_size]
            loss = loss_fn(probe(x[rows], _take(pad, rows)), train_t[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(rows)
        probe.eval()
        with torch.no_grad():
            val_loss = float(
                sum(
                    loss_fn(probe(x_val[i : i + 4096], _slice(pad_val, i, 4096)), val_t[i : i + 4096], reduction="sum")
                    for i in range(0, len(x_val), 4096)
                )
            ) / (len(x_val) * (1 if task == "classification" else probe.out))
        history.train_loss.append(total / len(x))
        history.val_loss.append(val_loss)
        if val_loss < best_loss:
            best_loss, best_state, waited, history.best_epoch = val_loss, copy.deepcopy(probe.state_dict()), 0, epoch
        else:
            waited += 1
            if waited >= patience:
                history.stopped_early = True
                break
    probe.load_state_dict(best_state)
    probe.eval()
    probe.history = history
    return probe


def _take(value: Tensor | None, rows: Any) -> Tensor | None:
    return None if value is None else value[torch.as_tensor(rows)]
