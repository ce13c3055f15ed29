"""pytest-benchmark set-up: device and versions recorded with every result, offline hub, fixed threads.

Run: ``python -m pytest bench -o python_files='bench_*.py' --benchmark-json=bench/results/<file>.json``
then ``python bench/report.py bench/results/<file>.json`` for the reference / aion_fast ratios; file names follow
``<bench>-<device>-<threads>[-<variant>]-<commit>`` (README, Benchmarks). One bench file per op: ``bench_<op>.py``.
"""

from __future__ import annotations

import os
import platform
import subprocess

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import shapes
import torch

from aion_fast import dispatch

#: Op benches: the reference's own code, then the aion_fast backends that ``impl_env`` forces.
OP_IMPLS = ["reference", "torch", "cpp"]
#: Quantizer ops also have Triton kernels (cpp skips on CUDA, triton on CPU).
QUANTIZER_IMPLS = [*OP_IMPLS, "triton"]
OP_CPU_BATCH = 64  # ops are cheap: larger than the codec benchmarks' 8, still a realistic encode batch


def op_batch(device: str) -> int:
    """Objects per op call: ``OP_CPU_BATCH`` on CPU, the survey-job batch of ``shapes.BATCH`` on a GPU."""
    return OP_CPU_BATCH if device == "cpu" else shapes.BATCH[device]


def _commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"{_cpu_model()} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


@pytest.fixture(scope="session")
def bench_device() -> str:
    """``cuda`` when a GPU is present and AION_FAST_BENCH_DEVICE is not ``cpu``, else ``cpu``."""
    wanted = os.environ.get("AION_FAST_BENCH_DEVICE", "auto")
    if wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


@pytest.fixture
def record(benchmark, bench_device):
    """Adds device, versions, commit and a throughput figure to a benchmark's extra_info."""

    def _record(impl: str, items: int, unit: str = "objects"):
        benchmark.extra_info.update(
            {
                "impl": impl,
                "device": _device_name(bench_device),
                "torch": torch.__version__,
                "commit": _commit(),
                "items_per_call": items,
                "unit": unit,
            }
        )

    return _record


def run_timed(benchmark, fn, device: str, rounds: int = 3, warmup_rounds: int = 1):
    """Times ``fn`` with CUDA synchronisation inside the timed target; returns fn's last result."""

    def target():
        out = fn()
        synchronize(device)
        return out

    return benchmark.pedantic(target, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)


@pytest.fixture
def impl_env(request, monkeypatch, bench_device):
    """Forces the aion_fast backend of this run; skips the cpp run without the extension or on CUDA."""
    impl = request.param
    if impl == "cpp" and (bench_device != "cpu" or dispatch.load_extension() is None):
        pytest.skip("the C++ backend runs CPU tensors with aion_fast._C built")
    if impl == "triton" and (bench_device != "cuda" or dispatch.triton_unavailable_reason() is not None):
        pytest.skip("the Triton backend runs CUDA tensors (TRITON_INTERPRET timings mean nothing)")
    if impl not in ("reference", "module"):  # module: the quantizer module as a codec calls it, nothing forced
        monkeypatch.setenv(dispatch.ENV_VAR, impl)
    return impl
