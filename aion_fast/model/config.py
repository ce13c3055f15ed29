"""The model configuration: the same JSON dict the reference's ``AION(config)`` takes, validated."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from aion_fast.model.modality_info import MODALITY_INFO

__all__ = ["AIONConfig", "BASE_ARCHITECTURE", "CONFIG_BOUNDS", "architecture"]

#: AION-1-B (the released polymathic-ai/aion-base): every config key but the domains. SwiGLU MLPs, QK-norm, no
#: biases, width 768, 12 encoder + 12 decoder blocks, 12 heads.
BASE_ARCHITECTURE: dict[str, Any] = {
    "dim": 768,
    "encoder_depth": 12,
    "decoder_depth": 12,
    "num_heads": 12,
    "mlp_ratio": 4.0,
    "qkv_bias": False,
    "proj_bias": False,
    "mlp_bias": False,
    "act_layer": "SiLU",
    "norm_bias": False,
    "gated_mlp": True,
    "qk_norm": True,
    "decoder_causal_mask": False,
    "decoder_sep_mask": True,
    "num_register_tokens": 0,
    "use_act_checkpoint": False,
    "share_modality_embeddings": True,
}


def architecture(domains_in: list[str], domains_out: list[str], **overrides: Any) -> dict[str, Any]:
    """A config dict of the AION-1-B architecture for the given domains, with optional overrides.

    Example: ``architecture(keys, keys, dim=128, encoder_depth=2, decoder_depth=2, num_heads=4)`` is a small model
    of the same family.
    """
    unknown = set(overrides) - set(BASE_ARCHITECTURE)
    if unknown:
        raise ValueError(f"unknown architecture keys {sorted(unknown)}; known: {sorted(BASE_ARCHITECTURE)}.")
    return {"domains_in": list(domains_in), "domains_out": list(domains_out), **BASE_ARCHITECTURE, **overrides}


#: Largest accepted sizes, far above AION-1-XL (dim 2048, 24 + 24 blocks, 32 heads): a damaged or hostile config
#: fails in microseconds instead of allocating gigabytes (dim 2**22) or building for hours (depth 10**6).
CONFIG_BOUNDS: dict[str, float] = {"dim": 16384, "encoder_depth": 256, "decoder_depth": 256, "num_heads": 512,
                                   "mlp_ratio": 64.0, "num_register_tokens": 4096}  # fmt: skip


@dataclass(frozen=True)
class AIONConfig:
    """Transformer hyper-parameters, named as in the reference's ``config.json``.

    Attributes:
        domains_in: Token keys the encoder accepts, in embedding order.
        domains_out: Token keys the decoder can predict.
        dim: Model width.
        encoder_depth: Number of encoder blocks.
        decoder_depth: Number of decoder blocks.
        num_heads: Attention heads per block.
        mlp_ratio: MLP hidden width over ``dim`` (before the 2/3 factor of gated MLPs).
        qkv_bias: Bias on the attention input projections.
        proj_bias: Bias on the attention output projections.
        mlp_bias: Bias on the MLP layers.
        drop_path_rate_encoder: Largest stochastic-depth rate in the encoder (rates grow linearly with depth).
        drop_path_rate_decoder: Largest stochastic-depth rate in the decoder.
        shared_drop_path: Spread one linear schedule over encoder and decoder blocks together.
        act_layer: Name of a ``torch.nn`` activation class, e.g. ``"SiLU"`` or ``"GELU"``.
        norm_bias: Learnable LayerNorm biases (otherwise zero buffers).
        gated_mlp: Use gated (SwiGLU-style) MLPs.
        qk_norm: Per-head LayerNorm on queries and keys.
        decoder_causal_mask: Causal decoder self-attention.
        decoder_sep_mask: Decoder tokens attend only within their own modality.
        num_register_tokens: Learned tokens prepended to the encoder input.
        use_act_checkpoint: Activation checkpointing in every block (training only).
        share_modality_embeddings: Tie the modality embedding of a key that is both an input and an output.
    """

    domains_in: tuple[str, ...]
    domains_out: tuple[str, ...]
    dim: int = 768
    encoder_depth: int = 12
    decoder_depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    proj_bias: bool = True
    mlp_bias: bool = True
    drop_path_rate_encoder: float = 0.0
    drop_path_rate_decoder: float = 0.0
    shared_drop_path: bool = False
    act_layer: str = "GELU"
    norm_bias: bool = True
    gated_mlp: bool = False
    qk_norm: bool = False
    decoder_causal_mask: bool = False
    decoder_sep_mask: bool = True
    num_register_tokens: int = 0
    use_act_checkpoint: bool = False
    share_modality_embeddings: bool = True

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> AIONConfig:
        """Validates a reference-style config dict.

        Args:
            config: Keys as in the reference ``config.json``; ``domains_in`` and ``domains_out`` are required.

        Returns:
            The validated configuration.

        Raises:
            ValueError: Unknown or missing keys, unknown token keys, wrong value types or inconsistent sizes.
        """
        if not isinstance(config, Mapping):
            raise ValueError(f"config must be a dict, got {type(config).__name__}")
        fields = {field.name: field for field in dataclasses.fields(cls)}
        unknown = sorted(set(config) - set(fields))
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; accepted keys are {sorted(fields)}")
        missing = [name for name in ("domains_in", "domains_out") if name not in config]
        if missing:
            raise ValueError(f"config is missing {missing}: list the token keys the model reads and predicts")

        values: dict[str, Any] = {}
        for name, field in fields.items():
            if name not in config:
                continue
            value = config[name]
            if name in ("domains_in", "domains_out"):
                values[name] = _check_domains(name, value)
            elif field.type == "bool":
                if not isinstance(value, bool):
                    raise ValueError(f"config[{name!r}] must be true or false, got {value!r}")
                values[name] = value
            elif field.type == "int":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"config[{name!r}] must be an integer, got {value!r}")
                values[name] = value
            elif field.type == "float":
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"config[{name!r}] must be a number, got {value!r}")
                values[name] = float(value)
            else:
                values[name] = value
        result = cls(**values)
        result._check_consistency()
        return result

    def _check_consistency(self) -> None:
        for name in ("dim", "encoder_depth", "decoder_depth", "num_heads"):
            minimum = 0 if name.endswith("depth") else 1
            if getattr(self, name) < minimum:
                raise ValueError(f"config[{name!r}] must be >= {minimum}, got {getattr(self, name)}")
        for name, bound in CONFIG_BOUNDS.items():  # before anything is built: a hostile config.json never allocates
            if getattr(self, name) > bound:
                raise ValueError(
                    f"config[{name!r}] = {getattr(self, name)} exceeds the bound {bound} of any AION model this "
                    f"package builds; the config.json is damaged or not an AION checkpoint"
                )
        if self.num_register_tokens < 0:
            raise ValueError(f"config['num_register_tokens'] must be >= 0, got {self.num_register_tokens}")
        if self.dim % self.num_heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")
        if self.dim % 4:
            raise ValueError(f"dim ({self.dim}) must be divisible by 4 for the 2-D sin-cos position embeddings")
        if self.mlp_ratio <= 0:
            raise ValueError(f"config['mlp_ratio'] must be positive, got {self.mlp_ratio}")
        self.activation_class()

    def activation_class(self) -> type[nn.Module]:
        """Returns the ``torch.nn`` class named by ``act_layer``."""
        activation = getattr(nn, self.act_layer, None) if isinstance(self.act_layer, str) else None
        if not (isinstance(activation, type) and issubclass(activation, nn.Module)):
            raise ValueError(
                f"config['act_layer'] must name a torch.nn activation class such as 'SiLU' or 'GELU', "
                f"got {self.act_layer!r}"
            )
        return activation

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-serializable dict with every key, loadable by both this package and the reference."""
        values = dataclasses.asdict(self)
        values["domains_in"] = list(self.domains_in)
        values["domains_out"] = list(self.domains_out)
        return values


def _check_domains(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ValueError(f"config[{name!r}] must be a list of token keys, got {value!r}")
    unknown = [key for key in value if key not in MODALITY_INFO]
    if unknown:
        raise ValueError(f"config[{name!r}] names unknown token key(s) {unknown}; known keys: {sorted(MODALITY_INFO)}")
    duplicates = sorted({key for key in value if value.count(key) > 1})
    if duplicates:
        raise ValueError(f"config[{name!r}] lists {duplicates} more than once")
    return tuple(value)
