"""Summarises a pytest-benchmark JSON file as reference / aion_fast time ratios per benchmark group.

Usage: ``python bench/report.py bench/results/cpu.json`` (prints a Markdown table for bench/RESULTS.md).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def main(path: str) -> None:
    data = json.load(open(path))
    groups: dict[str, dict[str, dict]] = defaultdict(dict)
    for bench in data["benchmarks"]:
        groups[bench["group"]][bench["extra_info"].get("impl", bench["name"])] = bench
    machine = data.get("machine_info", {})
    first = data["benchmarks"][0]["extra_info"] if data["benchmarks"] else {}
    print(
        f"machine: {first.get('device', machine.get('cpu', {}).get('brand_raw', '?'))}; torch {first.get('torch')};"
        f" commit {first.get('commit')}; date {data.get('datetime', '?')[:10]}\n"
    )
    print("| benchmark | reference median (s) | aion_fast median (s) | speed-up (ref / ours) | aion_fast objects/s |")
    print("|---|---|---|---|---|")
    for group, impls in sorted(groups.items()):
        if "reference" not in impls or "aion_fast" not in impls:
            continue
        ref, ours = impls["reference"]["stats"]["median"], impls["aion_fast"]["stats"]["median"]
        items = impls["aion_fast"]["extra_info"].get("items_per_call", 1)
        print(f"| {group} | {ref:.3f} | {ours:.3f} | {ref / ours:.2f}x | {items / ours:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1])
