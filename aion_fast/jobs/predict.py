r"""``aion-fast predict``: posteriors of one target modality for every object of a survey, one Parquet file per input.

The job is ``aion-fast encode``'s (same shard plan, loader, selection, writer, resumption, ranks, manifest and errors
ledger: :mod:`aion_fast.jobs.plan`, :mod:`~aion_fast.jobs.loader`, :mod:`~aion_fast.jobs.writer`,
:mod:`~aion_fast.jobs.manifest`); only the per-batch computation and the columns differ.

* **One-token targets** (redshift and the other scalars): the posterior is the decoder's categorical distribution over
  the target codec's ``K`` bins, exactly, from one encoder + decoder pass per object (AION-1 paper §7.1):
  :math:`p_k = \mathrm{softmax}(\ell_{1..K})_k`, the logits of vocabulary entries beyond the codebook (tok_z has 1025
  entries for 1024 codes) left out. Bin values :math:`v_k` are the codec's decode of index ``k``. Written per object:
  ``mean`` :math:`\sum p_k v_k`, ``std``, ``mode`` (:math:`v` of the largest :math:`p`), ``median`` and the
  ``p16``/``p84``/``p2_5``/``p97_5`` percentiles, where the q-percentile is the smallest bin value whose cumulative
  probability (bins in value order) reaches q; with ``pdf`` the :math:`p_k` (bin values once, in the schema
  metadata ``aion_fast.bin_values``); with ``num_samples`` N draws from :math:`p` (ROAR's Philox sampler,
  :func:`aion_fast.ops.roar_step`, keyed as in :func:`aion_fast.generate`, over the codec's bins only).
* **Multi-token targets** (spectra, images, Gaia XP): ``num_samples`` ROAR draws (:func:`aion_fast.generate`),
  decoded by the target codec, as ``samples`` (fixed-size lists: draws x flattened values), with the per-value
  ``mean`` and ``std`` over the draws (population std). The per-draw shape and, for spectra, the wavelength grid are in
  the schema metadata (``aion_fast.value_shape``, ``aion_fast.wavelength``).

Draws are keyed to object ids (:func:`object_keys`): an object gets the same draws whatever shard split, batch size
or rank count produced it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aion_fast import modalities as m
from aion_fast.data.columns import MODALITY_GROUPS, SURVEY_DEFAULT_GROUPS
from aion_fast.data.mmu import ObjectBatch
from aion_fast.jobs.encode import close_job, init_process_group, prepare_output
from aion_fast.jobs.encoder import batch_tokens, model_inputs, presence_groups
from aion_fast.jobs.loader import auto_workers, batches
from aion_fast.jobs.lock import OutputLock, check_identity
from aion_fast.jobs.manifest import (
    cached_checkpoint_digest,
    distributed_rank,
    file_sha256,
    shards_of_rank,
)
from aion_fast.jobs.plan import plan_tasks, shard_names, shard_states
from aion_fast.jobs.writer import ShardWriter, finish_shard, object_fields, remove_progress

__all__ = [
    "PERCENTILES",
    "TARGET_ALIASES",
    "PredictOptions",
    "Predictor",
    "object_keys",
    "posterior_summary",
    "run_predict",
    "target_modality",
]

#: ``--target`` short names (any modality class name, e.g. ``Z`` or ``GaiaXpBp``, or token key also works).
TARGET_ALIASES: dict[str, type[m.Modality]] = {
    "redshift": m.Z,
    "spectrum": m.DESISpectrum,
    "desi-spectrum": m.DESISpectrum,
    "sdss-spectrum": m.SDSSSpectrum,
    "image": m.LegacySurveyImage,
    "hsc-image": m.HSCImage,
}

#: Percentile columns of one-token targets: column name -> q.
PERCENTILES = {"median": 0.5, "p16": 0.16, "p84": 0.84, "p2_5": 0.025, "p97_5": 0.975}

ROW_GROUP_ROWS = 4096


def target_modality(name: str) -> type[m.Modality]:
    """The modality class ``--target`` names: an alias of :data:`TARGET_ALIASES`, a modality class name
    (case-insensitive) or a token key.

    Raises:
        ValueError: an unknown name (the message lists the choices).
    """
    if name in TARGET_ALIASES:
        return TARGET_ALIASES[name]
    for cls in m.ALL_MODALITIES.values():
        if name.lower() == cls.__name__.lower() or name == getattr(cls, "token_key", None):
            return cls
    raise ValueError(
        f"--target {name!r} is unknown; give one of {sorted(TARGET_ALIASES)}, a modality class name such as Z or "
        f"GaiaXpBp, or a token key such as tok_z."
    )


def object_keys(object_ids: Sequence[str]) -> torch.Tensor:
    """(n,) int64 keys of the random streams of objects: a decimal id in [0, 2^63) is its own key (so catalogue ids
    key draws exactly as ``aion_fast.generate(object_ids=...)`` with those ids), any other id the first 63 bits of
    its BLAKE2b-64 digest. Independent of the batch, shard and rank an object is in."""
    keys = []
    for text in object_ids:
        value = int(text) if text.isascii() and text.isdigit() and len(text) < 20 else None
        if value is None or value >= 2**63:
            value = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1
        keys.append(value)
    return torch.tensor(keys, dtype=torch.int64)


def posterior_summary(probs: torch.Tensor, values: torch.Tensor) -> dict[str, np.ndarray]:
    """Moments, mode and percentiles of categorical posteriors over bin values.

    Args:
        probs: ``(n, K)`` probabilities (rows sum to 1).
        values: ``(K,)`` bin values (any order).

    Returns:
        Column -> ``(n,)`` float64: ``mean``, ``median``, ``mode``, ``std``, ``p16``, ``p84``, ``p2_5``, ``p97_5``
        (percentile rule in the module docstring).
    """
    p = probs.double()
    v = values.double().to(p.device)
    mean = p @ v
    std = (p @ (v * v) - mean * mean).clamp_min(0).sqrt()
    order = torch.argsort(v, stable=True)
    cdf = torch.cumsum(p[:, order], dim=1)
    cdf = cdf / cdf[:, -1:]
    out = {"mean": mean, "mode": v[p.argmax(dim=1)], "std": std}
    for name, q in PERCENTILES.items():
        index = torch.searchsorted(cdf, torch.full((p.shape[0], 1), q, dtype=torch.float64, device=p.device))
        out[name] = v[order][index.clamp_max(v.numel() - 1)[:, 0]]
    return {name: out[name].cpu().numpy() for name in ("mean", "median", "mode", "std", *list(PERCENTILES)[1:])}


@dataclass(frozen=True)
class PredictOptions:
    """What one ``aion-fast predict`` run does (besides inputs and output).

    Attributes:
        target: ``--target`` (see :func:`target_modality`).
        model: checkpoint directory or hub id; None = the bundled demo model.
        inputs: groups of :data:`~aion_fast.data.columns.MODALITY_GROUPS` to condition on; None = survey defaults.
            The target's own columns are never an input.
        sources: ``(group, survey)`` pairs, as ``aion-fast encode --source``.
        num_samples: draws per object (one-token targets: 0 = none; multi-token targets need >= 1).
        pdf: None, ``"float16"`` or ``"float32"``: write the binned posterior of a one-token target.
        decay, temperature, max_steps: ROAR settings (:func:`aion_fast.generate`).
        seed: random seed of the draws, in [0, 2^64).
        wavelength: ``(start, stop, step)`` Å grid for spectrum targets; None = the codec's grid.
        batch_size, device, loader, workers, progress, row_group_rows: as ``aion-fast encode``.
    """

    target: str = "redshift"
    model: str | None = None
    inputs: tuple[str, ...] | None = None
    sources: tuple[tuple[str, str], ...] = ()
    num_samples: int = 0
    pdf: str | None = None
    decay: float = 0.9
    temperature: float = 1.0
    max_steps: int | None = None
    seed: int = 0
    wavelength: tuple[float, float, float] | None = None
    batch_size: int = 256
    device: str = "cpu"
    loader: str = "torch"
    workers: int | None = None
    progress: bool = True
    row_group_rows: int = ROW_GROUP_ROWS


def _validate(options: PredictOptions, target: type[m.Modality]) -> None:
    if options.inputs is not None:
        unknown = sorted(set(options.inputs) - set(MODALITY_GROUPS))
        if unknown or not options.inputs:
            raise ValueError(f"--inputs {list(options.inputs)}: choose one or more of {list(MODALITY_GROUPS)}.")
    for group, survey in options.sources:
        if group not in MODALITY_GROUPS or survey not in SURVEY_DEFAULT_GROUPS:
            raise ValueError(
                f"--source {group}={survey}: give GROUP=SURVEY with GROUP in {list(MODALITY_GROUPS)} and SURVEY in "
                f"{list(SURVEY_DEFAULT_GROUPS)}."
            )
    one_token = _one_token(target)
    if options.num_samples < 0 or (not one_token and options.num_samples < 1):
        need = ">= 0" if one_token else ">= 1 (a multi-token target is only known through draws)"
        raise ValueError(f"--num-samples must be {need}, got {options.num_samples}.")
    if options.pdf not in (None, "float16", "float32"):
        raise ValueError(f"--pdf {options.pdf!r}: choose float16 or float32.")
    if options.pdf is not None and not one_token:
        raise ValueError(f"--pdf applies to one-token targets; {target.__name__} has {target.num_tokens} tokens.")
    if not 0.0 <= options.decay < 1.0:
        raise ValueError(f"--decay must lie in [0, 1), got {options.decay}.")
    if not options.temperature >= 0:
        raise ValueError(f"--temperature must be >= 0 (0 = greedy), got {options.temperature}.")
    if not 0 <= options.seed < 2**64:
        raise ValueError(f"--seed must lie in [0, 2^64), got {options.seed}.")
    if options.wavelength is not None:
        if not issubclass(target, m.Spectrum):
            raise ValueError(f"--wavelength applies to spectrum targets, not {target.__name__}.")
        start, stop, step = options.wavelength
        if not (step > 0 and stop > start):
            raise ValueError(f"--wavelength {start}:{stop}:{step}: give START:STOP:STEP with STOP > START, STEP > 0.")
    if options.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {options.batch_size}.")
    if options.loader not in ("torch", "dali"):
        raise ValueError(f"--loader {options.loader!r}: choose torch or dali.")
    if options.workers is not None and options.workers < 0:
        raise ValueError(f"--workers must be >= 0 (or omitted for automatic), got {options.workers}.")
    if options.row_group_rows < 1:
        raise ValueError(f"--row-group-rows must be >= 1, got {options.row_group_rows}.")


def _one_token(target: type[m.Modality]) -> bool:
    return issubclass(target, m.Scalar) and target.num_tokens == 1


class Predictor:
    """Posteriors of one target for :class:`~aion_fast.data.mmu.ObjectBatch` objects, with one model on one device.

    Args:
        checkpoint: directory or hub id (transformer with its decoder, and the codecs).
        target: the modality class to predict.
        options: decoding settings (``num_samples``, ``decay``, ``temperature``, ``max_steps``, ``seed``,
            ``wavelength``).
    """

    def __init__(self, checkpoint: str | os.PathLike, target: type[m.Modality], options: PredictOptions):
        from aion_fast.codecs import CodecManager
        from aion_fast.export.runtime import is_exported
        from aion_fast.model import AION

        if is_exported(checkpoint):
            raise ValueError(
                f"--model {checkpoint} is an exported (ONNX/INT8) embedding model without a decoder; predict needs "
                f"the PyTorch checkpoint it was exported from."
            )
        self.device = torch.device(options.device)
        self.model = AION.from_pretrained(checkpoint).eval().to(self.device)
        self.codecs = CodecManager(repo=checkpoint, device=self.device)
        self.target, self.key, self.options = target, target.token_key, options
        domains_out = list(self.model.config.domains_out)
        if self.key not in domains_out:
            raise ValueError(
                f"--target {target.__name__} ({self.key}) is not a decoder output of {checkpoint}; its outputs are "
                f"{domains_out}: pick one of those or another --model."
            )
        missing = self.codecs.missing_codec(target)
        if missing is not None:
            raise ValueError(f"--target {target.__name__}: {missing}; use a checkpoint with that codec.")
        self.one_token = _one_token(target)
        self.decode_options: dict[str, Any] = {}
        if options.wavelength is not None:
            self.decode_options["wavelength"] = torch.arange(*options.wavelength, dtype=torch.float64).float()
        if self.one_token:
            size = self.codecs.codec(target).quantizer.codebook_size
            codes = torch.arange(size, device=self.device)
            self.bin_values = self.codecs.decode({self.key: codes}, target).value.reshape(-1).double().cpu()
        else:
            probe = self._decode(torch.zeros(1, target.num_tokens, dtype=torch.int64, device=self.device))
            self.value_shape = tuple(probe[0].shape[1:])
            self.grid = probe[1]

    def tokens(self, batch: ObjectBatch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Input tokens of the batch and which objects have them (:func:`~aion_fast.jobs.encoder.batch_tokens`)."""
        return batch_tokens(self.codecs, batch, self.device)

    def logits(self, tokens: dict[str, torch.Tensor], input_mask: dict[str, torch.Tensor] | None) -> torch.Tensor:
        """``(n, V)`` float32 decoder logits of a one-token target: the one call into the model's decoder."""
        return self.model(tokens, [self.key], input_mask)[self.key][:, 0].float()

    def posterior(self, tokens: dict[str, torch.Tensor], input_mask: dict[str, torch.Tensor] | None) -> torch.Tensor:
        """``(n, K)`` float64 posterior over the codec's ``K`` bins (logits beyond the codebook left out)."""
        logits = self.logits(tokens, input_mask)[:, : self.bin_values.numel()]
        return torch.softmax(logits.double(), dim=-1)

    def draw_bins(self, logits: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """``(n, S)`` int64 bin indices drawn from ``(n, K)`` logits with ROAR's Philox sampler, keyed by
        ``(seed, object key, draw)``."""
        from aion_fast.ops import roar_step

        n, samples = logits.shape[0], self.options.num_samples
        rows = n * samples
        device = logits.device
        tokens = torch.zeros(rows, 1, dtype=torch.int64, device=device)
        absent = torch.ones(rows, 1, dtype=torch.bool, device=device)
        revealed = torch.zeros(rows, 1, dtype=torch.bool, device=device)
        roar_step(logits[:, None, :].contiguous(), torch.zeros(rows, 1, dtype=torch.int64, device=device), tokens,
                  absent, revealed, keys.to(device).repeat_interleave(samples),
                  torch.arange(samples, device=device).repeat(n), seed=self.options.seed, step=0, next_step=1,
                  next_count=0, temperature=self.options.temperature)  # fmt: skip
        return tokens.reshape(n, samples)

    def _decode(self, tokens: torch.Tensor) -> tuple[torch.Tensor, list[float] | None]:
        """``(m, L)`` target tokens -> ``(m, *value_shape)`` float32 values, and a spectrum's wavelength grid."""
        decoded = self.codecs.decode({self.key: tokens}, self.target, **self.decode_options)
        values = decoded.flux if hasattr(decoded, "flux") else decoded.value
        grid = decoded.wavelength[0].tolist() if isinstance(decoded, m.Spectrum) else None
        return values.float().cpu(), grid

    @torch.no_grad()
    def __call__(self, batch: ObjectBatch) -> tuple[np.ndarray, dict[str, Any]]:
        """Predicts the objects of ``batch`` that have at least one usable input.

        Returns:
            ``rows``: (n,) int64 positions in the batch, increasing; ``columns``: name -> (n, ...) numpy values
            (one-token: the :func:`posterior_summary` columns, ``pdf`` (n, K), ``samples`` (n, S); multi-token:
            ``samples`` (n, S, P), ``mean`` and ``std`` (n, P)).
        """
        import aion_fast

        tokens, present, holes = model_inputs(self.codecs, batch, self.device)
        for inputs in (tokens, present, holes):
            inputs.pop(self.key, None)
        if not tokens:
            return np.zeros(0, dtype=np.int64), {}
        keys = object_keys(batch.object_id)
        parts: list[tuple[torch.Tensor, dict[str, torch.Tensor]]] = []
        for rows, group_tokens, input_mask in presence_groups(tokens, present, holes):
            rows_cpu = rows.cpu()
            out: dict[str, torch.Tensor] = {}
            if self.one_token:
                logits = self.logits(group_tokens, input_mask)[:, : self.bin_values.numel()]
                probs = torch.softmax(logits.double(), dim=-1).cpu()
                out = {k: torch.from_numpy(v) for k, v in posterior_summary(probs, self.bin_values).items()}
                out["pdf"] = probs
                if self.options.num_samples:
                    out["samples"] = self.bin_values[self.draw_bins(logits, keys[rows_cpu]).cpu()]
            else:
                draws = aion_fast.generate(
                    self.model, self.codecs, group_tokens, self.target, self.options.num_samples,
                    decay=self.options.decay, max_steps=self.options.max_steps,
                    temperature=self.options.temperature, seed=self.options.seed, object_ids=keys[rows_cpu],
                    input_mask=input_mask, **self.decode_options,
                )  # fmt: skip
                values = (draws.flux if hasattr(draws, "flux") else draws.value).float().cpu()
                values = values.reshape(values.shape[0], values.shape[1], -1)
                out = {"samples": values, "mean": values.mean(dim=1), "std": values.std(dim=1, correction=0)}
            parts.append((rows_cpu, out))
        if not parts:
            return np.zeros(0, dtype=np.int64), {}
        all_rows = torch.cat([rows for rows, _ in parts])
        order = torch.argsort(all_rows)
        columns = {name: torch.cat([out[name] for _, out in parts])[order].numpy() for name in parts[0][1]}
        return all_rows[order].numpy(), columns

    def schema(self, job: dict[str, Any]):
        """Arrow schema of the output rows: :func:`~aion_fast.jobs.writer.object_fields`, then the target's."""
        import pyarrow as pa

        fields = object_fields()
        metadata = {"aion_fast.job": json.dumps(job, sort_keys=True), "aion_fast.target": self.target.__name__}
        samples = self.options.num_samples
        if self.one_token:
            fields += [(name, pa.float64()) for name in ("mean", "median", "mode", "std", *list(PERCENTILES)[1:])]
            if self.options.pdf is not None:
                pdf_type = pa.float16() if self.options.pdf == "float16" else pa.float32()
                fields.append(("pdf", pa.list_(pdf_type, self.bin_values.numel())))
            if samples:
                fields.append(("samples", pa.list_(pa.float64(), samples)))
            metadata["aion_fast.bin_values"] = json.dumps(self.bin_values.tolist())
        else:
            size = math.prod(self.value_shape)
            fields += [("samples", pa.list_(pa.list_(pa.float32(), size), samples)),
                       ("mean", pa.list_(pa.float32(), size)), ("std", pa.list_(pa.float32(), size))]  # fmt: skip
            metadata["aion_fast.value_shape"] = json.dumps(list(self.value_shape))
            if self.grid is not None:
                metadata["aion_fast.wavelength"] = json.dumps(self.grid)
        return pa.schema(fields, metadata=metadata)

    def arrow_columns(self, columns: dict[str, np.ndarray], schema) -> dict[str, Any]:
        """The numpy columns of :meth:`__call__` as Arrow arrays of ``schema``'s types."""
        import pyarrow as pa

        out: dict[str, Any] = {}
        for field in list(schema)[len(object_fields()) :]:
            values = columns[field.name]
            if not pa.types.is_fixed_size_list(field.type):
                out[field.name] = pa.array(values, type=field.type)
                continue
            inner = field.type.value_type
            if pa.types.is_fixed_size_list(inner):  # (n, S, P): draws of a multi-token target
                flat = pa.array(values.reshape(-1).astype(np.float32), type=inner.value_type)
                out[field.name] = pa.FixedSizeListArray.from_arrays(
                    pa.FixedSizeListArray.from_arrays(flat, inner.list_size), field.type.list_size
                )
            else:
                dtype = np.float16 if inner == pa.float16() else (np.float32 if inner == pa.float32() else np.float64)
                flat = pa.array(values.reshape(-1).astype(dtype), type=inner)
                out[field.name] = pa.FixedSizeListArray.from_arrays(flat, field.type.list_size)
        return out


def _job_description(checkpoint: Path | str, options: PredictOptions, label: str, target) -> dict[str, Any]:
    import aion_fast
    from aion_fast.hub import read_config

    config = read_config(checkpoint)
    one_token = _one_token(target)
    return {
        "task": "predict",
        "model": label,
        "demo_checkpoint": options.model is None,
        "model_config_sha256": hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16],
        "model_weights_sha256_16": cached_checkpoint_digest(checkpoint) if Path(checkpoint).is_dir() else None,
        "aion_fast_version": aion_fast.__version__,
        "target": target.__name__,
        "target_token_key": target.token_key,
        "posterior": "exact categorical over the codec's bins" if one_token else "ROAR draws",
        "inputs": list(options.inputs) if options.inputs is not None else "survey defaults",
        "sources": {group: survey for group, survey in options.sources},
        "num_samples": options.num_samples,
        "pdf": options.pdf,
        "decoding": {
            "decay": options.decay,
            "temperature": options.temperature,
            "max_steps": options.max_steps,
            "wavelength": list(options.wavelength) if options.wavelength else None,
        },  # fmt: skip
        "seed": options.seed,
        "object_keys": "decimal ids as given, other ids BLAKE2b-64 >> 1",
    }


def _accepts(checkpoint: Path | str, predictor: Predictor):
    """Modality class -> None when it can be an input (model takes it, codec present, not the target), else why."""
    from aion_fast.hub import read_config

    domains = set(read_config(checkpoint).get("domains_in", ()))
    cache: dict[type, str | None] = {}

    def accepts(cls: type) -> str | None:
        if cls not in cache:
            if cls.token_key == predictor.key:
                cache[cls] = "it is the prediction target"
            elif cls.token_key not in domains:
                cache[cls] = f"the model does not take {cls.token_key}"
            else:
                cache[cls] = predictor.codecs.missing_codec(cls)
        return cache[cls]

    return accepts


def run_predict(inputs: Sequence[str | os.PathLike], output: str | os.PathLike, options: PredictOptions) -> dict:
    """Predicts the target for this rank's shards of ``inputs`` into ``output`` (see the module docstring).

    Resumes a stopped run, skips complete shards and writes ``manifest.json`` when every shard is done, exactly as
    :func:`aion_fast.jobs.encode.run_encode`.

    Returns:
        Summary dict of this rank (and ``manifest`` when this call completed the job).

    Raises:
        ValueError: bad options or inputs, a target the model does not decode, an output holding another job's
            results (:class:`~aion_fast.jobs.plan.OutputConflictError`).
    """
    from tqdm import tqdm

    from aion_fast.data.formats import discover
    from aion_fast.hub import default_model

    start_time = time.perf_counter()
    target = target_modality(options.target)
    _validate(options, target)
    inputs = discover([str(p) for p in inputs])
    checkpoint, label = default_model() if options.model is None else (options.model, str(options.model))
    job = _job_description(checkpoint, options, label, target)
    names = shard_names(inputs)
    rank, world, launcher = distributed_rank()
    distributed = launcher == "torchrun" and world > 1
    if distributed:
        init_process_group()
    out = Path(output)
    prepare_output(out)
    with OutputLock(out, rank, world):  # one job per output (released on exit, or by the kernel if it dies)
        check_identity(out, job, record=False)
        parts_dir = out / "_parts"
        states = shard_states(inputs, names, shards_of_rank(names, rank, world), out, job)
        parts_dir.mkdir(parents=True, exist_ok=True)
        skipped = [s.name for s in states if s.complete]
        done_before = sum(s.rows_in for s in states)
        for state in states:
            if state.complete:
                remove_progress(parts_dir, state.name)
        todo = [s.index for s in states if not s.complete]

        predictor = Predictor(checkpoint, target, options) if todo else None
        schema = predictor.schema(job) if predictor else None
        accepts = _accepts(checkpoint, predictor) if todo else None
        plan = plan_tasks(
            inputs,
            names,
            todo,
            parts_dir,
            job,
            groups=options.inputs,
            sources=dict(options.sources),
            accepts=accepts,
            batch_size=options.batch_size,
            row_group_rows=options.row_group_rows,
        )
        tasks, rows_of, progress_of, identity_of = plan.tasks, plan.rows_of, plan.progress_of, plan.identity_of
        details_of, selections, not_in_model = plan.details_of, plan.selections, plan.not_in_model
        done_before += plan.rows_done
        check_identity(out, job)  # recorded once the plan holds
        total = sum(rows_of.values()) - sum(p["rows_done"] for p in progress_of.values() if p)
        workers = auto_workers(options.workers, options.device, len(tasks))

        hashing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aion-fast-sha256")
        digests: dict[int, Future] = {}
        by_path = {str(inputs[i]): i for i in todo}
        writers: dict[int, ShardWriter] = {}
        remaining = {i: rows_of[i] - (progress_of[i]["rows_done"] if progress_of[i] else 0) for i in todo}
        shard_start: dict[int, float] = {}
        predicted = failed = 0
        bar = tqdm(total=total, unit="obj", disable=not options.progress, desc=f"rank {rank}/{world}", file=sys.stderr,
                   dynamic_ncols=True)  # fmt: skip

        def open_writer(index: int) -> ShardWriter:
            shard_start[index] = time.perf_counter()
            digests[index] = hashing.submit(file_sha256, inputs[index])
            return ShardWriter(out, names[index], str(inputs[index]), None, job, options.row_group_rows,
                               progress_of[index], identity_of[index], schema=schema)  # fmt: skip

        def finish(index: int) -> None:
            writer = writers.pop(index) if index in writers else open_writer(index)
            wall = time.perf_counter() - shard_start[index]
            finish_shard(writer, inputs[index], digests[index].result(), wall, details_of[index])

        try:
            for index in [i for i in todo if remaining[i] == 0]:
                finish(index)
            loaded = batches(tasks, selections, loader=options.loader, batch_size=options.batch_size,
                             device=options.device, workers=workers)  # fmt: skip
            for batch in loaded:
                index = by_path[batch.file]
                if index not in writers:
                    writers[index] = open_writer(index)
                rows, columns = predictor(batch)
                if len(rows) == 0:
                    columns = _empty_columns(schema)
                writers[index].add_rows(batch, rows, predictor.arrow_columns(columns, schema))
                predicted += len(rows)
                failed += batch.size - len(rows)
                remaining[index] -= batch.size
                bar.update(batch.size)
                if remaining[index] == 0:
                    finish(index)
        finally:
            bar.close()
            hashing.shutdown(wait=True)
        wall = time.perf_counter() - start_time
        summary: dict[str, Any] = {
            "rank": rank,
            "world_size": world,
            "launcher": launcher,
            "checkpoint": str(checkpoint),
            "demo_checkpoint": options.model is None,
            "target": target.__name__,
            "shards_predicted": len(todo),
            "shards_skipped_complete": len(skipped),
            "objects_predicted": predicted,
            "objects_failed": failed,
            "objects_skipped_done_before": done_before,
            "modalities_not_in_model": not_in_model,
            "wall_s": round(wall, 3),
            "objects_per_s": round(predicted / wall, 3) if wall > 0 else None,
        }
        return close_job(summary, out, names, job, rank, distributed)


def _empty_columns(schema) -> dict[str, np.ndarray]:
    """Zero-row numpy columns for a batch where no object had a usable input."""
    import pyarrow as pa

    out = {}
    for field in list(schema)[len(object_fields()) :]:
        size, value_type = 1, field.type
        while pa.types.is_fixed_size_list(value_type):
            size, value_type = size * value_type.list_size, value_type.value_type
        out[field.name] = np.zeros((0, size) if pa.types.is_fixed_size_list(field.type) else 0)
    return out
