"""Two-process FSDP2 training on CPU (gloo): gradients equal the single-process ones, a run killed with SIGKILL (or
stopped with SIGTERM) and resumed from its checkpoint reproduces the uninterrupted run's losses exactly, and the
loss goes down over 50 steps (slow).

Every collective has a 60 s timeout (config ``distributed.timeout_s``) and every launch a wall-clock limit, so a
gloo mismatch fails the test instead of hanging it.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from aion_fast.train.config import TrainConfig
from tests.train.training_helpers import REPO_ROOT, read_losses, sample_shards_fixture, tiny_config, write_yaml

assert sample_shards_fixture  # the session fixture ``sample_shards``

GLOBAL_BATCH = 8
WORLD_SIZE = 2


def _global_batch(shards: Path):
    """8 objects of all three surveys (4 Legacy Survey, 2 DESI, 2 Gaia), every token key of the sample."""
    from aion_fast.train.tokens import TokenShard, collate_token_batches

    parts = [
        TokenShard(shards / "legacysurvey__healpix=0__001-of-001").take([0, 1, 2, 3]),
        TokenShard(shards / "desi__healpix=0__001-of-001").take([0, 1]),
        TokenShard(shards / "gaia__healpix=0__001-of-001").take([0, 1]),
    ]
    order = torch.tensor([0, 4, 6, 1, 2, 5, 7, 3])  # each rank's half mixes the surveys
    batch = collate_token_batches(parts)
    return {k: v[order] for k, v in batch.tokens.items()}, {k: v[order] for k, v in batch.present.items()}


def _one_step_gradients(config: TrainConfig, shards: Path, rank: int, world_size: int) -> dict[str, torch.Tensor]:
    """Gradients of one step on this rank's rows of the global batch (full tensors; every rank must call it)."""
    from aion_fast.train.loop import Trainer

    trainer = Trainer(config)
    tokens, present = _global_batch(shards)
    input_mask, target_mask = trainer.mask_sampler(
        {k: v for k, v in present.items() if k in trainer.model_keys},
        config.data.input_budget,
        config.data.output_budget,
        generator=torch.Generator().manual_seed(1234),
    )
    rows = slice(rank * GLOBAL_BATCH // world_size, (rank + 1) * GLOBAL_BATCH // world_size)
    local = [{k: v[rows] for k, v in d.items()} for d in (tokens, input_mask, target_mask)]
    trainer.compute_gradients(*local)
    gradients = {}
    for name, parameter in trainer.objective.named_parameters():
        if parameter.grad is not None:
            grad = parameter.grad
            gradients[name] = (grad.full_tensor() if hasattr(grad, "full_tensor") else grad).detach().float().clone()
    return gradients


def _gradient_worker(rank: int, init_file: str, config: dict, shards: str, output: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE,
        timeout=datetime.timedelta(seconds=60),
    )  # fmt: skip
    try:
        gradients = _one_step_gradients(TrainConfig.from_dict(config), Path(shards), rank, WORLD_SIZE)
        if rank == 0:
            torch.save(gradients, output)
    finally:
        dist.destroy_process_group()


def _spawn_gradients(tmp_path: Path, name: str, config: dict, shards: Path) -> dict[str, torch.Tensor]:
    output = tmp_path / f"{name}.pt"
    context = mp.start_processes(
        _gradient_worker, args=(str(tmp_path / f"{name}.init"), config, str(shards), str(output)),
        nprocs=WORLD_SIZE, join=False, start_method="spawn",
    )  # fmt: skip
    deadline = time.monotonic() + 240
    try:
        while not context.join(timeout=2):
            assert time.monotonic() < deadline, "the 2-process gradient run did not finish in 240 s"
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    return torch.load(output, weights_only=True)


def _relative_error(got: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    difference = sum(float((got[n] - reference[n]).double().square().sum()) for n in reference)
    norm = sum(float(reference[n].double().square().sum()) for n in reference)
    return (difference / norm) ** 0.5


@pytest.fixture(scope="module")
def gradient_configs(sample_shards, tmp_path_factory):
    root = tmp_path_factory.mktemp("gradients")
    configs = {}
    for precision in ("fp32", "bf16"):
        for sharding in ("zero2", "full"):
            configs[(precision, sharding)] = tiny_config(
                root / f"{precision}-{sharding}", sample_shards, train={"precision": precision},
                distributed={"sharding": sharding, "timeout_s": 60}, checkpoint={"resume": False},
            )  # fmt: skip
    return configs


@pytest.fixture(scope="module")
def single_process_gradients(gradient_configs, sample_shards):
    assert "WORLD_SIZE" not in os.environ
    return {
        precision: _one_step_gradients(
            TrainConfig.from_dict(gradient_configs[(precision, "zero2")]), sample_shards, 0, 1
        )
        for precision in ("fp32", "bf16")
    }


@pytest.mark.parametrize("sharding", ["zero2", pytest.param("full", marks=pytest.mark.slow)])
def test_fsdp_fp32_gradients_match_single_process(
    tmp_path, sample_shards, gradient_configs, single_process_gradients, sharding
):
    reference = single_process_gradients["fp32"]
    sharded = _spawn_gradients(tmp_path, sharding, gradient_configs[("fp32", sharding)], sample_shards)
    assert sorted(sharded) == sorted(reference)
    for name, value in reference.items():
        # fp32 sums in another order (two half-batch sums averaged by reduce-scatter): rounding-level changes.
        torch.testing.assert_close(sharded[name], value, rtol=1e-4, atol=1e-7, msg=f"{sharding}: {name}")
    assert _relative_error(sharded, reference) < 1e-5


def test_fsdp_bf16_gradients_are_as_close_as_single_process_bf16(
    tmp_path, sample_shards, gradient_configs, single_process_gradients
):
    """bf16 FSDP (bf16 parameters, fp32 reduction) vs fp32: within twice the error of one-process bf16 autocast."""
    reference = single_process_gradients["fp32"]
    autocast_error = _relative_error(single_process_gradients["bf16"], reference)
    sharded = _spawn_gradients(tmp_path, "bf16", gradient_configs[("bf16", "zero2")], sample_shards)
    fsdp_error = _relative_error(sharded, reference)
    assert 0 < autocast_error < 0.05
    assert fsdp_error <= 2 * autocast_error, (fsdp_error, autocast_error)


def _torchrun(config: Path, nproc: int = WORLD_SIZE) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "-m", "aion_fast.train", "--config", str(config)]  # fmt: skip


def _run(command: list[str], timeout: float = 300) -> None:
    result = subprocess.run(command, cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            capture_output=True, text=True, timeout=timeout)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _interrupt_after_checkpoint(command: list[str], run_dir: Path, sig: int, timeout: float = 300) -> int:
    """Starts ``command``, sends ``sig`` to its whole process group once a checkpoint exists; returns its step."""
    process = subprocess.Popen(command, cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    latest = run_dir / "checkpoints" / "latest"
    deadline = time.monotonic() + timeout
    try:
        while not latest.exists():
            assert process.poll() is None, f"the run ended before its first checkpoint: {process.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "no checkpoint appeared in time"
            time.sleep(0.05)
        os.killpg(process.pid, sig)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return int(latest.read_text().removeprefix("step_")) if sig == signal.SIGKILL else -1


def _metric_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_process_run_killed_and_resumed_reproduces_the_next_10_losses(tmp_path, sample_shards):
    settings = {"train": {"max_steps": 14}, "checkpoint": {"every_steps": 4, "keep_last": 4}}
    reference_config = write_yaml(tmp_path / "reference.yaml", tiny_config(tmp_path / "reference", sample_shards,
                                                                           **settings))  # fmt: skip
    _run(_torchrun(reference_config))
    reference = read_losses(tmp_path / "reference" / "metrics.jsonl")
    assert sorted(reference) == list(range(1, 15))

    run_dir = tmp_path / "killed"
    config = write_yaml(tmp_path / "killed.yaml", tiny_config(run_dir, sample_shards, **settings))
    resumed_from = _interrupt_after_checkpoint(_torchrun(config), run_dir, signal.SIGKILL)
    assert resumed_from in (4, 8)
    _run(_torchrun(config))
    lines = _metric_lines(run_dir)
    resumed = lines[-(14 - resumed_from) :]
    assert [line["step"] for line in resumed] == list(range(resumed_from + 1, 15))
    next_10 = resumed[:10] if resumed_from == 4 else resumed
    assert len(next_10) >= 6
    assert [line["loss"] for line in next_10] == [reference[line["step"]] for line in next_10]  # bit for bit
    assert (run_dir / "export" / "model.safetensors").is_file()


@pytest.mark.slow
def test_two_process_50_steps_loss_decreases_and_sigterm_resume_is_exact(tmp_path, sample_shards):
    settings = {"data": {"batch_size": 4}, "train": {"max_steps": 50},
                "checkpoint": {"every_steps": 0, "keep_last": 2}}  # fmt: skip
    reference_config = write_yaml(tmp_path / "reference.yaml", tiny_config(tmp_path / "reference", sample_shards,
                                                                           **settings))  # fmt: skip
    _run(_torchrun(reference_config), timeout=900)
    losses = [read_losses(tmp_path / "reference" / "metrics.jsonl")[s] for s in range(1, 51)]
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 1.0, losses

    # SIGTERM (what torchrun, SLURM and Kubernetes send first): every rank checkpoints the step it is at and exits.
    run_dir = tmp_path / "terminated"
    config = write_yaml(tmp_path / "terminated.yaml", tiny_config(run_dir, sample_shards, **settings))
    process = subprocess.Popen(_torchrun(config), cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 5):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()[-3000:]
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=300)
    stopped_at = int((run_dir / "checkpoints" / "latest").read_text().removeprefix("step_"))
    assert 5 <= stopped_at < 40
    _run(_torchrun(config), timeout=900)
    lines = _metric_lines(run_dir)[-(50 - stopped_at) :]
    assert [line["step"] for line in lines] == list(range(stopped_at + 1, 51))
    assert [line["loss"] for line in lines[:10]] == losses[stopped_at : stopped_at + 10]
