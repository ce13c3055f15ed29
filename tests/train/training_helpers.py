"""Shared pieces of the trainer tests: the bundled MMU sample tokenized once, tiny configs, metrics readers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import aion_fast
from aion_fast.model.modality_info import MODALITY_INFO

SAMPLE_FILES = sorted(Path(aion_fast.__file__).parent.glob("data/sample/mmu/*/healpix=*/001-of-001.hdf5"))
REPO_ROOT = Path(__file__).resolve().parents[2]
BACKEND_ENV = "AION_FAST_BACKEND"

#: Width 64, 1 encoder + 1 decoder block: the AION-1-B block design (SwiGLU, QK-norm, no biases), tiny.
TINY_ARCHITECTURE = {"dim": 64, "encoder_depth": 1, "decoder_depth": 1, "num_heads": 4}


@pytest.fixture(scope="session", name="sample_shards")
def sample_shards_fixture(tmp_path_factory) -> Path:
    """The bundled MMU sample (8 Legacy Survey, 3 DESI, 16 Gaia objects) tokenized with the demo codecs."""
    from aion_fast.train.tokenize import tokenize_files

    output = tmp_path_factory.mktemp("sample_tokens")
    # The PyTorch backend gives the same tokens as the compiled one (tested in tests/ops); these tests are about
    # training, so they do not depend on the state of the extension build.
    previous = os.environ.get(BACKEND_ENV)
    os.environ[BACKEND_ENV] = "torch"
    try:
        tokenize_files(SAMPLE_FILES, output)
    finally:
        if previous is None:
            del os.environ[BACKEND_ENV]
        else:
            os.environ[BACKEND_ENV] = previous
    return output


def tiny_config(output_dir: Path, shards: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """A training config dict for the tiny model on the tokenized sample; ``sections`` update its sections."""
    config = {
        "output_dir": str(output_dir),
        "model": {"architecture": dict(TINY_ARCHITECTURE)},
        "data": {
            "sources": {
                "legacysurvey": [str(shards / "legacysurvey__healpix=0__001-of-001")],
                "desi": [str(shards / "desi__healpix=0__001-of-001")],
                "gaia": [str(shards / "gaia__healpix=0__001-of-001")],
            },
            "batch_size": 4,
            "input_budget": 96,
            "output_budget": 48,
        },
        "optim": {"lr": 2e-3, "warmup_steps": 3, "min_lr_ratio": 0.1},
        "train": {"max_steps": 10, "precision": "fp32", "activation_checkpointing": False, "log_every": 1},
        "distributed": {"timeout_s": 60},
        "checkpoint": {"every_steps": 4},
    }
    for name, values in sections.items():
        if isinstance(config.get(name), dict):
            config[name] = {**config[name], **values}
        else:
            config[name] = values
    return config


def write_yaml(path: Path, config: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(config))
    return path


def read_losses(metrics: Path) -> dict[int, float]:
    """step -> loss from a metrics.jsonl; a step logged twice (a resumed run) keeps its last line."""
    losses = {}
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        losses[record["step"]] = record["loss"]
    return losses


def torchrun_command(config: Path, nproc: int, port: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(port),
        "-m", "aion_fast.train", "--config", str(config), *extra,
    ]  # fmt: skip


def run_torchrun(config: Path, nproc: int, port: int, *extra: str, timeout: float = 240) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        torchrun_command(config, nproc, port, *extra), cwd=REPO_ROOT, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def random_batch(keys: list[str], batch: int, seed: int, keep: float = 0.6) -> tuple[dict, dict]:
    """Random token ids and per-object modality presence (every object keeps its first key)."""
    generator = torch.Generator().manual_seed(seed)
    tokens, present = {}, {}
    for index, key in enumerate(keys):
        spec = MODALITY_INFO[key]
        tokens[key] = torch.randint(0, spec.vocab_size, (batch, spec.num_tokens), generator=generator)
        has = torch.rand(batch, generator=generator) < keep if index else torch.ones(batch, dtype=torch.bool)
        present[key] = has[:, None].expand(-1, spec.num_tokens).clone()
        tokens[key] = tokens[key] * present[key]
    return tokens, present
