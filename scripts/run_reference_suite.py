"""Runs a local copy of the reference AION test suite against aion_fast with only the imports changed.

Usage (from the repository root, with the test venv)::

    .venv/bin/python scripts/run_reference_suite.py /path/to/AION/tests            # against aion_fast
    .venv/bin/python scripts/run_reference_suite.py /path/to/AION/tests --package aion   # against the reference
    .venv/bin/python scripts/run_reference_suite.py /path/to/AION --select codecs   # a repository root works too
    .venv/bin/python scripts/run_reference_suite.py /path/to/AION/tests --compare --synthetic-hub-cache

The suite folder (``tests/`` of github.com/PolymathicAI/AION, with its ``conftest.py`` and ``test_data/``) is copied
into a temporary directory; with ``--package aion_fast`` every ``from aion...`` / ``import aion`` line is rewritten
to aion_fast. pytest then runs offline (``HF_HUB_OFFLINE=1``) with its own empty configuration, and the script
prints the counts and every test that did not pass with the last line of its error. Nothing is fetched: tests that
need the hub weights or git-LFS tensors the copy lacks fail, against either package. ``--synthetic-hub-cache``
serves random-weight codecs written by the reference from a local cache instead of the hub, for the tests that only
need some weights of the right layout (caching, batch sizes, loading).

Exit status: 0 when every collected test passed (with ``--compare``: when every test that passes against the
reference passes too), 1 otherwise, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

_FROM_IMPORT = re.compile(r"^(\s*)from\s+aion(?=[\s.])", re.MULTILINE)
_BARE_IMPORT = re.compile(r"^(\s*)import\s+aion\s*$", re.MULTILINE)


def rewrite_imports(source: str) -> str:
    """``from aion(.x) import ...`` -> ``from aion_fast(.x) import ...``; ``import aion`` -> ``import aion_fast as
    aion``. Other text (strings, ``aion_fast`` imports) is left as it is."""
    source = _FROM_IMPORT.sub(r"\1from aion_fast", source)
    return _BARE_IMPORT.sub(r"\1import aion_fast as aion", source)


def _suite_dir(path: Path) -> Path:
    if (path / "tests" / "conftest.py").is_file():
        return path / "tests"
    if path.is_dir() and any(path.rglob("test_*.py")):
        return path
    raise SystemExit(f"error: {path} holds no test suite (expected a tests/ folder with test_*.py); pass its path")


def _outcomes(report: Path) -> list[tuple[str, str, str]]:
    """(test id, outcome, last line of the message) per test case of a JUnit XML report."""
    rows = []
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                text = (node.text or node.get("message") or "").strip().splitlines()
                errors = [line[1:].strip() for line in text if line.startswith("E ")]  # pytest's "E   ..." lines
                message = errors[-1] if errors else (text[-1] if text else "")
                break
        rows.append((name, outcome, message))
    return rows


#: Builds, with the reference package, a hub cache holding random-weight codecs of ``polymathic-ai/aion-base`` in the
#: folders the suite's hub tests read (image, FLUX_G, SHAPE_E1), laid out as huggingface_hub's cache.
_SYNTHETIC_CACHE = """
import sys, pathlib, torch
from aion import codecs, modalities as m
root = pathlib.Path(sys.argv[1]) / "models--polymathic-ai--aion-base"
snapshot = root / "snapshots" / ("0" * 40)
torch.manual_seed(0)
codecs.ImageCodec(quantizer_levels=[7, 5, 5, 5, 5], hidden_dims=32, num_consecutive=1).save_pretrained(
    snapshot, modality=m.LegacySurveyImage)
flux = codecs.LogScalarCodec("FLUX_G", 1024, 4000)
flux._quantizer._update_reservoirs(torch.exp(torch.randn(6000)))
flux.save_pretrained(snapshot, modality=m.LegacySurveyFluxG)
shape = codecs.ScalarCodec("SHAPE_E1", 1024, 4000)
shape._quantizer._update_reservoirs(torch.randn(6000) * 0.2)
shape.save_pretrained(snapshot, modality=m.LegacySurveyShapeE1)
(root / "refs").mkdir()
(root / "refs" / "main").write_text("0" * 40)
"""


def make_synthetic_cache(directory: Path, python: str) -> Path:
    """Writes the synthetic hub cache (needs the reference package ``aion`` in ``python``'s environment)."""
    directory.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([python, "-c", _SYNTHETIC_CACHE, str(directory)], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"error: could not build the synthetic hub cache (is polymathic-aion installed?):\n"
                         f"{result.stderr[-2000:]}")  # fmt: skip
    return directory


def run_suite(
    suite: Path, package: str, select: str, python: str, hub_cache: Path | None = None
) -> tuple[list[tuple[str, str, str]], int]:
    """Copies ``suite`` to a temporary directory (imports rewritten for aion_fast), runs pytest offline there and
    returns ``(test id, outcome, message)`` rows and the number of files rewritten."""
    with tempfile.TemporaryDirectory(prefix="aion_reference_suite_") as tmp:
        copy = Path(tmp) / "tests"
        shutil.copytree(suite, copy)
        rewritten = 0
        if package == "aion_fast":
            for path in copy.rglob("*.py"):
                text = path.read_text()
                new = rewrite_imports(text)
                if new != text:
                    path.write_text(new)
                    rewritten += 1
        (Path(tmp) / "pytest.ini").write_text("[pytest]\n")
        target = copy / select if select else copy
        report = Path(tmp) / "report.xml"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        if hub_cache is not None:
            env["HF_HUB_CACHE"] = str(hub_cache)
        command = [python, "-m", "pytest", str(target), "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
                   "-c", str(Path(tmp) / "pytest.ini"), "--rootdir", tmp, f"--junitxml={report}"]  # fmt: skip
        result = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True)
        if not report.is_file():
            print(result.stdout[-4000:], result.stderr[-4000:], sep="\n", file=sys.stderr)
            raise SystemExit("error: pytest produced no report (see its output above); check --python")
        return _outcomes(report), rewritten


def _print(rows: list[tuple[str, str, str]], package: str, where: str, rewritten: int, verbose: bool) -> dict:
    counts = {k: sum(1 for _, outcome, _ in rows if outcome == k) for k in ("passed", "failed", "error", "skipped")}
    print(f"package: {package}; suite: {where}; files with rewritten imports: {rewritten}")
    for name, outcome, message in rows:
        if outcome != "passed" or verbose:
            print(f"  {outcome:7s} {name}" + (f"  -- {message[:160]}" if message else ""))
    print(" ".join(f"{k}={v}" for k, v in counts.items()) + f" total={len(rows)}")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", type=Path, help="local copy of the reference tests/ folder (or the repository root)")
    parser.add_argument("--package", choices=["aion_fast", "aion"], default="aion_fast", help="package under test")
    parser.add_argument("--select", default="codecs", help="sub-folder of the suite to run (default: codecs)")
    parser.add_argument("--python", default=sys.executable, help="interpreter with pytest and the package")
    parser.add_argument("--verbose", action="store_true", help="list passing tests too")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also run against the reference; exit 0 when every test passing there passes here",
    )
    parser.add_argument(
        "--synthetic-hub-cache",
        action="store_true",
        help="serve polymathic-ai/aion-base from a local hub cache of random-weight codecs written by the reference "
        "(image, FLUX_G, SHAPE_E1), so that the tests which only need some weights run offline",
    )
    args = parser.parse_args(argv)
    if not args.suite.exists():
        print(f"error: {args.suite} does not exist; pass the path of a local copy of the AION tests", file=sys.stderr)
        return 2
    suite = _suite_dir(args.suite)

    where = f"{suite}/{args.select}" if args.select else str(suite)
    with tempfile.TemporaryDirectory(prefix="aion_hub_cache_") as cache_dir:
        cache = make_synthetic_cache(Path(cache_dir), args.python) if args.synthetic_hub_cache else None
        if cache is not None:
            where += " (synthetic hub cache)"
        return _run(args, suite, where, cache)


def _run(args: argparse.Namespace, suite: Path, where: str, cache: Path | None) -> int:
    rows, rewritten = run_suite(suite, args.package, args.select, args.python, cache)
    counts = _print(rows, args.package, where, rewritten, args.verbose)
    status = 0 if rows and counts["passed"] == len(rows) else 1
    if args.compare:
        reference_rows, _ = run_suite(suite, "aion", args.select, args.python, cache)
        _print(reference_rows, "aion", where, 0, False)
        ours = {name for name, outcome, _ in rows if outcome == "passed"}
        theirs = {name for name, outcome, _ in reference_rows if outcome == "passed"}
        print(f"pass against aion: {len(theirs)}; of those, pass against {args.package}: {len(theirs & ours)}")
        for name in sorted(theirs - ours):
            print(f"  passes against aion only: {name}")
        status = 0 if theirs <= ours else 1
    return status


if __name__ == "__main__":
    sys.exit(main())
