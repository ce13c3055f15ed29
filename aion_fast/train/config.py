"""Training configuration: a YAML file -> validated, frozen dataclasses (``configs/aion-base.yaml``).

Layout (every section and key optional except ``model.architecture`` and ``data.sources``; see
``configs/aion-tiny.yaml`` for a complete example)::

    output_dir: runs/aion-base            # metrics.jsonl, checkpoints/, export/
    model:
      architecture: {dim: 768, ...}       # keys of aion_fast.model.architecture (AION-1-B defaults) and
                                          # domains_in / domains_out (token keys; default: every key of the data)
      init_from: null                     # optional checkpoint directory to start from (hub layout)
    data:
      sources: {legacysurvey: [tokens/legacysurvey/...], desi: [...]}   # token shard folders (aion-fast tokenize)
      weights: {legacysurvey: 1.0, desi: 1.0}
      batch_size: 32                      # objects per rank and step
      input_budget: 256                   # B_in
      output_budget: 128                  # B_out
      target_beta: [1.0, 3.0]
    optim: {lr: 2.0e-4, betas: [0.9, 0.95], weight_decay: 0.05, eps: 1.0e-8, warmup_steps: 2000,
            min_lr_ratio: 0.0, grad_clip: 1.0, schedule: cosine}
    train: {max_steps: 205000, seed: 0, precision: bf16, activation_checkpointing: true, attention: auto,
            log_every: 10, device: auto}
    distributed: {sharding: zero2, backend: auto, timeout_s: 1800}
    checkpoint: {every_steps: 1000, keep_last: 2, resume: true}
    export: {codecs_from: null}           # checkpoint whose codecs/ folder is copied next to the final weights

Codec training (:class:`CodecTrainConfig`, ``configs/image-codec.yaml``) shares the ``optim``, ``train`` and
``checkpoint`` sections and the loader; it adds ``codec`` (constructor arguments), ``data`` (batch_size,
shuffle_rows, read_rows) and ``loss`` (mask_weight, quantizer_weight). Scalar fits: :class:`ScalarFitConfig`.

Relative paths are taken from the current working directory (run from the repository root for the bundled
configs). Every error names the offending key and the fix.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CheckpointConfig",
    "CodecDataConfig",
    "CodecLossConfig",
    "CodecOptimConfig",
    "CodecRunConfig",
    "CodecTrainConfig",
    "ConfigBase",
    "DataConfig",
    "DistributedConfig",
    "ExportConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "ScalarFitConfig",
    "TrainConfig",
    "TrainingConfig",
    "load_config",
    "parse_overrides",
    "read_yaml",
]

PRECISIONS = ("bf16", "fp32")
SCHEDULES = ("cosine", "constant")
SHARDINGS = ("zero2", "full", "none")


@dataclass(frozen=True)
class ModelConfig:
    """Attributes:
    architecture: overrides of :data:`aion_fast.model.config.BASE_ARCHITECTURE`, plus optional ``domains_in`` /
        ``domains_out`` (default: every token key the data has).
    init_from: checkpoint directory (hub layout) whose transformer weights start the run; ``None`` = random init.
    """

    architecture: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None


@dataclass(frozen=True)
class DataConfig:
    """Attributes:
    sources: source name -> token shard folders (``aion-fast tokenize`` outputs); a string is a folder of shards.
    weights: source name -> sampling weight (default equal).
    batch_size: objects per rank and step (global batch = batch_size x world size).
    input_budget: B_in, encoder tokens per object.
    output_budget: B_out, decoder targets per object.
    target_beta: (a, b) of the Beta law of target fractions (a < b skews toward zero).
    """

    sources: dict[str, list[str]] = field(default_factory=dict)
    weights: dict[str, float] | None = None
    batch_size: int = 32
    input_budget: int = 256
    output_budget: int = 128
    target_beta: tuple[float, float] = (1.0, 3.0)


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up then cosine decay to ``min_lr_ratio * lr`` at ``train.max_steps`` (or constant).

    Attributes:
        lr: peak learning rate. betas, eps: AdamW's. weight_decay: on matrices only (none on norms, biases,
        embeddings). warmup_steps: linear warm-up length. min_lr_ratio: final lr / peak lr. grad_clip: max global
        gradient norm (0 = no clipping). schedule: ``cosine`` or ``constant`` after the warm-up.
    """

    lr: float = 2.0e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.05
    eps: float = 1.0e-8
    warmup_steps: int = 2000
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    schedule: str = "cosine"

    def check(self, section: str = "optim") -> None:
        """Raises ``ValueError`` naming ``section.key`` for an out-of-range value."""
        if self.lr <= 0:
            raise ValueError(f"{section}.lr must be > 0, got {self.lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"{section}.betas must be two numbers in [0, 1), got {list(self.betas)}")
        if self.weight_decay < 0 or self.eps <= 0 or self.grad_clip < 0 or self.warmup_steps < 0:
            raise ValueError(f"{section}.weight_decay, {section}.grad_clip and {section}.warmup_steps must be >= 0, "
                             f"{section}.eps > 0")  # fmt: skip
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"{section}.min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"{section}.schedule={self.schedule!r}; choose one of {list(SCHEDULES)}")


@dataclass(frozen=True)
class RunConfig:
    """The settings every training run has (the ``train:`` section's common part).

    Attributes:
        max_steps: optimizer steps of the run. seed: every random draw (init, masks, data order, drop-path).
        precision: ``bf16`` (autocast; under FSDP bf16 params with fp32 gradient reduction) or ``fp32``.
        log_every: steps between metrics lines. device: ``auto`` (CUDA if available), ``cpu`` or ``cuda``.
    """

    max_steps: int = 1000
    seed: int = 0
    precision: str = "bf16"
    log_every: int = 10
    device: str = "auto"

    def check(self, section: str = "train") -> None:
        """Raises ``ValueError`` naming ``section.key`` for an invalid value."""
        _positive(f"{section}.max_steps", self.max_steps)
        _positive(f"{section}.log_every", self.log_every)
        if self.precision not in PRECISIONS:
            raise ValueError(f"{section}.precision={self.precision!r}; choose one of {list(PRECISIONS)}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"{section}.device={self.device!r}; choose 'auto', 'cpu' or 'cuda'")


@dataclass(frozen=True)
class TrainingConfig(RunConfig):
    """The transformer's ``train:`` section: :class:`RunConfig` plus

    Attributes:
        activation_checkpointing: recompute each block's activations in the backward pass.
        attention: ``auto`` / ``padded`` / ``packed`` (see :data:`aion_fast.train.objective.ATTENTION_MODES`).
    """

    activation_checkpointing: bool = True
    attention: str = "auto"

    def check(self, section: str = "train") -> None:
        super().check(section)
        if self.attention not in ("auto", "padded", "packed"):
            raise ValueError(f"{section}.attention={self.attention!r}; choose one of ['auto', 'padded', 'packed']")


@dataclass(frozen=True)
class DistributedConfig:
    """Attributes:
    sharding: ``zero2`` (FSDP2 with ``reshard_after_forward=False``: gradients and optimizer states sharded,
        parameters kept gathered from forward to backward; the paper's default), ``full`` (parameters resharded
        after forward too) or ``none`` (plain data parallel replicas are not supported: ``none`` needs one
        process). backend: ``auto`` (nccl on CUDA, gloo on CPU), ``nccl`` or ``gloo``. timeout_s: collective
        timeout (a mismatch fails after it instead of hanging).
    """

    sharding: str = "zero2"
    backend: str = "auto"
    timeout_s: float = 1800.0


@dataclass(frozen=True)
class CheckpointConfig:
    """Attributes:
    every_steps: steps between torch.distributed.checkpoint saves (0 = only on SIGTERM and at the end).
    keep_last: checkpoints kept (older ones deleted). resume: continue from the newest checkpoint if any.
    """

    every_steps: int = 1000
    keep_last: int = 2
    resume: bool = True

    def check(self, section: str = "checkpoint") -> None:
        if self.every_steps < 0 or self.keep_last < 1:
            raise ValueError(f"{section}.every_steps must be >= 0 and {section}.keep_last >= 1")


@dataclass(frozen=True)
class ExportConfig:
    """Attributes:
    codecs_from: checkpoint directory whose ``codecs/`` folder is copied beside the exported transformer.
    directory: where the final weights go (default ``<output_dir>/export``).
    """

    codecs_from: str | None = None
    directory: str | None = None


class ConfigBase:
    """YAML-shaped run configs: sections are frozen dataclasses, other fields plain values checked by annotation.

    Subclasses are frozen dataclasses and implement :meth:`validate` (cross-field checks).
    """

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], base_dir: str | os.PathLike | None = None):
        """Validates a config dict (as read from YAML); relative paths are taken from ``base_dir``.

        Raises:
            ValueError: unknown sections or keys, wrong types or out-of-range values (the message names the key).
        """
        if not isinstance(values, Mapping):
            raise ValueError(f"a training config must be a mapping of sections, got {type(values).__name__}")
        sections = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(sections))
        if unknown:
            raise ValueError(f"unknown config section(s) {unknown}; known: {sorted(sections)}")
        built: dict[str, Any] = {}
        for name, spec in sections.items():
            if name == "output_dir":
                built[name] = _path(values.get(name, spec.default), base_dir, "output_dir")
            elif spec.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(spec.default_factory):
                built[name] = _section(spec.default_factory, values.get(name) or {}, name, base_dir)
            elif values.get(name) is not None:
                built[name] = _coerce(name, spec.type, values[name], base_dir)
        config = cls(**built)
        config.validate()
        return config

    def validate(self) -> None:
        """Checks cross-field constraints; raises ``ValueError`` naming the key."""

    def replace(self, **sections: Any):
        """A copy with some keys of some sections changed, e.g. ``replace(train={"max_steps": 10})``."""
        changed = {}
        for name, updates in sections.items():
            current = getattr(self, name)
            changed[name] = dataclasses.replace(current, **updates) if dataclasses.is_dataclass(current) else updates
        config = dataclasses.replace(self, **changed)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (written next to checkpoints)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainConfig(ConfigBase):
    """The transformer run: see the module docstring for the YAML layout."""

    output_dir: str = "runs/aion"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainingConfig = field(default_factory=TrainingConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def validate(self) -> None:
        """Checks cross-field constraints; raises ``ValueError`` naming the key."""
        d = self.data
        _positive("data.batch_size", d.batch_size)
        _positive("data.input_budget", d.input_budget)
        _positive("data.output_budget", d.output_budget)
        if len(d.target_beta) != 2 or min(d.target_beta) <= 0:
            raise ValueError(f"data.target_beta must be two positive numbers [a, b], got {list(d.target_beta)}")
        if d.weights is not None:
            unknown = sorted(set(d.weights) - set(d.sources))
            if unknown:
                raise ValueError(f"data.weights names {unknown}, which are not in data.sources {sorted(d.sources)}")
        self.optim.check("optim")
        self.train.check("train")
        if self.distributed.sharding not in SHARDINGS:
            raise ValueError(f"distributed.sharding={self.distributed.sharding!r}; choose one of {list(SHARDINGS)}")
        if self.distributed.backend not in ("auto", "nccl", "gloo"):
            raise ValueError(f"distributed.backend={self.distributed.backend!r}; choose 'auto', 'nccl' or 'gloo'")
        if self.distributed.timeout_s <= 0:
            raise ValueError("distributed.timeout_s must be > 0 seconds")
        self.checkpoint.check("checkpoint")
        from aion_fast.model.config import BASE_ARCHITECTURE

        allowed = set(BASE_ARCHITECTURE) | {"domains_in", "domains_out"}
        unknown = sorted(set(self.model.architecture) - allowed)
        if unknown:
            raise ValueError(f"model.architecture has unknown key(s) {unknown}; known: {sorted(allowed)}")


# ------------------------------------------------------------------------------------------------- codec training


@dataclass(frozen=True)
class CodecDataConfig:
    """Attributes:
    batch_size: objects per step (all surveys together). shuffle_rows: objects per shuffle buffer. read_rows: rows
    per read (rounded up to the files' chunks / row groups).
    """

    batch_size: int = 32
    shuffle_rows: int = 4096
    read_rows: int = 256


@dataclass(frozen=True)
class CodecOptimConfig(OptimConfig):
    """:class:`OptimConfig` with the codec papers' defaults (Adam: no decay, betas 0.9/0.999, no warm-up)."""

    lr: float = 5.0e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 0


@dataclass(frozen=True)
class CodecRunConfig(RunConfig):
    """:class:`RunConfig` with a codec run's defaults (fp32 on the CPU)."""

    precision: str = "fp32"
    device: str = "cpu"


@dataclass(frozen=True)
class CodecLossConfig:
    """Attributes (spectrum codec):
    mask_weight: weight of the mask BCE. quantizer_weight: weight of the LFQ commitment + entropy loss.
    """

    mask_weight: float = 1.0
    quantizer_weight: float = 1.0


@dataclass(frozen=True)
class CodecTrainConfig(ConfigBase):
    """An image or spectrum codec run (``configs/image-codec.yaml``): the codec's constructor arguments and the
    sections the transformer run shares (``optim``, ``train``, ``checkpoint``) plus its own ``data`` and ``loss``."""

    codec: dict[str, Any] = field(default_factory=dict)
    data: CodecDataConfig = field(default_factory=CodecDataConfig)
    optim: CodecOptimConfig = field(default_factory=CodecOptimConfig)
    train: CodecRunConfig = field(default_factory=CodecRunConfig)
    loss: CodecLossConfig = field(default_factory=CodecLossConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)

    def validate(self) -> None:
        for name in ("batch_size", "shuffle_rows", "read_rows"):
            _positive(f"data.{name}", getattr(self.data, name))
        self.optim.check("optim")
        self.train.check("train")
        self.checkpoint.check("checkpoint")
        if self.loss.mask_weight < 0 or self.loss.quantizer_weight < 0:
            raise ValueError("loss.mask_weight and loss.quantizer_weight must be >= 0")


@dataclass(frozen=True)
class ScalarFitConfig(ConfigBase):
    """A scalar codec fit (``configs/scalar-codecs.yaml``).

    Attributes:
        codecs: modality (class name or MMU name) -> its codec's constructor arguments.
        defaults: arguments given to every codec whose constructor takes them.
        read_rows: rows per read. seed: seeds Algorithm R's draws.
    """

    codecs: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    read_rows: int = 65536
    seed: int = 0

    def validate(self) -> None:
        _positive("read_rows", self.read_rows)
        for name, arguments in self.codecs.items():
            if arguments is not None and not isinstance(arguments, Mapping):
                raise ValueError(f"codecs.{name} must map constructor arguments to values, got {arguments!r}")


def read_yaml(path: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Reads a YAML config into a dict and applies ``{"section.key": value}`` (or ``{"key": value}``) overrides.

    Raises:
        ValueError: missing file or malformed YAML (the message names the file and the fix).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist; pass --config path/to/config.yaml")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a config is a mapping of sections, got {type(values).__name__}")
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if not key:
            values[section] = value
        else:
            values.setdefault(section, {})
            if not isinstance(values[section], dict):
                raise ValueError(f"{path}: section {section!r} must be a mapping")
            values[section][key] = value
    return values


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["train.max_steps=100", ...]`` (``--set``) -> ``{"train.max_steps": 100}`` (values parsed as YAML)."""
    import yaml

    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected section.key=value, e.g. train.max_steps=100")
        overrides[key] = yaml.safe_load(value)
    return overrides


def load_config(path: str | os.PathLike, overrides: Mapping[str, Any] | None = None, kind: type = TrainConfig):
    """Reads and validates a YAML training config.

    Args:
        path: the YAML file.
        overrides: ``{"section.key": value}`` applied on top (e.g. from the command line).
        kind: the config class (:class:`TrainConfig`, :class:`CodecTrainConfig` or :class:`ScalarFitConfig`).

    Raises:
        ValueError: malformed YAML or invalid settings (the message names the key).
    """
    return kind.from_dict(read_yaml(path, overrides))


# ------------------------------------------------------------------------------------------------------------------


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def _path(value: Any, base_dir: str | os.PathLike | None, name: str) -> str:
    if not isinstance(value, str | os.PathLike) or not str(value):
        raise ValueError(f"{name} must be a path, got {value!r}")
    path = Path(os.path.expanduser(str(value)))
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    return str(path)


def _section(cls: type, values: Any, section: str, base_dir: str | os.PathLike | None) -> Any:
    if not isinstance(values, Mapping):
        raise ValueError(f"config section {section!r} must be a mapping of keys, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in section {section!r}; known: {sorted(fields)}")
    built = {}
    for name, value in values.items():
        built[name] = _coerce(f"{section}.{name}", fields[name].type, value, base_dir)
    return cls(**built)


def _coerce(name: str, annotation: str, value: Any, base_dir: str | os.PathLike | None) -> Any:
    """Checks one value against its field's annotation (a string under ``from __future__ import annotations``)."""
    if annotation == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        return value
    if annotation == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number, got {value!r}")
        return float(value)
    if annotation == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
        return value
    if annotation == "str":
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {value!r}")
        return value
    if annotation == "str | None":
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a path string or null, got {value!r}")
        return _path(value, base_dir, name) if name != "model.architecture" else value
    if annotation == "tuple[float, float]":
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise ValueError(f"{name} must be a list of two numbers, got {value!r}")
        return tuple(_coerce(name, "float", v, base_dir) for v in value)
    if annotation == "dict[str, Any]":
        if not isinstance(value, Mapping):
            raise ValueError(f"{name} must be a mapping, got {value!r}")
        return dict(value)
    if annotation == "dict[str, float] | None":
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise ValueError(f"{name} must map source names to numbers, got {value!r}")
        return {str(k): _coerce(f"{name}.{k}", "float", v, base_dir) for k, v in value.items()}
    if annotation == "dict[str, list[str]]":
        if not isinstance(value, Mapping) or not value:
            raise ValueError(f"{name} must map source names to lists of token shard folders, got {value!r}")
        sources = {}
        for source, paths in value.items():
            paths = [paths] if isinstance(paths, str) else paths
            if not isinstance(paths, list | tuple) or not paths or not all(isinstance(p, str) for p in paths):
                raise ValueError(f"{name}.{source} must be a token shard folder or a non-empty list of them")
            sources[str(source)] = [_path(p, base_dir, f"{name}.{source}") for p in paths]
        return sources
    raise AssertionError(f"unhandled annotation {annotation!r} for {name}")  # a new field needs a case above
