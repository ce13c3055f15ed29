"""aion_fast.demo: the seeded random-weight checkpoint is reproducible, and its digest sees a changed weight."""

from __future__ import annotations

from aion_fast.demo import build_untrained_checkpoint
from aion_fast.model.checkpoint import checkpoint_digest


def test_demo_checkpoint_is_reproducible(tmp_path):
    first = build_untrained_checkpoint(tmp_path / "a")
    second = build_untrained_checkpoint(tmp_path / "b")
    configs = sorted(p.relative_to(first) for p in first.rglob("config.json"))
    assert len(configs) == 22  # transformer + spectrum + image + 19 scalar codecs
    for relative in configs:
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative
    assert checkpoint_digest(first) == checkpoint_digest(second)
    from safetensors.torch import load_file, save_file

    weights = load_file(second / "model.safetensors")
    weights["mask_token"] += 1e-3
    save_file(weights, second / "model.safetensors")
    assert checkpoint_digest(first) != checkpoint_digest(second)
