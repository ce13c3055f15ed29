"""Drives the reference package's own ROAR generation path (aion.fourm.generate.GenerationSampler) on token dicts.

Shared by the generation tests, bench/bench_roar.py and bench/bench_predict.py, so they time and check the same
reference call.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("aion", reason="needs the reference package aion (polymathic-aion): pip install -e .[test]")
from aion.fourm.generate import GenerationSampler


def reference_roar(ref_model, input_tokens: dict[str, torch.Tensor], target_key: str, num_tokens: int,
                   num_samples: int, schedule: list[int], temperature: float, seed: int) -> torch.Tensor:  # fmt: skip
    """Samples ``num_samples`` draws per object with the reference ROAR loop, chains batched object-major.

    Returns:
        ``(B, num_samples, num_tokens)`` int64 tokens.
    """
    batch = next(iter(input_tokens.values())).shape[0]
    rows = batch * num_samples
    mod_dict = {}
    for key, tokens in input_tokens.items():
        tokens = tokens.reshape(batch, -1).repeat_interleave(num_samples, dim=0)
        mod_dict[key] = {
            "tensor": tokens,
            "input_mask": torch.zeros_like(tokens, dtype=torch.bool),
            "target_mask": torch.ones_like(tokens, dtype=torch.bool),
        }
    mod_dict[target_key] = {
        "tensor": torch.zeros(rows, num_tokens, dtype=torch.int64),
        "input_mask": torch.ones(rows, num_tokens, dtype=torch.bool),
        "target_mask": torch.zeros(rows, num_tokens, dtype=torch.bool),
    }
    steps = [
        {"target_domain": target_key, "scheme": "roar", "num_tokens": count, "temperature": temperature,
         "cfg_scale": 1.0, "cfg_cond_domains": []}
        for count in schedule
    ]  # fmt: skip
    with torch.no_grad():
        out = GenerationSampler(ref_model).generate(mod_dict, steps, top_k=0, top_p=0.0, seed=seed)
    return out[target_key]["tensor"].reshape(batch, num_samples, num_tokens)
