"""Where the base-size networks spend their CPU time: per-op time and achieved GFLOP/s against a measured sgemm peak.

Run: ``python bench/profile_cpu.py [--batch 2] [--precision fp32|fast] [--only image,spectrum,encoder]``.

The sgemm peak (best of several 2048^3 float32 products) is measured in the same process right before each network,
because this machine is shared and its throughput moves by 3-4x. Per op: total time, share of the network's time,
GFLOP (convolutions and matrix products, counted as 2 * MACs by ``torch.profiler``) and GFLOP/s as a fraction of
that peak.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import shapes  # noqa: E402
import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from aion_fast import modalities as m  # noqa: E402
from aion_fast.codecs import ImageCodec, SpectrumCodec  # noqa: E402
from aion_fast.model import AION, architecture  # noqa: E402
from aion_fast.precision import precision_context, resolve_precision  # noqa: E402

#: Image + spectrum + 3 fluxes: 852 tokens per object (bench_model's workload).
DOMAINS = {
    "tok_image": (576, 4375),
    "tok_spectrum_desi": (273, 1024),
    "tok_flux_g": (1, 1024),
    "tok_flux_r": (1, 1024),
    "tok_flux_z": (1, 1024),
}


def sgemm_peak(n: int = 2048, repeats: int = 5) -> float:
    """Best float32 GFLOP/s of an ``n x n x n`` matrix product over ``repeats`` calls."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def exact_flops(fn) -> int:
    """FLOPs of ``fn`` on the exact path (the fast path's fused oneDNN operators have no FLOP formula)."""
    from torch.utils.flop_counter import FlopCounterMode

    with precision_context("fp32", "cpu"), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def report(name: str, fn, repeats: int, top: int) -> None:
    """Profiles one warm call of ``fn`` and prints the op table against a fresh sgemm peak."""
    fn()  # warm-up (allocator, oneDNN primitive caches, prepacked weights)
    peak = sgemm_peak()
    wall = best_time(fn, repeats)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=True) as prof:
        fn()
    events = prof.key_averages(group_by_input_shape=True)
    # self time: nested ops (aten::conv2d -> mkldnn_convolution) are counted once
    total_us = sum(e.self_cpu_time_total for e in events)
    flops = sum(e.flops for e in events) or exact_flops(fn)
    print(f"\n== {name}: {wall:.3f} s per call (best of {repeats}), sgemm peak {peak:.0f} GFLOP/s")
    rate = flops / wall / 1e9
    print(f"   counted GFLOP {flops / 1e9:.1f} -> {rate:.1f} GFLOP/s = {rate / peak:.0%} of peak")
    rows = []
    by_flops = {}
    for e in events:  # flops are attributed to the outer op (aten::conv2d / aten::addmm); time to the innermost
        key = (e.key, str(e.input_shapes)[:90])
        by_flops[key] = by_flops.get(key, 0) + e.flops
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]:
        rows.append((e.key, str(e.input_shapes)[:90], e.count, e.self_cpu_time_total / 1e3))
    print(f"   {'op':34s} {'calls':>5s} {'ms':>9s} {'share':>6s}  input shapes")
    for key, shape, count, ms in rows:
        print(f"   {key[:34]:34s} {count:5d} {ms:9.1f} {ms * 1e3 / total_us:6.1%}  {shape}")
    convs = [(k, f) for k, f in by_flops.items() if f]
    print(f"   {'flop-counted op':34s} {'GFLOP':>7s} {'ms(total)':>9s} {'GF/s':>6s} {'%peak':>6s}  input shapes")
    totals = {(e.key, str(e.input_shapes)[:90]): e.cpu_time_total / 1e3 for e in events}
    for (key, shape), f in sorted(convs, key=lambda kv: -kv[1])[:top]:
        ms = totals[(key, shape)]
        rate = f / (ms / 1e3) / 1e9 if ms else 0.0
        print(f"   {key[:34]:34s} {f / 1e9:7.2f} {ms:9.1f} {rate:6.1f} {rate / peak:6.0%}  {shape}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2, help="objects per call (default 2)")
    parser.add_argument("--precision", default="fp32", help="fp32 (exact) or fast")
    parser.add_argument("--only", default="image,spectrum,encoder", help="comma-separated networks to profile")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--top", type=int, default=14)
    args = parser.parse_args(argv)
    precision = resolve_precision(args.precision)
    wanted = set(args.only.split(","))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, precision {precision}")
    torch.manual_seed(0)
    with torch.inference_mode(), precision_context(precision, "cpu"):
        if "image" in wanted:
            codec = ImageCodec(**shapes.IMAGE_CODEC).eval()
            image = m.LegacySurveyImage(flux=shapes.legacy_images(args.batch), bands=shapes.LEGACY_BANDS)
            report("image codec encode (MagViT, 512 hidden)", lambda: codec.encode(image), args.repeats, args.top)
        if "spectrum" in wanted:
            codec = SpectrumCodec(**shapes.SPECTRUM_CODEC).eval()
            spectrum = m.DESISpectrum(**shapes.desi_spectra(args.batch))
            report("spectrum codec encode (ConvNeXt-V2)", lambda: codec.encode(spectrum), args.repeats, args.top)
        if "encoder" in wanted:
            model = AION(architecture(sorted(DOMAINS), sorted(DOMAINS))).eval()
            tokens = shapes.random_tokens(DOMAINS, args.batch)
            report("AION.encode (12 blocks, d=768, N=852)", lambda: model.encode(tokens), args.repeats, args.top)


if __name__ == "__main__":
    main()
