"""Quantizer index op throughput in one run: the reference quantizer's ``encode`` vs aion_fast's PyTorch path vs its
C++ path (CPU); on CUDA the Triton path. Every aion_fast result is checked against the reference's (exact indices).
"""

from __future__ import annotations

import pytest
import shapes
import torch
from aion.codecs.quantizers import FiniteScalarQuantizer as RefFSQ
from aion.codecs.quantizers import LucidrainsLFQ as RefLFQ
from conftest import run_timed

from aion_fast.ops import fsq_encode, lfq_encode

IMPLS = ["reference", "torch", "cpp"]  # impl_env (bench/conftest.py) forces the aion_fast backend
CPU_BATCH = 64


@pytest.mark.parametrize("impl_env", IMPLS, indirect=True)
def test_fsq_encode(benchmark, record, bench_device, impl_env):
    batch = CPU_BATCH if bench_device == "cpu" else shapes.BATCH[bench_device]
    z = torch.randn(batch, len(shapes.FSQ_LEVELS), shapes.IMAGE_TOKENS, device=bench_device) * 2
    benchmark.group = f"fsq_encode B={batch} x {shapes.IMAGE_TOKENS} tokens, levels {shapes.FSQ_LEVELS}"
    record(impl_env, batch * shapes.IMAGE_TOKENS, unit="tokens")
    ref = RefFSQ(shapes.FSQ_LEVELS).to(bench_device)
    if impl_env == "reference":
        fn = lambda: ref.encode(z)  # noqa: E731
    else:
        fn = lambda: fsq_encode(z.movedim(1, -1), shapes.FSQ_LEVELS)  # noqa: E731
        assert torch.equal(fn(), ref.encode(z))
    run_timed(benchmark, fn, bench_device, rounds=20)


@pytest.mark.parametrize("impl_env", IMPLS, indirect=True)
def test_lfq_encode(benchmark, record, bench_device, impl_env):
    batch = CPU_BATCH if bench_device == "cpu" else shapes.BATCH[bench_device]
    tokens = shapes.SPECTRUM_TOKENS - 1
    z = torch.randn(batch, shapes.LFQ_DIM, tokens, device=bench_device)
    benchmark.group = f"lfq_encode B={batch} x {tokens} tokens, dim {shapes.LFQ_DIM}"
    record(impl_env, batch * tokens, unit="tokens")
    ref = RefLFQ(dim=shapes.LFQ_DIM, codebook_size=2**shapes.LFQ_DIM).to(bench_device).eval()
    if impl_env == "reference":
        fn = lambda: ref.encode(z)  # noqa: E731
    else:
        fn = lambda: lfq_encode(z.movedim(1, -1))  # noqa: E731
        assert torch.equal(fn().long(), ref.encode(z).long())
    with torch.inference_mode():
        run_timed(benchmark, fn, bench_device, rounds=20)
