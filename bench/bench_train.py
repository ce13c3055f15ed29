"""Training throughput: tokens per second of one full training step (masks, forward, backward, AdamW).

The reference package has no training code, so there is no reference to compare with: each group compares
aion_fast's own settings (attention ``padded`` vs ``packed``, ``fp32`` vs ``bf16``) on the same batch, and
``extra_info`` records ``tokens_per_s`` (encoder inputs + decoder targets of the step) and, on GPU, the model FLOP
utilisation ``mfu`` (6 x transformer-block parameters x tokens per step, the usual estimate without attention
scores and without the activation-checkpointing recompute, over the device's dense bf16 peak).

* CPU: the tiny model of the tests (width 64, 1 + 1 blocks) on objects with an image, a DESI spectrum and 12
  scalars, budgets 256 / 128, batch 8.
* GPU (when present): AION-1-B (width 768, 12 + 12 blocks), bf16, activation checkpointing, batch 64; ``packed``
  uses flash-attn's varlen kernels when flash-attn is installed (``extra_info["attention_backend"]``).

Run: ``python -m pytest bench/bench_train.py -o python_files='bench_*.py' \
    --benchmark-json=bench/results/train-cpu-2core-<commit>.json``.
"""

from __future__ import annotations

import os

import pytest
import torch
from conftest import run_timed

from aion_fast.model import AION, architecture
from aion_fast.model.modality_info import MODALITY_INFO
from aion_fast.train.config import TrainConfig
from aion_fast.train.loop import Trainer
from aion_fast.train.tokens import TokenBatch

SCALARS = ["tok_flux_g", "tok_flux_r", "tok_flux_i", "tok_flux_z", "tok_flux_w1", "tok_flux_w2", "tok_flux_w3",
           "tok_flux_w4", "tok_shape_r", "tok_shape_e1", "tok_shape_e2", "tok_ebv"]  # fmt: skip
KEYS = ["tok_image", "tok_spectrum_desi", *SCALARS, "tok_z"]

#: Dense bf16 peak FLOP/s by device name fragment (NVIDIA data sheets, SXM parts); AION_FAST_PEAK_FLOPS overrides.
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}

SETTINGS = {
    "cpu": {"architecture": {"dim": 64, "encoder_depth": 1, "decoder_depth": 1, "num_heads": 4}, "batch": 8,
            "checkpointing": False},
    "cuda": {"architecture": {}, "batch": 64, "checkpointing": True},
}  # fmt: skip
CASES = [("padded", "fp32"), ("packed", "fp32"), ("padded", "bf16"), ("packed", "bf16")]


class _RepeatedBatch:
    """A dataset yielding one batch forever (the benchmark times the step, not the data)."""

    def __init__(self, batch: TokenBatch):
        self.batch = batch

    def __iter__(self):
        while True:
            yield self.batch

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def _batch(size: int) -> TokenBatch:
    generator = torch.Generator().manual_seed(0)
    tokens, present = {}, {}
    for key in KEYS:
        spec = MODALITY_INFO[key]
        tokens[key] = torch.randint(0, spec.vocab_size, (size, spec.num_tokens), generator=generator)
        # Every object has the image and the scalars; 3 in 4 have a spectrum, 1 in 2 a redshift.
        keep = {"tok_spectrum_desi": 0.75, "tok_z": 0.5}.get(key, 1.0)
        has = torch.rand(size, generator=generator) < keep
        present[key] = has[:, None].expand(-1, spec.num_tokens).clone()
    return TokenBatch(tokens=tokens, present=present, object_ids=[str(i) for i in range(size)])


def _block_parameters(model: AION) -> tuple[int, int]:
    count = lambda blocks: sum(p.numel() for b in blocks for p in b.parameters())  # noqa: E731
    return count(model.encoder), count(model.decoder)


@pytest.mark.parametrize(("attention", "precision"), CASES, ids=[f"{a}-{p}" for a, p in CASES])
def test_train_step(benchmark, record, bench_device, tmp_path, attention, precision):
    if bench_device == "cuda" and precision == "fp32":
        pytest.skip("base-size GPU training is benchmarked in bf16 only")
    setting = SETTINGS[bench_device]
    config = TrainConfig.from_dict(
        {
            "output_dir": str(tmp_path),
            "model": {"architecture": setting["architecture"]},
            "data": {"sources": {"bench": ["unused"]}, "batch_size": setting["batch"]},
            "train": {
                "max_steps": 1000,
                "precision": precision,
                "attention": attention,
                "device": bench_device,
                "activation_checkpointing": setting["checkpointing"],
            },  # fmt: skip
            "checkpoint": {"resume": False},
        }
    )
    torch.manual_seed(0)
    model = AION(architecture(KEYS, KEYS, **setting["architecture"]))
    batch = _batch(setting["batch"])
    trainer = Trainer(config, model=model, dataset=_RepeatedBatch(batch))
    benchmark.group = f"train step {bench_device} B={setting['batch']} budgets 256/128"
    record(f"{attention}-{precision}", setting["batch"])
    metrics = run_timed(benchmark, lambda: trainer.train_step(batch), bench_device, rounds=3, warmup_rounds=1)
    tokens = metrics["num_inputs"] + metrics["num_targets"]
    seconds = benchmark.stats.stats.median
    info = {"tokens_per_step": tokens, "tokens_per_s": tokens / seconds, "loss": metrics["loss"]}
    if bench_device == "cuda":
        from aion_fast.model.attention import varlen_backend

        encoder_params, decoder_params = _block_parameters(trainer.model)
        flops = 6 * (encoder_params * metrics["num_inputs"] + decoder_params * metrics["num_targets"])
        name = torch.cuda.get_device_name()
        peak = float(os.environ.get("AION_FAST_PEAK_FLOPS", 0)) or next(
            (value for fragment, value in PEAK_BF16_FLOPS.items() if fragment in name), float("nan")
        )
        probe = torch.empty(1, 1, 64, device="cuda", dtype=torch.bfloat16)
        info |= {"mfu": flops / seconds / peak, "model_flops_per_s": flops / seconds,
                 "attention_backend": varlen_backend(probe)[0] if attention == "packed" else "sdpa"}  # fmt: skip
    benchmark.extra_info.update(info)
    assert torch.isfinite(torch.tensor(metrics["loss"]))
