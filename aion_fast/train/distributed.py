"""Process group, FSDP2 sharding, activation checkpointing and torch.distributed.checkpoint (DCP) save/resume.

* :func:`init_distributed` joins the process group that ``torchrun`` describes (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) with a timeout, so a collective mismatch fails instead of
  hanging; one process without those variables runs without a group.
* :func:`shard_model` applies FSDP2 ``fully_shard`` to every encoder and decoder block, then to the root, with
  ``MixedPrecisionPolicy(param_dtype=bfloat16, reduce_dtype=float32)`` for bf16 runs. ``zero2`` (the AION-1 paper's
  setting; ZeRO-2-like) keeps each block's gathered parameters from its forward to its backward
  (``reshard_after_forward=False``): gradients and optimizer states are sharded, the parameters are gathered once
  per step. ``full`` reshards after forward too (ZeRO-3: least memory, one more all-gather per block).
* :func:`save_checkpoint` / :func:`load_checkpoint`: model and optimizer through DCP (``get_state_dict`` /
  ``set_state_dict``: sharded, each rank writes its shards), plus one small file per rank with the step, the
  learning-rate schedule and the data position. A checkpoint is written to ``step_XXXXXXXX.tmp`` and renamed
  when every rank has finished, then ``latest`` names it: a killed run never leaves a half checkpoint behind.
* :class:`StopSignal` turns SIGTERM (what ``torchrun``, SLURM and Kubernetes send before killing) into a flag that
  every rank agrees on at the next step boundary, so all ranks save together and exit.
"""

from __future__ import annotations

import datetime
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistributedContext",
    "StopSignal",
    "barrier",
    "enable_activation_checkpointing",
    "init_distributed",
    "latest_checkpoint",
    "load_checkpoint",
    "resolve_device",
    "save_checkpoint",
    "shard_model",
]

CHECKPOINT_PREFIX = "step_"
LATEST_FILE = "latest"


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands.

    Attributes:
        rank: global rank. world_size: number of processes. local_rank: rank on this node.
        device: the device this rank computes on. initialized_here: :func:`init_distributed` created the group
        (and :meth:`close` destroys it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def distributed(self) -> bool:
        """A process group is active."""
        return dist.is_available() and dist.is_initialized()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def close(self) -> None:
        """Destroys the process group if this context created it."""
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device: str = "auto", backend: str = "auto", timeout_s: float = 1800.0) -> DistributedContext:
    """Joins the process group described by the ``torchrun`` environment, if any.

    Args:
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda`` (then ``cuda:LOCAL_RANK``).
        backend: ``auto`` (nccl on CUDA, gloo on CPU), ``nccl`` or ``gloo``.
        timeout_s: timeout of every collective.

    Returns:
        The context; without ``WORLD_SIZE`` (or with ``WORLD_SIZE=1`` and no group) a single-process one.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    torch_device = resolve_device(device, local_rank)
    if torch_device.type == "cuda":
        torch.cuda.set_device(torch_device)
    initialized_here = False
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    elif world_size > 1:
        if backend == "auto":
            backend = "nccl" if torch_device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
        initialized_here = True
    return DistributedContext(rank, world_size, local_rank, torch_device, initialized_here)


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA when available), ``cpu`` or ``cuda`` (then ``cuda:local_rank``) as a torch device.

    Raises:
        ValueError: ``cuda`` without a CUDA device.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device("cuda", local_rank) if device == "cuda" else torch.device("cpu")


def barrier() -> None:
    """``dist.barrier()`` when a process group is active, else nothing."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def enable_activation_checkpointing(model: nn.Module) -> int:
    """Makes every encoder/decoder block recompute its activations in the backward pass (training only).

    Returns:
        The number of blocks switched.
    """
    count = 0
    for module in model.modules():
        if hasattr(module, "use_checkpoint"):
            module.use_checkpoint = True
            count += 1
    return count


def shard_model(
    module: nn.Module, blocks: list[nn.Module], sharding: str = "zero2", precision: str = "bf16"
) -> nn.Module:
    """Applies FSDP2 ``fully_shard`` to each block, then to ``module`` (the root: embeddings, norms, heads).

    Args:
        module: the root module (e.g. the :class:`~aion_fast.train.objective.MaskedModelingObjective`).
        blocks: its transformer blocks, each sharded (and all-gathered) on its own.
        sharding: ``zero2`` (``reshard_after_forward=False``) or ``full`` (``True``).
        precision: ``bf16`` (bf16 parameters in forward/backward, fp32 gradient reduction) or ``fp32``.

    Returns:
        ``module``, now an FSDP module (parameters are sharded DTensors).
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if sharding not in ("zero2", "full"):
        raise ValueError(f"sharding={sharding!r}; FSDP takes 'zero2' or 'full'")
    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if precision == "bf16"
        else MixedPrecisionPolicy()
    )
    reshard = sharding == "full"
    for block in blocks:
        fully_shard(block, mp_policy=policy, reshard_after_forward=reshard)
    fully_shard(module, mp_policy=policy, reshard_after_forward=reshard)
    return module


class StopSignal:
    """Records SIGTERM (and optionally SIGINT) so training can checkpoint and stop at a step boundary.

    Args:
        signals: the signals to catch.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)):
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        for sig in signals:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: cannot install handlers; never stops early
                pass

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum

    def should_stop(self, device: torch.device) -> bool:
        """True when any rank received a signal (an all-reduce, so every rank answers the same)."""
        flag = 1 if self.received is not None else 0
        if dist.is_available() and dist.is_initialized():
            value = torch.tensor([flag], dtype=torch.int32, device=device)
            dist.all_reduce(value, op=dist.ReduceOp.MAX)
            flag = int(value.item())
        return bool(flag)

    def restore(self) -> None:
        """Puts the previous handlers back."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


# ------------------------------------------------------------------------------------------------------------------
# Checkpoints


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:08d}"


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint under ``root`` (``None`` if there is none)."""
    root = Path(root)
    marker = root / LATEST_FILE
    if marker.is_file():
        candidate = root / marker.read_text().strip()
        if (candidate / ".metadata").is_file():
            return candidate
    complete = sorted(
        p for p in root.glob(f"{CHECKPOINT_PREFIX}*") if p.suffix != ".tmp" and (p / ".metadata").is_file()
    )
    return complete[-1] if complete else None


def save_checkpoint(
    root: str | os.PathLike,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    rank_state: dict[str, Any],
    rank: int = 0,
    keep_last: int = 2,
) -> Path:
    """Saves model and optimizer (DCP, sharded) and this rank's ``rank_state``; every rank must call it.

    Args:
        root: checkpoint folder of the run.
        step: optimizer steps done.
        model: the (possibly FSDP-sharded) module.
        optimizer: its optimizer.
        rank_state: this rank's small state (step, scheduler, data position): plain Python values and tensors.
        rank: this rank.
        keep_last: complete checkpoints kept; older ones are deleted by rank 0.

    Returns:
        The checkpoint folder.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    root = Path(root)
    final = root / checkpoint_name(step)
    staging = final.with_suffix(".tmp")
    if rank == 0:
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
    barrier()
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(staging))
    torch.save(rank_state, staging / f"rank{rank:05d}.pt")
    barrier()
    if rank == 0:
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        marker = root / f".{LATEST_FILE}.tmp"
        marker.write_text(final.name)
        marker.replace(root / LATEST_FILE)
        complete = sorted(p for p in root.glob(f"{CHECKPOINT_PREFIX}*") if p.suffix != ".tmp")
        for old in complete[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def load_checkpoint(
    path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer, rank: int = 0
) -> dict[str, Any]:
    """Loads a checkpoint written by :func:`save_checkpoint` into ``model`` and ``optimizer`` (in place).

    Returns:
        This rank's ``rank_state``.

    Raises:
        ValueError: the checkpoint lacks this rank's state (it was written with another number of processes).
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    path = Path(path)
    rank_file = path / f"rank{rank:05d}.pt"
    if not rank_file.is_file():
        raise ValueError(
            f"{path} has no state for rank {rank} ({rank_file.name}); resume with the number of processes that wrote "
            "it, or start a new run (a new output_dir)"
        )
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    return torch.load(rank_file, weights_only=True)
