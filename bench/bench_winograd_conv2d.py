"""``winograd_conv2d`` at the base-size image codec's (MagViT) stride-1 3x3 and 7x7 layers: the reference's
``torch.nn.Conv2d`` forward (NCHW contiguous float32, what ``aion`` runs) vs aion_fast's ``cpp`` path (C++ tile
transforms + ``torch.bmm``, channels-last input, the transformed weight precomputed as the fast codec path caches it).

CPU only (the Winograd path is the codecs' ``precision="fast"`` CPU path; on a GPU host run with
``AION_FAST_BENCH_DEVICE=cpu``). Every ``cpp`` result is checked against the reference's before timing: max error
below ``TOL`` of max|reference| (Winograd differs from the direct convolution by float32 rounding; the measured
figures are in tests/ops/test_winograd_conv2d.py). Throughput is in GFLOP of the direct convolution per second.

Run: ``python -m pytest bench/bench_winograd_conv2d.py -o python_files='bench_*.py' -p no:randomly
--benchmark-json=bench/results/<file>.json`` then ``python bench/report.py bench/results/<file>.json``.
"""

from __future__ import annotations

import pytest
import shapes
import torch
from conftest import run_timed
from torch import nn

from aion_fast.ops.winograd_conv2d import DEFAULT_TILE, winograd_conv2d, winograd_weight

BATCH = 2
TOL = 2e-5  # relative to max|reference|
_HIDDEN = shapes.IMAGE_CODEC["hidden_dims"]  # 512
_SIZE = shapes.IMAGE_SIZE  # 96
#: (r, C_in, C_out, H = W): the base-size MagViT's residual-unit 3x3 convolutions at each resolution, its 7x7
#: bottleneck convolution and its 7x7 ``conv_in`` from the 54-channel band projection (aion_fast/codecs/nn/magvit.py).
LAYERS = [
    (3, _HIDDEN, _HIDDEN, _SIZE // 4),
    (3, _HIDDEN // 2, _HIDDEN // 2, _SIZE // 2),
    (3, _HIDDEN // 4, _HIDDEN // 4, _SIZE),
    (7, _HIDDEN, _HIDDEN, _SIZE // 4),
    (7, 54, 128, _SIZE),
]


def _relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize("impl_env", ["reference", "cpp"], indirect=True)
@pytest.mark.parametrize(("r", "c_in", "c_out", "size"), LAYERS, ids=lambda v: str(v))
def test_winograd_conv2d(benchmark, record, bench_device, impl_env, r, c_in, c_out, size):
    if bench_device != "cpu":
        pytest.skip("the Winograd convolution is the codecs' CPU fast path (AION_FAST_BENCH_DEVICE=cpu to run it)")
    benchmark.group = f"conv2d {r}x{r} {c_in}->{c_out} B={BATCH} {size}x{size}"
    record(impl_env, 2 * BATCH * size * size * c_in * c_out * r * r / 1e9, unit="GFLOP (direct)")
    g = torch.Generator().manual_seed(r * 1000 + c_in)
    with torch.inference_mode():
        conv = nn.Conv2d(c_in, c_out, r, padding=r // 2)
        x = torch.randn(BATCH, c_in, size, size, generator=g)  # NCHW contiguous, as the reference runs it
        if impl_env == "reference":
            fn = lambda: conv(x)  # noqa: E731
        else:
            m = DEFAULT_TILE[r]
            transformed = winograd_weight(conv.weight, m)
            x_cl = x.contiguous(memory_format=torch.channels_last)
            fn = lambda: winograd_conv2d(x_cl, conv.weight, conv.bias, m, transformed)  # noqa: E731
            err = _relative_error(fn(), conv(x))
            assert err < TOL, f"winograd F({m}, {r}) differs from nn.Conv2d by {err:.2e} of max|ref| (>= {TOL:.0e})"
        run_timed(benchmark, fn, bench_device, rounds=5, warmup_rounds=1)
