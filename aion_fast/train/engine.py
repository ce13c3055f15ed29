"""The training machinery the transformer trainer and the codec trainer share.

* :func:`parameter_groups`: AdamW groups, weight decay on weight matrices only (none on norms, biases, embeddings).
* :func:`learning_rate_factor` / :func:`build_optimizer`: AdamW with linear warm-up, then cosine decay to
  ``min_lr_ratio * lr`` at ``max_steps`` (or a constant rate), as a ``LambdaLR`` whose state is checkpointed.
* :func:`apply_gradients`: global gradient-norm clipping, the AdamW step and the schedule step.
* :class:`MetricsLog`: one JSON line per logged step (and TensorBoard events when it is installed).
* :func:`run_steps`: the step loop: log every ``log_every``, checkpoint every ``every_steps``, on SIGTERM (at a step
  boundary every rank agrees on) and at the end.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aion_fast.train.config import OptimConfig
from aion_fast.train.distributed import StopSignal

__all__ = [
    "NO_DECAY_SUFFIXES",
    "MetricsLog",
    "apply_gradients",
    "build_optimizer",
    "learning_rate_factor",
    "parameter_groups",
    "restore_schedule",
    "run_steps",
    "step_seed",
]

#: Parameter names (suffixes) that never get weight decay besides norms and biases.
NO_DECAY_SUFFIXES = ("token_emb.weight", "mod_emb", "mask_token", "register_tokens")


def step_seed(seed: int, step: int, rank: int, stream: str = "masks") -> int:
    """A 63-bit seed for one (run seed, step, rank, purpose): draws do not depend on what ran before."""
    digest = hashlib.sha256(f"{seed}:{step}:{rank}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def learning_rate_factor(
    step: int, warmup_steps: int, max_steps: int, min_lr_ratio: float, schedule: str = "cosine"
) -> float:
    """Multiplier of the peak learning rate for the update made at ``step`` (0-based).

    Linear warm-up ``(step + 1) / warmup_steps`` for ``step < warmup_steps``, then a cosine from 1 down to
    ``min_lr_ratio`` reached at ``max_steps`` (``schedule="constant"``: 1 after the warm-up).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: decay on weight matrices; none on norms, biases and embeddings.

    A parameter is decayed when it has 2+ dimensions and is not an embedding (``token_emb``, ``mod_emb``), the mask
    token or a register token. Norm weights and biases are 1-D. Shared (tied) parameters appear once.

    Returns:
        ``[{"params": decayed, "weight_decay": weight_decay, "names": [...]}, {"params": other, "weight_decay": 0,
        "names": [...]}]``.
    """
    decay, no_decay, decay_names, no_decay_names = [], [], [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if parameter.ndim >= 2 and not name.endswith(NO_DECAY_SUFFIXES):
            decay.append(parameter)
            decay_names.append(name)
        else:
            no_decay.append(parameter)
            no_decay_names.append(name)
    return [
        {"params": decay, "weight_decay": weight_decay, "names": decay_names},
        {"params": no_decay, "weight_decay": 0.0, "names": no_decay_names},
    ]


def build_optimizer(
    model: nn.Module, optim: OptimConfig, max_steps: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR, dict[int, str]]:
    """AdamW over :func:`parameter_groups` of ``model`` and its warm-up + cosine (or constant) ``LambdaLR``.

    Returns:
        ``(optimizer, scheduler, names)``; ``names`` maps ``id(parameter)`` to its name.
    """
    groups = parameter_groups(model, optim.weight_decay)
    names = {id(p): n for g in groups for p, n in zip(g["params"], g["names"])}
    for group in groups:
        del group["names"]
    optimizer = torch.optim.AdamW(groups, lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps, foreach=True)

    def factor(step: int) -> float:
        return learning_rate_factor(step, optim.warmup_steps, max_steps, optim.min_lr_ratio, optim.schedule)

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor), names


def restore_schedule(
    optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR, state: dict[str, Any]
) -> None:
    """Loads a checkpointed schedule and sets each group's rate for the next step from this run's schedule.

    The optimizer state of a checkpoint holds the rate its run would use next; with the same settings this is the
    same number, with another ``max_steps`` or schedule the resumed run follows its own.
    """
    scheduler.load_state_dict(state)
    for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)


def apply_gradients(
    parameters: Iterable[torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    grad_clip: float,
) -> dict[str, float]:
    """Clips the global gradient norm to ``grad_clip`` (0 = no clipping), steps the optimizer and the schedule.

    Returns:
        ``grad_norm`` (before clipping) and ``lr`` (the rate this step used).
    """
    parameters = [p for p in parameters if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(parameters, grad_clip if grad_clip > 0 else float("inf"), foreach=True)
    if hasattr(norm, "full_tensor"):  # FSDP: a DTensor
        norm = norm.full_tensor()
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    scheduler.step()
    return {"grad_norm": float(norm), "lr": lr}


class MetricsLog:
    """Appends one JSON line per record to ``path``; TensorBoard events under ``tensorboard_dir`` when given and
    ``tensorboard`` is installed.

    Args:
        path: the ``.jsonl`` file (its folder is created).
        tensorboard_dir: where the event files go (None: none).
        tags: key/values added in front of every line (e.g. ``{"codec": "image"}``).
        enabled: False on ranks that do not write.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        tensorboard_dir: str | os.PathLike | None = None,
        tags: dict[str, Any] | None = None,
        enabled: bool = True,
    ):
        self.path = Path(path)
        self.tags = dict(tags or {})
        self.enabled = enabled
        self._tensorboard_dir = tensorboard_dir
        self._tensorboard: Any = None if tensorboard_dir is not None else False

    def write(self, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps({**self.tags, **metrics}) + "\n")
        if self._tensorboard is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self._tensorboard = False
            else:
                self._tensorboard = SummaryWriter(str(self._tensorboard_dir))
        if self._tensorboard:
            for name, value in metrics.items():
                if name != "step" and isinstance(value, int | float):
                    self._tensorboard.add_scalar(name, value, metrics["step"])

    def flush(self) -> None:
        if self._tensorboard:
            self._tensorboard.flush()


def run_steps(
    train_step: Callable[[], dict[str, Any]],
    current_step: Callable[[], int],
    max_steps: int,
    *,
    log: Callable[[dict[str, Any]], None],
    log_every: int,
    save: Callable[[], Any],
    every_steps: int,
    device: torch.device,
) -> tuple[list[dict[str, Any]], bool]:
    """Runs ``train_step`` until ``current_step() == max_steps`` or SIGTERM; logs and checkpoints.

    ``log`` gets steps 1, every ``log_every``-th and the last; ``save`` runs every ``every_steps`` steps (0 = never
    in between), when any rank got SIGTERM (then the loop stops) and at the end unless that step was just saved.

    Returns:
        ``(metrics of every step run, whether SIGTERM stopped the loop)``.
    """
    stop = StopSignal()
    run: list[dict[str, Any]] = []
    stopped = False
    try:
        while current_step() < max_steps:
            metrics = train_step()
            run.append(metrics)
            step = current_step()
            if step % log_every == 0 or step == 1 or step == max_steps:
                log(metrics)
            if stop.should_stop(device):
                stopped = True
                save()
                break
            if every_steps and step % every_steps == 0:
                save()
        if not stopped and (not every_steps or current_step() % every_steps):
            save()
    finally:
        stop.restore()
    return run, stopped
