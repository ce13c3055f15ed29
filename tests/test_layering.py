"""Package layering, checked on the source with ``ast``: lower layers import nothing from higher ones, and no client
switches on codec classes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Layers that ops/ and kernels/ sit below.
HIGHER = ("codecs", "model", "jobs", "train", "export", "generate", "downstream")


def _sources(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (ROOT / folder).rglob("*.py"))


def _package(path: Path) -> str:
    """The package a source file belongs to (``kernels/`` is installed as ``aion_fast.kernels``)."""
    parts = path.relative_to(ROOT).parent.parts
    return ".".join(parts if parts[0] == "aion_fast" else ("aion_fast", *parts))


def _imported_modules(source: str, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source`` (functions included), relative ones resolved."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                found.append((node.lineno, ".".join([*base, node.module or ""]).strip(".")))
            else:
                found.append((node.lineno, node.module or ""))
    return found


@pytest.mark.parametrize("folder", ["aion_fast/ops", "kernels"])
def test_ops_and_kernels_import_no_higher_layer(folder):
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in _sources(folder)
        for line, module in _imported_modules(path.read_text(), _package(path))
        if any(module == f"aion_fast.{layer}" or module.startswith(f"aion_fast.{layer}.") for layer in HIGHER)
    ]
    assert not offenders, "ops/kernels must not import higher layers:\n" + "\n".join(offenders)


def test_the_checker_sees_function_level_and_relative_imports():
    """The walk covers imports inside functions (the inversion this test guards against was of that kind)."""
    source = "def f():\n    from aion_fast.codecs.preprocessing import center_crop\n    from ..model import AION\n"
    found = _imported_modules(source, "aion_fast.ops")
    assert (2, "aion_fast.codecs.preprocessing") in found and (3, "aion_fast.model") in found


def test_no_isinstance_on_codec_classes_outside_codecs():
    offenders = []
    for path in _sources("aion_fast"):
        if path.is_relative_to(ROOT / "aion_fast" / "codecs"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2:
                classes = node.args[1].elts if isinstance(node.args[1], ast.Tuple) else [node.args[1]]
                names = [getattr(c, "id", getattr(c, "attr", "")) for c in classes]
                if any(name.endswith("Codec") for name in names):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} isinstance(..., {names})")
    assert not offenders, "clients must use the public codec stages, not class switches:\n" + "\n".join(offenders)
