"""Shared test set-up: offline hub, deterministic seeds, and the reference package as the oracle."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network

import torch  # noqa: E402

if not torch.cuda.is_available():
    # Triton reads this when first imported (some test modules import it indirectly through the reference package
    # and torch._dynamo): set before any test module loads so the kernel tests run in-process under the interpreter.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_report_header(config):
    try:
        from importlib.metadata import version

        import aion  # noqa: F401  - the oracle must be installed for the comparison tests

        ref = f"polymathic-aion {version('polymathic-aion')}"
    except ImportError:
        ref = "polymathic-aion NOT INSTALLED (the comparison tests skip)"
    return [f"torch {torch.__version__}, {torch.get_num_threads()} threads; reference: {ref}"]
