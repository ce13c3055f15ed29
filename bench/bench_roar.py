"""Redshift posterior by ROAR: 50 draws of Z per object from g/r/i/z photometry, reference vs aion_fast.

Both sides generate tokens from the same photometry tokens on identical weights (a width-384, 4+4-block model of
the AION-1-B architecture, random weights: the speed does not depend on training), in the same process. The
reference runs its own ROAR path (aion.fourm.generate.GenerationSampler) with the 50 draws batched as B x 50
chains; aion_fast runs aion_fast.generate.roar_generate, which calls the ROAR op (aion_fast/ops/roar.py,
``roar_step``) once per step. Throughput is draws (samples) per second.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import shapes
import torch

pytest.importorskip("aion", reason="needs the reference package aion (polymathic-aion): pip install -e .[test]")
from aion import AION as RefAION
from conftest import run_timed

from aion_fast import AION
from aion_fast.generate import roar_generate
from aion_fast.model import architecture

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.generate.reference_roar import reference_roar  # noqa: E402

DOMAINS = {"tok_flux_g": (1, 1024), "tok_flux_r": (1, 1024), "tok_flux_i": (1, 1024), "tok_flux_z": (1, 1024)}
NUM_SAMPLES = 50
BATCH = 16
SMALL = {"dim": 384, "encoder_depth": 4, "decoder_depth": 4, "num_heads": 6}
IMPLS = ["reference", "aion_fast"]


@pytest.fixture(scope="module")
def models(tmp_path_factory, bench_device):
    torch.manual_seed(0)
    keys = sorted([*DOMAINS, "tok_z"])
    ref = RefAION(architecture(keys, keys, **SMALL)).eval()
    root = tmp_path_factory.mktemp("aion_small")
    ref.save_pretrained(root)
    ours = AION.from_pretrained(root).to(bench_device).eval()
    return ref.to(bench_device), ours


@pytest.mark.parametrize("impl", IMPLS)
def test_redshift_posterior(benchmark, record, bench_device, models, impl):
    tokens = {k: v.to(bench_device) for k, v in shapes.random_tokens(DOMAINS, BATCH, seed=3).items()}
    benchmark.group = f"ROAR redshift posterior, {NUM_SAMPLES} draws x B={BATCH}, width {SMALL['dim']}"
    record(impl, BATCH * NUM_SAMPLES, unit="samples")
    ref, ours = models
    if impl == "reference":
        fn = lambda: reference_roar(ref, tokens, "tok_z", 1, NUM_SAMPLES, [1], temperature=1.0, seed=0)  # noqa: E731
    else:
        fn = lambda: roar_generate(ours, tokens, "tok_z", NUM_SAMPLES, [1], temperature=1.0, seed=0)  # noqa: E731
    with torch.inference_mode():
        out = run_timed(benchmark, fn, bench_device, rounds=5)
    assert out.shape == (BATCH, NUM_SAMPLES, 1)
