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


#: Private names of other libraries read on purpose, with the reason (file, name).
THIRD_PARTY_PRIVATE = {
    # oneDNN's fused convolution/linear and weight pre-packing have no public PyTorch API (precision="fast").
    ("aion_fast/codecs/nn/fast.py", "_reorder_convolution_weight"),
    ("aion_fast/codecs/nn/fast.py", "_convolution_pointwise"),
    ("aion_fast/codecs/nn/fast.py", "_reorder_linear_weight"),
    ("aion_fast/codecs/nn/fast.py", "_linear_pointwise"),
    # A tensor's in-place version counter: packed weights are redone when a weight changes in place.
    ("aion_fast/codecs/nn/fast.py", "_version"),
    # A device-side assertion that does not wait for the GPU (no public equivalent); traced by torch.compile.
    ("aion_fast/ops/fsq.py", "_assert_async"),
    ("aion_fast/ops/image_preprocess.py", "_assert_async"),
}


def _owner(path: Path) -> str:
    """The package owning a source file: ``aion_fast.<sub>`` for subpackages, ``aion_fast`` for top-level modules."""
    parts = _package(path).split(".")
    return ".".join(parts[:2])


def _defined_names(paths: list[Path]) -> set[str]:
    """Every name a group of files defines: functions, classes, assigned names and attributes, buffers, arguments."""
    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
                names.add(node.value)  # register_buffer("_name", ...), setattr(self, "_name", ...)
    return names


def _private_reads(path: Path, own: set[str]) -> list[str]:
    found = []
    package = _package(path)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("aion_fast"):
            module = node.module or ""
            owner = ".".join(module.split(".")[:2]) if module.count(".") else "aion_fast"
            private_module = any(part.startswith("_") for part in module.split(".")[1:])
            private_names = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
            if owner != _owner(path) and owner != package and (private_module or private_names):
                found.append(f"{node.lineno}: from {module} import {', '.join(a.name for a in node.names)}")
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value
            if isinstance(base, ast.Name) and base.id in ("self", "cls"):
                continue
            if isinstance(base, ast.Call) and getattr(base.func, "id", None) == "super":
                continue
            rel = str(path.relative_to(ROOT))
            if node.attr not in own and (rel, node.attr) not in THIRD_PARTY_PRIVATE:
                found.append(f"{node.lineno}: {ast.unparse(base)}.{node.attr}")
    return found


def test_no_package_reads_another_packages_private_names():
    """Packages talk through public APIs: an underscore name is read only inside the package that defines it."""
    sources = _sources("aion_fast", "kernels")
    by_owner: dict[str, list[Path]] = {}
    for path in sources:
        by_owner.setdefault(_owner(path), []).append(path)
    defined = {owner: _defined_names(paths) for owner, paths in by_owner.items()}
    offenders = [
        f"{path.relative_to(ROOT)}:{hit}" for path in sources for hit in _private_reads(path, defined[_owner(path)])
    ]
    assert not offenders, "private names read across packages:\n" + "\n".join(offenders)


def test_the_private_check_catches_a_foreign_private_read(tmp_path):
    source = ROOT / "aion_fast" / "train" / "probe_private.py"
    try:
        source.write_text("from aion_fast.dispatch import _decide\n\ndef f(codec):\n    return codec._prepare\n")
        hits = _private_reads(source, _defined_names([source]) - {"_prepare"})
    finally:
        source.unlink()
    assert [hit.split(":")[0] for hit in hits] == ["1", "4"]


OPS = sorted(path.stem for path in (ROOT / "aion_fast" / "ops").glob("*.py") if path.stem != "__init__")


def _missing_op_files(op: str) -> list[str]:
    """What of an op's test, benchmark and kernels is not named after it (``git ls-files | grep <op>`` finds all)."""
    missing = [rel for rel in (f"tests/ops/test_{op}.py", f"bench/bench_{op}.py") if not (ROOT / rel).is_file()]
    if not (ROOT / "kernels" / f"{op}.py").is_file() and not (ROOT / "csrc" / op).is_dir():
        missing.append(f"kernels/{op}.py or csrc/{op}/")
    return missing


@pytest.mark.parametrize("op", OPS)
def test_every_op_has_its_tests_bench_and_kernels_under_its_name(op):
    missing = _missing_op_files(op)
    assert not missing, f"aion_fast/ops/{op}.py: missing {', '.join(missing)} (name an op's files after the op)"


def test_the_op_file_check_reports_what_is_missing():
    assert len(OPS) >= 7 and "roar" in OPS
    assert _missing_op_files("no_such_op") == [
        "tests/ops/test_no_such_op.py",
        "bench/bench_no_such_op.py",
        "kernels/no_such_op.py or csrc/no_such_op/",
    ]
