"""FSQ index ops: the reference quantizer (``aion``) vs aion_fast's ``torch``, ``cpp`` (CPU) and ``triton`` (CUDA)
paths, each forced with AION_FAST_BACKEND (``impl_env`` in bench/conftest.py).

The calls are the image codec's own: (B, D, T) channel-first latents, levels [7, 5, 5, 5, 5] over 576 tokens. Every
aion_fast result is checked against the reference's before timing (encode: equal indices; decode: equal codes).
The ``cpp`` rows time the public call as users make it: with AION_FAST_BACKEND unset or ``cpp``, a CPU float32
``fsq_encode`` takes the same eager fast path straight to aion_fast._C (see aion_fast/ops/fsq.py). The ``module``
row times ``FiniteScalarQuantizer.encode`` (what a codec calls: int64 indices, nothing forced) in the same run;
``python bench/report.py <json>`` prints reference / impl ratios and the share of the op's speed-up the module keeps.
"""

from __future__ import annotations

import pytest
import shapes
import torch

pytest.importorskip("aion", reason="needs the reference package aion (polymathic-aion): pip install -e .[test]")
from aion.codecs.quantizers import FiniteScalarQuantizer as RefFSQ
from conftest import QUANTIZER_IMPLS, op_batch, run_timed

from aion_fast.ops import fsq_decode, fsq_encode
from aion_fast.quantizers import FiniteScalarQuantizer


@pytest.mark.parametrize("impl_env", [*QUANTIZER_IMPLS, "module"], indirect=True)
def test_fsq_encode(benchmark, record, bench_device, impl_env):
    batch, levels = op_batch(bench_device), shapes.FSQ_LEVELS
    z = torch.randn(batch, len(levels), shapes.IMAGE_TOKENS, device=bench_device) * 2
    benchmark.group = f"fsq_encode B={batch} x {shapes.IMAGE_TOKENS} tokens, levels {levels}"
    record(impl_env, batch * shapes.IMAGE_TOKENS, unit="tokens")
    ref = RefFSQ(levels).to(bench_device)
    if impl_env == "reference":
        fn = lambda: ref.encode(z)  # noqa: E731
    elif impl_env == "module":
        module = FiniteScalarQuantizer(levels).to(bench_device)
        fn = lambda: module.encode(z)  # noqa: E731
        assert torch.equal(fn(), ref.encode(z).long())
    else:
        fn = lambda: fsq_encode(z, levels, channel_first=True)  # noqa: E731
        assert torch.equal(fn(), ref.encode(z))
    with torch.inference_mode():
        run_timed(benchmark, fn, bench_device, rounds=50, warmup_rounds=3)


@pytest.mark.parametrize("impl_env", QUANTIZER_IMPLS, indirect=True)
def test_fsq_decode(benchmark, record, bench_device, impl_env):
    batch, levels = op_batch(bench_device), shapes.FSQ_LEVELS
    ref = RefFSQ(levels).to(bench_device)
    codes = torch.randint(0, ref.codebook_size, (batch, shapes.IMAGE_TOKENS), device=bench_device)
    benchmark.group = f"fsq_decode B={batch} x {shapes.IMAGE_TOKENS} tokens, levels {levels}"
    record(impl_env, batch * shapes.IMAGE_TOKENS, unit="tokens")
    if impl_env == "reference":
        fn = lambda: ref.decode(codes)  # noqa: E731  (B, D, T)
    else:
        fn = lambda: fsq_decode(codes, levels)  # noqa: E731  (B, T, D): the reference's layout is a view of it
        assert torch.equal(fn().movedim(-1, 1), ref.decode(codes))
    with torch.inference_mode():
        run_timed(benchmark, fn, bench_device, rounds=50, warmup_rounds=3)
