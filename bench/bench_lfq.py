"""LFQ index ops: the reference quantizer (``aion``) vs aion_fast's ``torch``, ``cpp`` (CPU) and ``triton`` (CUDA)
paths, each forced with AION_FAST_BACKEND (``impl_env`` in bench/conftest.py).

The calls are the spectrum codec's own: (B, D, T) channel-first latents, dim 10 over 272 tokens. Every aion_fast
result is checked against the reference's before timing (encode: equal indices; decode: equal codes). The ``cpp``
rows time the public call as users make it (a CPU float32 ``lfq_encode`` takes the eager fast path to aion_fast._C).
The ``module`` row times ``LookupFreeQuantizer.encode`` (what a codec calls: int64 indices, nothing forced) in the
same run; ``python bench/report.py <json>`` prints reference / impl ratios and the share the module keeps.
"""

from __future__ import annotations

import pytest
import shapes
import torch

pytest.importorskip("aion", reason="needs the reference package aion (polymathic-aion): pip install -e .[test]")
from aion.codecs.quantizers import LucidrainsLFQ as RefLFQ
from conftest import QUANTIZER_IMPLS, op_batch, run_timed

from aion_fast.ops import lfq_decode, lfq_encode
from aion_fast.quantizers import LookupFreeQuantizer


@pytest.mark.parametrize("impl_env", [*QUANTIZER_IMPLS, "module"], indirect=True)
def test_lfq_encode(benchmark, record, bench_device, impl_env):
    batch, tokens = op_batch(bench_device), shapes.SPECTRUM_TOKENS - 1
    z = torch.randn(batch, shapes.LFQ_DIM, tokens, device=bench_device)
    benchmark.group = f"lfq_encode B={batch} x {tokens} tokens, dim {shapes.LFQ_DIM}"
    record(impl_env, batch * tokens, unit="tokens")
    ref = RefLFQ(dim=shapes.LFQ_DIM, codebook_size=2**shapes.LFQ_DIM).to(bench_device).eval()
    if impl_env == "reference":
        fn = lambda: ref.encode(z)  # noqa: E731
    elif impl_env == "module":
        module = LookupFreeQuantizer(dim=shapes.LFQ_DIM, codebook_size=2**shapes.LFQ_DIM).to(bench_device).eval()
        fn = lambda: module.encode(z)  # noqa: E731
        assert torch.equal(fn(), ref.encode(z).long())
    else:
        fn = lambda: lfq_encode(z, channel_first=True)  # noqa: E731
        assert torch.equal(fn().long(), ref.encode(z).long())
    with torch.inference_mode():
        run_timed(benchmark, fn, bench_device, rounds=50, warmup_rounds=3)


@pytest.mark.parametrize("impl_env", QUANTIZER_IMPLS, indirect=True)
def test_lfq_decode(benchmark, record, bench_device, impl_env):
    batch, tokens = op_batch(bench_device), shapes.SPECTRUM_TOKENS - 1
    ref = RefLFQ(dim=shapes.LFQ_DIM, codebook_size=2**shapes.LFQ_DIM).to(bench_device).eval()
    codes = torch.randint(0, 2**shapes.LFQ_DIM, (batch, tokens), device=bench_device)
    benchmark.group = f"lfq_decode B={batch} x {tokens} tokens, dim {shapes.LFQ_DIM}"
    record(impl_env, batch * tokens, unit="tokens")
    if impl_env == "reference":
        fn = lambda: ref.decode(codes)  # noqa: E731
    else:
        fn = lambda: lfq_decode(codes, shapes.LFQ_DIM)  # noqa: E731
        assert torch.equal(fn().movedim(-1, 1), ref.decode(codes))
    with torch.inference_mode():
        run_timed(benchmark, fn, bench_device, rounds=50, warmup_rounds=3)
