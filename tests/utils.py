"""Assertion helpers shared by the tests: exact index equality and per-dtype float tolerances."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

#: Relative tolerance of float outputs against the fp32 reference, by dtype.
RTOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}


def assert_tokens_equal(ours: torch.Tensor, reference: torch.Tensor, what: str = "tokens") -> None:
    """Indices must match exactly; reports how many differ and where the first one is."""
    assert ours.shape == reference.shape, f"{what}: shape {tuple(ours.shape)} != reference {tuple(reference.shape)}"
    ours_l, ref_l = ours.long().cpu(), reference.long().cpu()
    differ = ours_l != ref_l
    if bool(differ.any()):
        first = tuple(torch.nonzero(differ)[0].tolist())
        raise AssertionError(
            f"{what}: {int(differ.sum())}/{differ.numel()} indices differ; first at {first}: "
            f"{int(ours_l[first])} vs reference {int(ref_l[first])}"
        )


def assert_close_rel(ours: torch.Tensor, reference: torch.Tensor, rtol: float | None = None, what: str = "output"):
    """Max abs error must be <= rtol * max |reference| (a scale-aware relative tolerance)."""
    rtol = RTOL[reference.dtype] if rtol is None else rtol
    ours, reference = ours.detach().double().cpu(), reference.detach().double().cpu()
    assert ours.shape == reference.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(reference.shape)}"
    scale = reference.abs().max().clamp_min(1e-30)
    err = (ours - reference).abs().max()
    assert err <= rtol * scale, f"{what}: max abs err {err:.3e} > {rtol:g} x max|ref| {scale:.3e}"


def make_hub_cache(checkpoint: Path, cache_dir: Path, repo_id: str, commit: str, refs: tuple[str, ...] = ("main",)):
    """Lays a checkpoint directory out as huggingface_hub's cache holds a downloaded repository, for offline tests:
    ``<cache_dir>/models--<org>--<name>/snapshots/<commit>/...`` and ``refs/<ref>`` files holding the commit."""
    repo = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(checkpoint, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    return repo
