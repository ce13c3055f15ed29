"""bench/results/ holds one naming scheme: ``<bench>-<device>-<threads>[-<variant>]-<commit>.json``."""

import json
import re
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"
NAME = re.compile(
    r"^(?P<bench>[a-z_]+)-(?P<device>cpu|h100|h200)-(?P<threads>\d+thread|\d+core|\d+gpu)"
    r"(-[a-z0-9]+)*-(?P<commit>[0-9a-f]{7})\.json$"
)


#: Stems of bench files since split by op (2026-12-03: bench_ops.py into bench_image_preprocess.py and its three
#: siblings, bench_quantizers.py into bench_fsq.py / bench_lfq.py); their past results keep the names they were made
#: under.
RETIRED_STEMS = {"ops", "quantizers"}


def _bench_stems() -> set[str]:
    stems = {path.stem.removeprefix("bench_") for path in RESULTS.parent.glob("bench_*.py")}
    return stems | {"all"} | RETIRED_STEMS


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_result_file_follows_the_naming_scheme(path):
    match = NAME.match(path.name)
    assert match, f"{path.name}: rename to <bench>-<device>-<threads>[-<variant>]-<commit>.json (README, Benchmarks)"
    assert match["bench"] in _bench_stems(), f"{path.name}: {match['bench']!r} is no bench/bench_*.py stem"
    recorded = json.loads(path.read_text()).get("commit_info", {}).get("id", "")
    assert recorded.startswith(match["commit"]), f"{path.name}: measured commit {recorded[:7]} differs from the name"
