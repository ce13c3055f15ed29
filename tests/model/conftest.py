"""Fixtures for the transformer tests: tiny reference models saved with the reference's own ``save_pretrained``.

Every comparison builds the oracle offline through ``aion.AION(config)`` (the reference's ``fm_*`` factories are
broken) with random weights, saves it, and loads it with :meth:`aion_fast.model.AION.from_pretrained`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from aion_fast.model import AION, MODALITY_INFO

#: SwiGLU + QK-norm without biases, like AION-1-B, at width 64.
TINY_CONFIG = {
    "domains_in": ["tok_image", "tok_spectrum_desi", "tok_flux_g", "tok_flux_r", "tok_z", "catalog", "tok_xp_bp"],
    "domains_out": ["tok_image", "tok_z", "tok_flux_g", "catalog", "tok_spectrum_sdss"],
    "dim": 64,
    "encoder_depth": 2,
    "decoder_depth": 2,
    "num_heads": 4,
    "mlp_ratio": 4.0,
    "qkv_bias": False,
    "proj_bias": False,
    "mlp_bias": False,
    "act_layer": "SiLU",
    "norm_bias": False,
    "gated_mlp": True,
    "qk_norm": True,
}

#: The other branches: plain GELU MLP, biases everywhere, no QK-norm, register tokens, causal decoder, no tying.
VARIANT_CONFIG = {
    "domains_in": ["tok_image", "tok_spectrum_sdss", "tok_mag_g", "catalog"],
    "domains_out": ["tok_image", "tok_z", "tok_mag_g"],
    "dim": 48,
    "encoder_depth": 2,
    "decoder_depth": 1,
    "num_heads": 3,
    "mlp_ratio": 2.5,
    "qkv_bias": True,
    "proj_bias": True,
    "mlp_bias": True,
    "act_layer": "GELU",
    "norm_bias": True,
    "gated_mlp": False,
    "qk_norm": False,
    "decoder_causal_mask": True,
    "decoder_sep_mask": True,
    "num_register_tokens": 2,
    "drop_path_rate_encoder": 0.1,
    "share_modality_embeddings": False,
}

CATALOG_LENGTH = 20


@dataclass
class Pair:
    """A reference model, the directory it saved itself to, and the same weights loaded by aion_fast."""

    reference: torch.nn.Module
    directory: Path
    model: AION


def _build_pair(config: dict, directory: Path, seed: int) -> Pair:
    import aion

    torch.manual_seed(seed)
    reference = aion.AION(config).eval()
    reference.save_pretrained(directory)
    return Pair(reference=reference, directory=directory, model=AION.from_pretrained(directory))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Pair:
    """Reference and aion_fast models with :data:`TINY_CONFIG` and identical random weights."""
    return _build_pair(TINY_CONFIG, tmp_path_factory.mktemp("tiny_reference"), seed=1234)


@pytest.fixture(scope="session")
def variant(tmp_path_factory) -> Pair:
    """Reference and aion_fast models with :data:`VARIANT_CONFIG`."""
    return _build_pair(VARIANT_CONFIG, tmp_path_factory.mktemp("variant_reference"), seed=4321)


def random_tokens(keys: list[str], batch: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Random valid ids: ``(B, n)`` for grids (scalars as ``(B,)``), ``(B, 20)`` non-padding ids for the catalog."""
    tokens = {}
    for key in keys:
        spec = MODALITY_INFO[key]
        if spec.kind == "sequence":
            tokens[key] = torch.randint(1, spec.vocab_size, (batch, CATALOG_LENGTH), generator=generator)
        elif spec.num_tokens == 1:
            tokens[key] = torch.randint(0, spec.vocab_size, (batch,), generator=generator)
        else:
            tokens[key] = torch.randint(0, spec.vocab_size, (batch, spec.num_tokens), generator=generator)
    return tokens


def random_padding(tokens: dict[str, torch.Tensor], keys: list[str], fraction: float = 0.3) -> dict[str, torch.Tensor]:
    """Random True-where-absent masks for the given multi-token keys, at least one present token per object."""
    masks = {}
    for key in keys:
        shape = tokens[key].shape
        mask = torch.rand(shape) < fraction
        mask[:, 0] = False
        masks[key] = mask
    return masks


def total_tokens(tokens: dict[str, torch.Tensor]) -> int:
    """Number of tokens per object over all modalities."""
    return sum(1 if t.ndim == 1 else t.shape[1] for t in tokens.values())
