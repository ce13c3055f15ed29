"""Summarises a pytest-benchmark JSON file as speed-up ratios per benchmark group.

Each benchmark records its implementation in ``extra_info["impl"]``: ``reference`` (the ``aion`` package),
``torch``, ``cpp`` or ``triton`` (aion_fast backends forced with AION_FAST_BACKEND), or ``aion_fast`` (whole
pipelines that pick their backends themselves). For every group with a ``reference`` run, one row per other
implementation gives medians, ``reference / impl`` (the speed-up) and throughput.

Usage: ``python bench/report.py bench/results/<file>.json`` (prints a Markdown table for bench/RESULTS.md).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

#: Row order within a group.
IMPL_ORDER = ("aion_fast", "torch", "cpp", "triton", "module")
#: Implementations whose rows are ops (``module`` rows are compared with the fastest of these in the same group).
OP_IMPLS = ("cpp", "triton")


def rows(data: dict) -> list[tuple[str, str, float, float, float, float, str]]:
    """(group, impl, reference median s, impl median s, reference / impl, items per s, unit) per comparison."""
    groups: dict[str, dict[str, dict]] = defaultdict(dict)
    for bench in data["benchmarks"]:
        groups[bench["group"]][bench["extra_info"].get("impl", bench["name"])] = bench
    out = []
    for group, impls in sorted(groups.items()):
        if "reference" not in impls:
            continue
        ref = impls["reference"]["stats"]["median"]
        others = sorted(
            (k for k in impls if k != "reference"),
            key=lambda k: (k not in IMPL_ORDER, IMPL_ORDER.index(k) if k in IMPL_ORDER else 0, k),
        )
        for impl in others:
            ours = impls[impl]["stats"]["median"]
            info = impls[impl]["extra_info"]
            items = info.get("items_per_call", 1)
            out.append((group, impl, ref, ours, ref / ours, items / ours, info.get("unit", "objects")))
    return out


def module_shares(data: dict) -> list[tuple[str, str, float, float, float]]:
    """(group, op impl, op median s, module median s, op / module) for groups with a ``module`` run: the share of
    the op's speed-up the quantizer module keeps (1.0 = all of it)."""
    groups: dict[str, dict[str, float]] = defaultdict(dict)
    for bench in data["benchmarks"]:
        groups[bench["group"]][bench["extra_info"].get("impl", bench["name"])] = bench["stats"]["median"]
    out = []
    for group, impls in sorted(groups.items()):
        ops = [(impls[k], k) for k in OP_IMPLS if k in impls]
        if "module" in impls and ops:
            op, name = min(ops)
            out.append((group, name, op, impls["module"], op / impls["module"]))
    return out


def main(path: str) -> None:
    with open(path) as handle:
        data = json.load(handle)
    machine = data.get("machine_info", {})
    first = data["benchmarks"][0]["extra_info"] if data["benchmarks"] else {}
    print(
        f"machine: {first.get('device', machine.get('cpu', {}).get('brand_raw', '?'))}; torch {first.get('torch')};"
        f" commit {first.get('commit')}; date {data.get('datetime', '?')[:10]}\n"
    )
    print("| benchmark | impl | reference median | impl median | speed-up (ref / impl) | throughput |")
    print("|---|---|---|---|---|---|")
    for group, impl, ref, ours, ratio, rate, unit in rows(data):
        print(f"| {group} | {impl} | {_time(ref)} | {_time(ours)} | {ratio:.2f}x | {rate:,.0f} {unit}/s |")
    shares = module_shares(data)
    if shares:
        print("\n| benchmark | op | op median | module median | module keeps (op / module) |")
        print("|---|---|---|---|---|")
        for group, name, op, module, share in shares:
            print(f"| {group} | {name} | {_time(op)} | {_time(module)} | {share:.0%} |")


def _time(seconds: float) -> str:
    if seconds >= 0.1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-4:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds * 1e6:.1f} us"


if __name__ == "__main__":
    main(sys.argv[1])
