"""scripts/run_reference_suite.py: import rewriting, and a run on a small suite written like the reference's."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "scripts" / "run_reference_suite.py"


def _module():
    spec = importlib.util.spec_from_file_location("run_reference_suite", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rewrite_imports_changes_only_aion_imports():
    source = (
        "import aion\n"
        "from aion.codecs import ImageCodec\n"
        "    from aion.codecs.manager import CodecManager, ModalityTypeError\n"
        "from aion import AION\n"
        "import aion_fast\n"
        "from aionic import x\n"
        'name = "from aion.codecs import y"\n'
    )
    assert _module().rewrite_imports(source) == (
        "import aion_fast as aion\n"
        "from aion_fast.codecs import ImageCodec\n"
        "    from aion_fast.codecs.manager import CodecManager, ModalityTypeError\n"
        "from aion_fast import AION\n"
        "import aion_fast\n"
        "from aionic import x\n"
        'name = "from aion.codecs import y"\n'
    )


SUITE_TEST = """
import pytest
import torch

from aion.codecs import ImageCodec
from aion.codecs.config import HF_REPO_ID
from aion.codecs.manager import CodecManager, ModalityTypeError
from aion.modalities import Image, LegacySurveyCatalog


def test_invalid_modality():
    with pytest.raises(TypeError):
        ImageCodec.from_pretrained(HF_REPO_ID, modality=LegacySurveyCatalog)


def test_error_handling():
    with pytest.raises(ModalityTypeError):
        CodecManager(device="cpu")._load_codec(int)


def test_needs_hub_weights():
    ImageCodec.from_pretrained(HF_REPO_ID, modality=Image)
"""


@pytest.mark.parametrize("package", ["aion_fast", pytest.param("aion", marks=[pytest.mark.slow, pytest.mark.heavy])])
def test_runs_a_suite_offline_against_either_package(tmp_path, package):
    pytest.importorskip("aion")
    suite = tmp_path / "AION" / "tests"
    (suite / "codecs").mkdir(parents=True)
    (suite / "conftest.py").write_text("")
    (suite / "codecs" / "test_small.py").write_text(SUITE_TEST)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "AION"), "--package", package],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1, result.stdout + result.stderr  # the hub test fails offline
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"package: {package};")
    assert f"files with rewritten imports: {1 if package == 'aion_fast' else 0}" in lines[0]
    assert lines[-1] == "passed=2 failed=1 error=0 skipped=0 total=3"
    assert any("failed  tests.codecs.test_small::test_needs_hub_weights" in line for line in lines)
    assert (suite / "codecs" / "test_small.py").read_text() == SUITE_TEST  # the copy is rewritten, not the suite


def test_missing_suite_exits_2(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert result.returncode == 2 and "does not exist" in result.stderr
