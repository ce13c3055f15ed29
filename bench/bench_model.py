"""Transformer encode throughput (base size), reference vs aion_fast on identical weights and tokens."""

from __future__ import annotations

import pytest
import shapes
import torch

pytest.importorskip("aion", reason="needs the reference package aion (polymathic-aion): pip install -e .[test]")
from aion import AION as RefAION
from conftest import run_timed

from aion_fast import AION, embed
from aion_fast.model import architecture

#: Image + spectrum + 3 scalars: 852 tokens per object, the reference's measured workload.
DOMAINS = {
    "tok_image": (576, 4375),
    "tok_spectrum_desi": (273, 1024),
    "tok_flux_g": (1, 1024),
    "tok_flux_r": (1, 1024),
    "tok_flux_z": (1, 1024),
}
IMPLS = ["reference", "aion_fast"]


@pytest.fixture(scope="module")
def models(tmp_path_factory, bench_device):
    torch.manual_seed(0)
    config = architecture(sorted(DOMAINS), sorted(DOMAINS))
    ref = RefAION(config).eval()
    root = tmp_path_factory.mktemp("aion_base")
    ref.save_pretrained(root)
    ours = AION.from_pretrained(root).to(bench_device).eval()
    return ref.to(bench_device), ours


@pytest.mark.parametrize("impl", IMPLS)
def test_aion_encode(benchmark, record, bench_device, models, impl):
    batch = shapes.BATCH[bench_device]
    tokens = {k: v.to(bench_device) for k, v in shapes.random_tokens(DOMAINS, batch).items()}
    n_tokens = shapes.tokens_per_object(DOMAINS)
    benchmark.group = f"AION.encode base B={batch} N={n_tokens}"
    record(impl, batch)
    ref, ours = models
    if impl == "reference":
        fn = lambda: ref.encode(tokens, num_encoder_tokens=n_tokens)  # noqa: E731
    else:
        fn = lambda: ours.encode(tokens)  # noqa: E731
    with torch.inference_mode():
        out = run_timed(benchmark, fn, bench_device, rounds=2)
    assert out.shape == (batch, n_tokens, shapes.TRANSFORMER_BASE["dim"])


@pytest.mark.parametrize("impl", IMPLS)
def test_mean_embedding(benchmark, record, bench_device, models, impl):
    """The README recipe (encode + mean) vs aion_fast.embed."""
    batch = shapes.BATCH[bench_device]
    tokens = {k: v.to(bench_device) for k, v in shapes.random_tokens(DOMAINS, batch, seed=1).items()}
    n_tokens = shapes.tokens_per_object(DOMAINS)
    benchmark.group = f"mean embedding base B={batch} N={n_tokens}"
    record(impl, batch)
    ref, ours = models
    if impl == "reference":
        fn = lambda: ref.encode(tokens, num_encoder_tokens=n_tokens).mean(dim=1)  # noqa: E731
    else:
        fn = lambda: embed(ours, tokens, pooling="mean")  # noqa: E731
    with torch.inference_mode():
        out = run_timed(benchmark, fn, bench_device, rounds=2)
    assert out.shape == (batch, shapes.TRANSFORMER_BASE["dim"])
