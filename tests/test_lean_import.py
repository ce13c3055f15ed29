"""Importing aion_fast is lean: no Triton, no CUDA initialisation, no network, no compiled module until used."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LEAN_MODULES = [
    "aion_fast",
    "aion_fast.dispatch",
    "aion_fast.settings",
    "aion_fast.precision",
    "aion_fast.ops",
    "aion_fast.jobs.pipeline",
    "aion_fast.kernels",
    "aion_fast.kernels.utils",
]

PROBE = """
import importlib, socket, sys

def _no_network(*args, **kwargs):
    raise AssertionError("network access")

socket.socket.connect = _no_network
socket.create_connection = _no_network

def check(step):
    assert "triton" not in sys.modules, f"triton was imported by {{step}}"
    if "torch" in sys.modules:
        assert not sys.modules["torch"].cuda.is_initialized(), f"CUDA was initialised by {{step}}"

{body}
check("the probe")
print("LEAN")
"""


def run_probe(body: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "AION_FAST_BACKEND"}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(body=body)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and "LEAN" in proc.stdout, proc.stdout + proc.stderr


def test_import_is_lean():
    run_probe(
        f"for name in {LEAN_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "    check(f'import {name}')\n"
        "    assert 'aion_fast._C' not in sys.modules, f'import {name} loaded the extension'"
    )


def test_eager_cpu_ops_stay_lean():
    """The first eager op call bypasses torch.library dispatch, which would import torch._dynamo and Triton."""
    run_probe(
        "import torch\n"
        "from aion_fast import dispatch\n"
        "from aion_fast.ops import fsq_decode, fsq_encode, lfq_decode, lfq_encode\n"
        "idx = fsq_encode(torch.randn(6, 5), [7, 5, 5, 5, 5], channel_first=False)\n"
        "fsq_decode(idx, [7, 5, 5, 5, 5])\n"
        "lfq_decode(lfq_encode(torch.randn(6, 10), channel_first=False), 10)\n"
        "dispatch.available_backends()\n"
        "check('eager CPU op calls')"
    )
