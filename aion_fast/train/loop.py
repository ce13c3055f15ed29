"""The AION-1 training loop: masked multimodal modeling with AdamW, warm-up + cosine, FSDP2 and DCP checkpoints.

``python -m aion_fast.train --config configs/aion-base.yaml`` (one process), or under ``torchrun --nproc_per_node N``
(one process per device; the same command), or ``aion-fast train --config ...``.

Per step, on every rank: take the next :class:`~aion_fast.train.tokens.TokenBatch` of this rank's
:class:`~aion_fast.train.tokens.MixedTokenDataset` stream; draw the AION-1 masks
(:func:`~aion_fast.train.masking.sample_masks`) from a generator seeded by ``(seed, step, rank)``; compute the
cross-entropy of the targets (:class:`~aion_fast.train.objective.MaskedModelingObjective`), normalised by the number
of target tokens of the global batch; backward; clip the global gradient norm; AdamW step; learning-rate schedule.

* **Optimizer**: AdamW (betas 0.9/0.95, weight decay 0.05 by default) with decay on weight matrices only: no decay on
  norms, biases, token/modality embeddings, the mask token and register tokens.
* **Schedule**: linear warm-up from 0 to ``lr`` over ``warmup_steps``, then cosine decay to ``min_lr_ratio * lr``
  at ``max_steps``.
* **Precision**: bf16. One process: ``torch.autocast(bfloat16)`` over fp32 weights. FSDP: bf16 parameters in
  forward/backward, fp32 master weights and fp32 gradient reduction (``MixedPrecisionPolicy``). The loss is
  computed in fp32.
* **Exact resume**: model and optimizer (DCP), scheduler, step and the data stream's position are saved every
  ``checkpoint.every_steps`` and on SIGTERM; masks and drop-path draws are seeded by ``(seed, step, rank)``. So a
  run killed and resumed from a checkpoint computes the same losses as an uninterrupted run (bit for bit on the same
  machine and process count).
* **CPU**: the trainer turns on ``torch.set_flush_denormal(True)`` for the process (subnormal optimizer states
  otherwise slow every step down by an order of magnitude).
* **Metrics**: rank 0 appends one JSON line per logged step to ``<output_dir>/metrics.jsonl`` (and writes
  TensorBoard events when ``tensorboard`` is installed).
* **Export**: at the end, the transformer is written in the hub layout (``config.json`` + ``model.safetensors``,
  loadable by ``AION.from_pretrained``), with the codecs of ``export.codecs_from`` copied beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from aion_fast.train.config import TrainConfig, parse_overrides
from aion_fast.train.distributed import (
    DistributedContext,
    enable_activation_checkpointing,
    init_distributed,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    shard_model,
)
from aion_fast.train.engine import (
    MetricsLog,
    apply_gradients,
    build_optimizer,
    learning_rate_factor,
    parameter_groups,
    restore_schedule,
    run_steps,
    step_seed,
)
from aion_fast.train.objective import MaskedModelingObjective

if TYPE_CHECKING:
    from aion_fast.cli import Subcommands

__all__ = ["Trainer", "learning_rate_factor", "parameter_groups", "register", "step_seed"]


def _shard_folders(paths: list[str]) -> list[Path]:
    from aion_fast.train.tokens import find_token_shards

    folders: list[Path] = []
    for path in map(Path, paths):
        if (path / "meta.json").is_file():
            folders.append(path)
        else:
            found = find_token_shards(path)
            if not found:
                raise ValueError(f"{path} holds no token shard (no */meta.json); run `aion-fast tokenize` into it")
            folders.extend(found)
    return folders


def build_dataset(config: TrainConfig, rank: int, world_size: int):
    """The :class:`~aion_fast.train.tokens.MixedTokenDataset` of ``config.data`` for this rank."""
    from aion_fast.train.tokens import MixedTokenDataset

    if not config.data.sources:
        raise ValueError("data.sources is empty; name token shard folders, e.g. {legacysurvey: [tokens/legacysurvey]}")
    sources = {name: _shard_folders(paths) for name, paths in config.data.sources.items()}
    return MixedTokenDataset(
        sources, config.data.batch_size, config.data.weights, seed=config.train.seed, rank=rank, world_size=world_size
    )


def build_model(config: TrainConfig, data_keys: list[str] | None):
    """A fresh AION of ``model.architecture`` (domains default to the data's token keys), or ``model.init_from``."""
    from aion_fast.model import AION, architecture
    from aion_fast.model.modality_info import MODALITY_INFO

    if config.model.init_from is not None:
        return AION.from_pretrained(config.model.init_from).train()
    overrides = dict(config.model.architecture)
    keys = sorted(key for key in (data_keys or []) if key in MODALITY_INFO)
    domains_in = overrides.pop("domains_in", None) or keys
    domains_out = overrides.pop("domains_out", None) or keys
    if not domains_in or not domains_out:
        raise ValueError("model.architecture needs domains_in and domains_out (or data with token keys to take them)")
    return AION(architecture(list(domains_in), list(domains_out), **overrides))


class Trainer:
    """Trains an AION transformer with the masked multimodal objective (see the module docstring).

    Args:
        config: The run's configuration.
        model: The transformer (default: built from ``config.model``); it is moved to the device and trained in place
            (under FSDP its parameters become sharded).
        dataset: An iterable of :class:`~aion_fast.train.tokens.TokenBatch` with ``state_dict()`` /
            ``load_state_dict()`` (default: the ``MixedTokenDataset`` of ``config.data`` for this rank). It is
            consumed in this process (no worker processes), so its state is the position of the stream.
        mask_sampler: ``(present, input_budget, output_budget, generator=...) -> (input_mask, target_mask)``
            (default :func:`aion_fast.train.masking.sample_masks` with ``data.target_beta``).
        context: Process-group context (default: :func:`init_distributed` from the environment).

    Raises:
        ValueError: Invalid settings (e.g. several processes with ``distributed.sharding: none``).
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        model: nn.Module | None = None,
        dataset: Any = None,
        mask_sampler: Callable[..., tuple[dict[str, Tensor], dict[str, Tensor]]] | None = None,
        context: DistributedContext | None = None,
    ):
        self.config = config
        cfg = config
        self.context = context or init_distributed(cfg.train.device, cfg.distributed.backend, cfg.distributed.timeout_s)
        ctx = self.context
        self.device = ctx.device
        if self.device.type == "cpu":
            # AdamW's second moments of tiny gradients turn subnormal, and x86 arithmetic on subnormals is very slow
            # (a tiny-model step was about ten times slower). Flush them to zero (process-wide setting).
            torch.set_flush_denormal(True)
        if ctx.world_size > 1 and cfg.distributed.sharding == "none":
            raise ValueError("distributed.sharding is 'none' but WORLD_SIZE > 1; use 'zero2' or 'full' with torchrun")
        self.dataset = dataset if dataset is not None else build_dataset(cfg, ctx.rank, ctx.world_size)
        if model is None:
            torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank (FSDP shards each rank's copy)
            model = build_model(cfg, list(getattr(self.dataset, "widths", {})))
        self.model = model.to(self.device).train()
        self.objective = MaskedModelingObjective(
            self.model, cfg.data.input_budget, cfg.data.output_budget, attention=cfg.train.attention
        )
        self.objective.freeze_unused_parameters()
        if cfg.train.activation_checkpointing:
            enable_activation_checkpointing(self.model)
        self.sharded = ctx.distributed and cfg.distributed.sharding != "none"
        if self.sharded:
            shard_model(
                self.objective,
                [*self.model.encoder, *self.model.decoder],
                cfg.distributed.sharding,
                cfg.train.precision,
            )
        self.model_keys = sorted(set(self.objective.input_keys) | set(self.objective.output_keys))
        if mask_sampler is None:
            from aion_fast.train.masking import sample_masks

            def mask_sampler(present, input_budget, output_budget, *, generator):
                return sample_masks(present, input_budget, output_budget, generator=generator,
                                    target_beta=tuple(cfg.data.target_beta))  # fmt: skip

        self.mask_sampler = mask_sampler
        self.optimizer, self.scheduler, self.parameter_names = build_optimizer(
            self.objective, cfg.optim, cfg.train.max_steps
        )
        self.step = 0
        self.output_dir = Path(cfg.output_dir)
        self.checkpoint_dir = self.output_dir / "checkpoints"
        self.metrics_path = self.output_dir / "metrics.jsonl"
        self.history: list[dict[str, Any]] = []
        self._iterator: Iterator | None = None
        self.metrics_log = MetricsLog(self.metrics_path, self.output_dir / "tensorboard", enabled=ctx.is_main)
        if ctx.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str))
        if cfg.checkpoint.resume:
            self.resume()

    # ------------------------------------------------------------------------------------------------------------
    # One step

    def _autocast(self):
        if self.config.train.precision == "bf16" and not self.sharded:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sample_masks(self, present: Mapping[str, Tensor], step: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """The masks of ``step`` on this rank (a pure function of seed, step, rank and ``present``)."""
        generator = torch.Generator().manual_seed(step_seed(self.config.train.seed, step, self.context.rank))
        model_present = {key: present[key].cpu() for key in present if key in self.model_keys}
        if not model_present:
            raise ValueError(f"the batch has none of the model's token keys {self.model_keys}")
        return self.mask_sampler(
            model_present, self.config.data.input_budget, self.config.data.output_budget, generator=generator
        )

    def compute_gradients(
        self, tokens: Mapping[str, Tensor], input_mask: Mapping[str, Tensor], target_mask: Mapping[str, Tensor]
    ) -> dict[str, Any]:
        """Forward and backward of one local batch; gradients hold d(global mean target CE)/d(weights).

        The local cross-entropy sum is divided by the number of targets of the global batch (all-reduced), and
        multiplied by the world size under FSDP, which averages gradients over ranks.

        Returns:
            ``loss`` (global mean CE), ``num_targets`` and ``num_inputs`` (global), ``loss_<key>`` per output key
            with targets.
        """
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            out = self.objective(tokens, input_mask, target_mask)
        num_inputs = sum(int((~mask).sum()) for key, mask in input_mask.items() if key in self.objective.input_keys)
        stats = torch.cat(
            [
                torch.stack([out["loss_sum"].detach().double(), out["num_targets"].double()]),
                torch.tensor([float(num_inputs)], dtype=torch.float64, device=out["loss_sum"].device),
                out["key_loss_sum"].double(),
                out["key_count"].double(),
            ]
        )
        if self.context.distributed:
            dist.all_reduce(stats)
        global_targets = max(stats[1].item(), 1.0)
        scale = (self.context.world_size if self.sharded else 1) / global_targets
        (out["loss_sum"] * scale).backward()
        keys = self.objective.output_keys
        key_sums, key_counts = stats[3 : 3 + len(keys)], stats[3 + len(keys) :]
        metrics = {
            "loss": stats[0].item() / global_targets,
            "num_targets": int(stats[1].item()),
            "num_inputs": int(stats[2].item()),
        }
        for key, total, count in zip(keys, key_sums.tolist(), key_counts.tolist()):
            if count > 0:
                metrics[f"loss_{key}"] = total / count
        return metrics

    def apply_gradients(self) -> dict[str, float]:
        """Clips the global gradient norm, takes the AdamW step and advances the schedule."""
        return apply_gradients(self.objective.parameters(), self.optimizer, self.scheduler, self.config.optim.grad_clip)

    def train_step(self, batch: Any) -> dict[str, Any]:
        """One optimizer step on this rank's ``batch`` (a TokenBatch); returns its metrics."""
        step = self.step
        input_mask, target_mask = self.sample_masks(batch.present, step)
        torch.manual_seed(step_seed(self.config.train.seed, step, self.context.rank, "model"))  # drop-path draws
        tokens = {key: batch.tokens[key].to(self.device) for key in batch.tokens if key in self.model_keys}
        metrics = self.compute_gradients(tokens, input_mask, target_mask)
        metrics.update(self.apply_gradients())
        self.step += 1
        metrics["step"] = self.step
        return metrics

    # ------------------------------------------------------------------------------------------------------------
    # The loop

    def _next_batch(self):
        if self._iterator is None:
            self._iterator = iter(self.dataset)
        return next(self._iterator)

    def train(self, max_steps: int | None = None) -> list[dict[str, Any]]:
        """Trains until ``max_steps`` (default ``train.max_steps``) or SIGTERM; checkpoints and exports.

        Returns:
            The metrics of every step run by this call (also in ``metrics.jsonl`` on rank 0, every ``log_every``).
        """
        cfg = self.config
        max_steps = cfg.train.max_steps if max_steps is None else max_steps

        def timed_step() -> dict[str, Any]:
            start = time.perf_counter()
            metrics = self.train_step(self._next_batch())
            metrics["step_time_s"] = time.perf_counter() - start
            tokens = metrics["num_inputs"] + metrics["num_targets"]
            metrics["tokens_per_s"] = tokens / max(metrics["step_time_s"], 1e-9)
            self.history.append(metrics)
            return metrics

        try:
            run, stopped = run_steps(timed_step, lambda: self.step, max_steps, log=self.metrics_log.write,
                                     log_every=cfg.train.log_every, save=self.save,
                                     every_steps=cfg.checkpoint.every_steps, device=self.device)  # fmt: skip
        finally:
            self.metrics_log.flush()
        if not stopped and self.step >= cfg.train.max_steps:
            self.export()
        return run

    # ------------------------------------------------------------------------------------------------------------
    # Checkpoints and export

    def save(self) -> Path:
        """Writes a checkpoint of the current step (every rank must call it)."""
        state = {
            "step": self.step,
            "scheduler": self.scheduler.state_dict(),
            "dataset": json.dumps(self.dataset.state_dict()),
            "world_size": self.context.world_size,
        }
        return save_checkpoint(
            self.checkpoint_dir,
            self.step,
            self.objective,
            self.optimizer,
            state,
            rank=self.context.rank,
            keep_last=self.config.checkpoint.keep_last,
        )

    def resume(self, path: str | Path | None = None) -> bool:
        """Loads the newest checkpoint of the run (or ``path``); returns whether one was loaded."""
        path = latest_checkpoint(self.checkpoint_dir) if path is None else Path(path)
        if path is None:
            return False
        state = load_checkpoint(path, self.objective, self.optimizer, rank=self.context.rank)
        if int(state["world_size"]) != self.context.world_size:
            raise ValueError(
                f"{path} was written by {state['world_size']} processes, this run has {self.context.world_size}; "
                "resume with the same number, or start a new output_dir"
            )
        self.step = int(state["step"])
        restore_schedule(self.optimizer, self.scheduler, state["scheduler"])
        self.dataset.load_state_dict(json.loads(state["dataset"]))
        self._iterator = None
        return True

    def full_state_dict(self) -> dict[str, Tensor]:
        """The transformer's full (unsharded) fp32 state dict on the CPU, on rank 0 (empty elsewhere); collective."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(self.objective, options=options)
        prefix = "model."
        return {name[len(prefix) :]: value for name, value in state.items() if name.startswith(prefix)}

    def export(self, directory: str | Path | None = None) -> Path:
        """Writes the transformer in the hub layout (+ the codecs of ``export.codecs_from``); every rank calls it."""
        from aion_fast.model import AION

        directory = Path(directory or self.config.export.directory or self.output_dir / "export")
        state = self.full_state_dict()
        if self.context.is_main:
            with torch.device("meta"):
                model = AION(self.model.config.to_dict(), initialize_weights=False)
            missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
            tied = {decoder for _, decoder in model.tied_parameter_groups()}
            if unexpected or set(missing) - tied:
                raise ValueError(f"exported state dict does not fit the model: missing {missing}, extra {unexpected}")
            model.tie_modality_embeddings()
            model.save_pretrained(directory)
            if self.config.export.codecs_from is not None:
                codecs = Path(self.config.export.codecs_from) / "codecs"
                if not codecs.is_dir():
                    raise ValueError(f"export.codecs_from={self.config.export.codecs_from!r} has no codecs/ folder")
                shutil.copytree(codecs, directory / "codecs", dirs_exist_ok=True)
            info = {"step": self.step, "config": self.config.to_dict(), "last_metrics": self.history[-1:]}
            (directory / "training.json").write_text(json.dumps(info, indent=2, default=str))
        if self.context.distributed:
            dist.barrier()
        return directory


# ----------------------------------------------------------------------------------------------------------------
# Command line


def run_from_args(args: argparse.Namespace) -> int:
    """Runs training from parsed command-line arguments (``--config``, ``--set``)."""
    from aion_fast.train.config import load_config

    config = load_config(args.config, parse_overrides(args.set or []))
    trainer = Trainer(config)
    try:
        metrics = trainer.train()
        if trainer.context.is_main:
            last = metrics[-1] if metrics else {}
            print(json.dumps({"step": trainer.step, "loss": last.get("loss"), "output_dir": str(trainer.output_dir)}))
    finally:
        trainer.context.close()
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="training YAML (e.g. configs/aion-tiny.yaml)")
    parser.add_argument(
        "--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value (repeatable)"
    )


def register(commands: Subcommands) -> None:
    """Adds ``train``: masked multimodal training of the transformer (also under ``torchrun``)."""
    parser = commands.add_parser("train", help="train the transformer on token shards (torchrun for several GPUs)")
    add_arguments(parser)
    parser.set_defaults(run=run_from_args)
