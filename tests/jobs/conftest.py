"""Fixtures of the encode-job tests: the untrained demo checkpoint (built once) and MMU files written per test."""

from __future__ import annotations

import pytest

from aion_fast.demo import build_untrained_checkpoint


@pytest.fixture(scope="session")
def demo_checkpoint(tmp_path_factory):
    """The small untrained checkpoint ``aion-fast encode`` uses by default (image, spectrum, scalar codecs)."""
    return build_untrained_checkpoint(tmp_path_factory.mktemp("demo_ckpt"))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Checkpoint digests are cached in a per-session folder (also for the CLI subprocesses), not in ~/.cache."""
    monkeypatch.setenv("AION_FAST_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "aion_fast_cache"))
