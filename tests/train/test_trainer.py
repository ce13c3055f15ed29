"""The single-process trainer on the tokenized bundled sample: optimizer groups, schedule, config checks, loss going
down, exact resume from a checkpoint, SIGTERM, and export to the hub layout."""

from __future__ import annotations

import math
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from aion_fast.model import AION, architecture
from aion_fast.train.config import TrainConfig, load_config
from aion_fast.train.loop import Trainer, learning_rate_factor, parameter_groups
from tests.train.training_helpers import REPO_ROOT, read_losses, sample_shards_fixture, tiny_config, write_yaml

assert sample_shards_fixture  # the session fixture ``sample_shards``


def test_no_weight_decay_on_norms_biases_and_embeddings():
    keys = ["tok_image", "tok_z"]
    options = {"dim": 32, "encoder_depth": 1, "decoder_depth": 1, "num_heads": 2, "qkv_bias": True}
    model = AION(architecture(keys, keys, **options, norm_bias=True, num_register_tokens=1))
    decay, other = parameter_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and other["weight_decay"] == 0.0
    for name in decay["names"]:
        module = name.split(".")[-2]
        assert name.endswith(".weight") and "norm" not in module and module not in ("token_emb", "mod_emb"), name
    expected_other = {"mask_token", "register_tokens", "encoder_embeddings.tok_image.mod_emb",
                      "encoder_embeddings.tok_z.token_emb.weight", "encoder.0.norm1.weight", "encoder.0.norm1.bias",
                      "encoder.0.attn.qkv.bias", "decoder_norm.weight"}  # fmt: skip
    assert expected_other <= set(other["names"])
    assert (
        "encoder.0.attn.qkv.weight" in decay["names"] and "decoder_embeddings.tok_z.to_logits.weight" in decay["names"]
    )
    # Tied modality embeddings appear once; every trainable parameter is in exactly one group.
    assert len(decay["names"]) + len(other["names"]) == len(list(model.parameters()))


def test_learning_rate_warmup_then_cosine():
    factors = [learning_rate_factor(step, 10, 110, 0.1) for step in range(111)]
    assert factors[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert factors[10] == pytest.approx(1.0)
    assert factors[60] == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the cosine
    assert factors[110] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert learning_rate_factor(0, 0, 10, 0.0) == pytest.approx(1.0)
    assert learning_rate_factor(5, 0, 10, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_config_files_load_and_errors_name_the_key(tmp_path):
    for name in ("aion-tiny.yaml", "aion-base.yaml"):
        config = load_config(REPO_ROOT / "configs" / name)
        assert config.optim.betas == (0.9, 0.95) and config.optim.weight_decay == 0.05
    base = load_config(REPO_ROOT / "configs" / "aion-base.yaml")
    assert (base.data.input_budget, base.data.output_budget, base.train.precision) == (256, 128, "bf16")
    assert base.distributed.sharding == "zero2" and base.optim.lr == 2e-4
    good = {"data": {"sources": {"a": ["x"]}}}
    cases = [
        ({"trian": {}}, "unknown config section"),
        ({**good, "optim": {"learning_rate": 1e-3}}, r"unknown key\(s\) \['learning_rate'\] in section 'optim'"),
        ({**good, "optim": {"lr": "fast"}}, "optim.lr must be a number"),
        ({**good, "optim": {"betas": [0.9]}}, "optim.betas must be a list of two numbers"),
        ({**good, "train": {"precision": "fp16"}}, "train.precision"),
        ({**good, "distributed": {"sharding": "ddp"}}, "distributed.sharding"),
        ({**good, "data": {"sources": {"a": ["x"]}, "batch_size": 0}}, "data.batch_size must be >= 1"),
        ({**good, "model": {"architecture": {"width": 3}}}, r"model.architecture has unknown key\(s\) \['width'\]"),
        ({"data": {"sources": {}}}, "data.sources must map source names"),
    ]
    for values, message in cases:
        with pytest.raises(ValueError, match=message):
            TrainConfig.from_dict(values)
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def _trainer(tmp_path, shards, name="run", **sections) -> Trainer:
    return Trainer(TrainConfig.from_dict(tiny_config(tmp_path / name, shards, **sections)))


def _resume_copy(tmp_path, reference: str, step: int, name: str) -> None:
    """A run folder holding only ``reference``'s checkpoint of ``step``: what a run killed after it leaves."""
    checkpoint = f"step_{step:08d}"
    target = tmp_path / name / "checkpoints"
    shutil.copytree(tmp_path / reference / "checkpoints" / checkpoint, target / checkpoint)
    (target / "latest").write_text(checkpoint)


def test_loss_decreases_resume_is_exact_and_export_loads(tmp_path, sample_shards):
    from aion_fast.codecs import CodecManager
    from aion_fast.demo import ensure_demo_checkpoint

    settings = {"data": {"batch_size": 8}, "train": {"max_steps": 10},
                "checkpoint": {"every_steps": 5, "keep_last": 2},
                "export": {"codecs_from": str(ensure_demo_checkpoint())}}  # fmt: skip
    trainer = _trainer(tmp_path, sample_shards, "reference", **settings)
    metrics = trainer.train()
    losses = [m["loss"] for m in metrics]
    assert len(losses) == 10 and all(math.isfinite(x) for x in losses)
    # It starts near the uniform guess, ln(vocabulary): 1024 for most modalities, 4375 for images.
    assert math.log(1024) - 0.5 < losses[0] < math.log(4375) + 0.5
    # Masks and objects change every step, so single losses are noisy: compare averages of the first and last 3.
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first - 0.5, losses
    logged = read_losses(trainer.metrics_path)
    assert [logged[s] for s in range(1, 11)] == losses
    # Every trainable parameter got a gradient (FSDP ranks must reduce the same set; frozen ones are never used).
    assert all(p.grad is not None for p in trainer.objective.parameters() if p.requires_grad)

    # Export: the hub layout, loadable by AION.from_pretrained and CodecManager, equal to the trained weights.
    export = tmp_path / "reference" / "export"
    exported = AION.from_pretrained(export)
    trained = trainer.model.state_dict()
    for name, value in exported.state_dict().items():
        torch.testing.assert_close(value, trained[name], rtol=0, atol=0, msg=name)
    assert (export / "codecs").is_dir() and CodecManager(repo=str(export)) is not None

    # Resumed from the step-5 checkpoint, the next 5 steps are the uninterrupted run's, bit for bit.
    _resume_copy(tmp_path, "reference", 5, "resumed")
    resumed = _trainer(tmp_path, sample_shards, "resumed", **settings)
    assert resumed.step == 5
    after = resumed.train()
    assert [m["step"] for m in after] == list(range(6, 11))
    assert [m["loss"] for m in after] == losses[5:]
    assert [m["grad_norm"] for m in after] == [m["grad_norm"] for m in metrics[5:]]
    final = AION.from_pretrained(tmp_path / "resumed" / "export").state_dict()
    for name, value in exported.state_dict().items():
        assert torch.equal(final[name], value), name


def test_bf16_with_activation_checkpointing_resumes_exactly(tmp_path, sample_shards):
    settings = {"train": {"max_steps": 4, "precision": "bf16", "activation_checkpointing": True},
                "checkpoint": {"every_steps": 2, "keep_last": 2}}  # fmt: skip
    reference = _trainer(tmp_path, sample_shards, "reference", **settings)
    assert all(block.use_checkpoint for block in (*reference.model.encoder, *reference.model.decoder))
    metrics = reference.train()
    _resume_copy(tmp_path, "reference", 2, "resumed")
    after = _trainer(tmp_path, sample_shards, "resumed", **settings).train()
    assert [m["loss"] for m in after] == [m["loss"] for m in metrics[2:]]


def test_sigterm_checkpoints_at_a_step_boundary_and_exits(tmp_path, sample_shards):
    config = write_yaml(tmp_path / "run.yaml", tiny_config(tmp_path / "run", sample_shards,
                        train={"max_steps": 500}, checkpoint={"every_steps": 0}))  # fmt: skip
    command = [sys.executable, "-m", "aion_fast.train", "--config", str(config)]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.1)
    assert process.poll() is None, process.communicate()[1][-2000:]
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-2000:]
    last_step = max(read_losses(metrics))
    assert 2 <= last_step < 500
    checkpoints = tmp_path / "run" / "checkpoints"
    assert (checkpoints / "latest").read_text() == f"step_{last_step:08d}"
    assert not (tmp_path / "run" / "export").exists()  # unfinished runs are not exported


def test_train_command_is_registered():
    from aion_fast.cli import build_parser

    args = build_parser().parse_args(["train", "--config", "configs/aion-tiny.yaml", "--set", "train.max_steps=3"])
    assert args.config == "configs/aion-tiny.yaml" and args.set == ["train.max_steps=3"]
