"""``aion-fast encode``: survey files in, one Parquet file of embeddings per input out.

Each rank takes its shards (:func:`~aion_fast.jobs.manifest.shards_of_rank`), skips those already complete
(:mod:`aion_fast.jobs.plan`), chooses per input what it contributes (:func:`aion_fast.data.mmu.selection_of`: survey
defaults or ``--modalities``, only what the model takes, one source per modality), streams row ranges through the
loader (:mod:`aion_fast.jobs.loader`), embeds them (:class:`~aion_fast.jobs.encoder.BatchEncoder`) and writes them
(:mod:`aion_fast.jobs.writer`). Re-running the same command resumes; the output equals an uninterrupted run's.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aion_fast.data.columns import MODALITY_GROUPS, SURVEY_DEFAULT_GROUPS
from aion_fast.jobs.encoder import BatchEncoder
from aion_fast.jobs.loader import auto_workers, batches
from aion_fast.jobs.lock import OutputLock, check_identity
from aion_fast.jobs.manifest import (
    cached_checkpoint_digest,
    distributed_rank,
    file_sha256,
    merge_manifest,
    shards_of_rank,
)
from aion_fast.jobs.pipeline import BackgroundWriter
from aion_fast.jobs.plan import plan_tasks, shard_names, shard_states
from aion_fast.jobs.writer import ShardWriter, finish_shard, remove_progress
from aion_fast.precision import resolve_precision

__all__ = ["BatchEncoder", "EncodeOptions", "discover_inputs", "run_encode"]

#: Rows per Parquet row group (and the least rows per resumable part file).
ROW_GROUP_ROWS = 4096


@dataclass(frozen=True)
class EncodeOptions:
    """What one ``aion-fast encode`` run does (everything but the inputs and the output folder).

    Attributes:
        model: checkpoint directory or hub id; None = the bundled demo model (aion_fast.hub.default_model).
        modalities: groups of :data:`~aion_fast.data.columns.MODALITY_GROUPS` to use, from every survey of a file;
            None = what each file's surveys measured (:data:`~aion_fast.data.columns.SURVEY_DEFAULT_GROUPS`).
        sources: ``(group, survey)`` pairs choosing the survey of a group that two surveys of a file give.
        batch_size: objects per device batch.
        device: torch device for codecs and transformer.
        loader: ``"torch"`` (DataLoader) or ``"dali"``.
        workers: DataLoader worker processes (0 = read in the main process); None = automatic
            (:func:`~aion_fast.jobs.loader.auto_workers`).
        pooling: ``"mean"`` (over each object's present tokens).
        dtype: ``"float32"`` or ``"float16"`` embeddings in the Parquet files.
        progress: show a progress bar (objects/s and ETA) on stderr.
        row_group_rows: rows per Parquet row group; also the resumption granularity inside a shard.
        precision: ``"fp32"`` (the exact path; the default) or ``"bf16"`` for the codec networks and the transformer
            (:mod:`aion_fast.precision`); a bf16 run measures its agreement with fp32 on its first batch (summary and
            manifest).
        verify_inputs: compare each complete shard's input with its recorded SHA-256 on a re-run (False: size and
            modification time only, for re-runs over inputs too large to read again).
    """

    model: str | None = None
    modalities: tuple[str, ...] | None = None
    sources: tuple[tuple[str, str], ...] = ()
    batch_size: int = 256
    device: str = "cpu"
    loader: str = "torch"
    workers: int | None = None
    pooling: str = "mean"
    dtype: str = "float32"
    progress: bool = True
    row_group_rows: int = ROW_GROUP_ROWS
    verify_inputs: bool = True
    precision: str | None = None


def discover_inputs(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Input files, globs and directories -> the shards to encode, each once (see :mod:`aion_fast.data.formats`).

    Raises:
        ValueError: an input that does not exist, or a directory with no shard below it.
    """
    from aion_fast.data.formats import discover

    return discover([str(p) for p in inputs])


def _codec_configs_digest(root: Path) -> str:
    """SHA-256 (16 hex digits) of every codec ``config.json`` below a checkpoint, by relative path and content."""
    digest = hashlib.sha256()
    for path in sorted(root.glob("codecs/*/config.json")):
        config = json.loads(path.read_text())
        digest.update(f"{path.relative_to(root).as_posix()}\0{json.dumps(config, sort_keys=True)}\n".encode())
    return digest.hexdigest()[:16]


def _job_description(checkpoint: Path | str, options: EncodeOptions, label: str) -> dict[str, Any]:
    import aion_fast
    from aion_fast.hub import CONFIG_NAME, resolve_file

    config_file = resolve_file(checkpoint, CONFIG_NAME)
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"--model {checkpoint}: {config_file} is not a readable JSON config ({error}); download "
                         f"the checkpoint again.") from None  # fmt: skip
    local = Path(checkpoint).is_dir()
    return {
        "model": label,
        "demo_checkpoint": options.model is None,
        "model_config_sha256": hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16],
        "model_weights_sha256_16": cached_checkpoint_digest(checkpoint) if local else None,
        "codec_configs_sha256_16": _codec_configs_digest(config_file.parent),
        "aion_fast_version": aion_fast.__version__,
        "modalities": list(options.modalities) if options.modalities is not None else "survey defaults",
        "sources": {group: survey for group, survey in options.sources},
        "pooling": options.pooling,
        "dtype": options.dtype,
        "precision": resolve_precision(options.precision, options.device, what="--precision"),
    }


def _check_device(device: str) -> None:
    """A device string torch parses and this machine has (before any model is loaded)."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {device!r} is not a torch device; use cpu, cuda or cuda:N.") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: no CUDA GPU is visible here (torch.cuda.is_available() is False); "
                             f"use --device cpu, or run on a GPU node.")  # fmt: skip
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s); use "
                             f"cuda:0 ... cuda:{torch.cuda.device_count() - 1}.")  # fmt: skip
    elif parsed.type not in ("cpu", "mps", "xpu"):
        raise ValueError(f"--device {device!r}: use cpu, cuda or cuda:N.")
    elif parsed.type != "cpu" and not getattr(getattr(torch, parsed.type, None), "is_available", lambda: False)():
        raise ValueError(f"--device {device}: no {parsed.type} device is available here; use --device cpu.")


def _validate(options: EncodeOptions) -> None:
    resolve_precision(options.precision, options.device, what="--precision")
    model = None if options.model is None else str(options.model)
    if model is not None and not Path(model).expanduser().is_dir():
        # A hub id is "namespace/name"; anything else that is not a directory was meant as a local path.
        if model.startswith(("/", ".", "~")) or model.count("/") != 1 or Path(model).expanduser().exists():
            raise FileNotFoundError(
                f"--model {model}: no such checkpoint directory; give a local checkpoint directory (config.json + "
                f"model.safetensors at its root) or a hub id such as polymathic-ai/aion-base."
            )
    if options.modalities is not None:
        unknown = sorted(set(options.modalities) - set(MODALITY_GROUPS))
        if unknown or not options.modalities:
            raise ValueError(f"--modalities {list(options.modalities)}: choose one or more of {list(MODALITY_GROUPS)}.")
    for group, survey in options.sources:
        if group not in MODALITY_GROUPS or survey not in SURVEY_DEFAULT_GROUPS:
            raise ValueError(
                f"--source {group}={survey}: give GROUP=SURVEY with GROUP in {list(MODALITY_GROUPS)} and SURVEY in "
                f"{list(SURVEY_DEFAULT_GROUPS)}."
            )
    if options.pooling != "mean":
        raise ValueError(f"--pooling {options.pooling!r}: only 'mean' writes one fixed-size vector per object.")
    if options.dtype not in ("float32", "float16"):
        raise ValueError(f"--dtype {options.dtype!r}: choose float32 or float16.")
    if options.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {options.batch_size}.")
    if options.loader not in ("torch", "dali"):
        raise ValueError(f"--loader {options.loader!r}: choose torch or dali.")
    if options.workers is not None and options.workers < 0:
        raise ValueError(f"--workers must be >= 0 (or omitted for automatic), got {options.workers}.")
    if options.row_group_rows < 1:
        raise ValueError(f"--row-group-rows must be >= 1, got {options.row_group_rows}.")
    _check_device(options.device)


def prepare_output(out: Path) -> None:
    """Creates the output directory and checks it can be written (one line naming it otherwise)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output {out} is a file; give a directory (it is created if missing).")
    try:
        (out / "_parts").mkdir(parents=True, exist_ok=True)
        probe = out / f".aion-fast.write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"--output {out} cannot be written ({error.strerror or error}); give a writable "
                         f"directory with free space.") from None  # fmt: skip


def _spectrum_grid(checkpoint: Path | str) -> tuple[float, float, int] | None:
    """``(lambda_min, resolution, num_pixels)`` of the checkpoint's spectrum codec grid (None without one)."""
    from aion_fast import modalities as m
    from aion_fast.hub import read_config

    try:
        config = read_config(checkpoint, f"codecs/{m.DESISpectrum.name}/config.json")
        return float(config["lambda_min"]), float(config["resolution"]), int(config["num_pixels"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def _accepts(checkpoint: Path | str, encoder: BatchEncoder):
    """Modality class -> None when the model takes its token key and the checkpoint holds its codec, else why not."""
    from aion_fast.hub import read_config

    domains = set(read_config(checkpoint).get("domains_in", ()))
    cache: dict[type, str | None] = {}

    def accepts(cls: type) -> str | None:
        if cls not in cache:
            cache[cls] = (f"the model does not take {cls.token_key}" if cls.token_key not in domains
                          else encoder.codecs.missing_codec(cls))  # fmt: skip
        return cache[cls]

    return accepts


def run_encode(inputs: Sequence[str | os.PathLike], output: str | os.PathLike, options: EncodeOptions) -> dict:
    """Encodes this rank's shards of ``inputs`` into ``output`` (see the module docstring).

    Args:
        inputs: survey files, globs or directories (:func:`discover_inputs`).
        output: output directory (created).
        options: what to run.

    Returns:
        Summary dict of this rank (and ``manifest`` when this call completed its shards and merged the manifest).

    Raises:
        ValueError: bad options or inputs, an output holding another job's or another input's results
            (:class:`~aion_fast.jobs.plan.OutputConflictError`), two sources for one modality.
    """
    from aion_fast.hub import default_model

    start_time = time.perf_counter()
    _validate(options)
    inputs = discover_inputs(inputs)
    checkpoint, label = default_model() if options.model is None else (options.model, str(options.model))
    job = _job_description(checkpoint, options, label)
    names = shard_names(inputs)
    rank, world, source = distributed_rank()
    if source == "torchrun" and world > 1:
        init_process_group()
    out = Path(output)
    prepare_output(out)
    lock = OutputLock(out, rank, world)  # released in the finally below, or by the kernel if the process dies
    try:
        return _run_locked(inputs, out, options, checkpoint, label, job, names, (rank, world, source), start_time)
    finally:
        lock.release()


def _remove_leftovers(out: Path, shards: list[str] | None) -> None:
    """Deletes temporary files a killed run left (of ``shards``; of every shard when the job holds the output
    alone, ``shards=None``): nothing reads them, and the lock says no other process is writing them."""
    for folder in (out, out / "_parts"):
        for path in folder.glob("*.tmp"):
            if shards is None or any(path.name.startswith(f"{name}.") for name in shards):
                path.unlink(missing_ok=True)


def _run_locked(inputs, out, options, checkpoint, label, job, names, where, start_time) -> dict:  # noqa: PLR0915
    """:func:`run_encode` once the output is locked (arguments as computed there)."""
    from tqdm import tqdm

    rank, world, source = where
    distributed = source == "torchrun" and world > 1
    identity = {**job, "batch_size": options.batch_size, "row_group_rows": options.row_group_rows}
    check_identity(out, identity, record=False)  # recorded once the plan holds: a refused start claims nothing
    parts_dir = out / "_parts"
    mine = shards_of_rank(names, rank, world)
    _remove_leftovers(out, None if world == 1 else [names[i] for i in mine])
    states = shard_states(inputs, names, mine, out, job, options.verify_inputs)
    skipped = [s.name for s in states if s.complete]
    done_before = sum(s.rows_in for s in states)  # objects of this rank finished by an earlier run
    for state in states:
        if state.complete:
            remove_progress(parts_dir, state.name)  # left over if a run stopped right after the record
    todo = [s.index for s in states if not s.complete]

    precision = resolve_precision(options.precision, options.device, what="--precision")
    encoder = BatchEncoder(checkpoint, options.device, precision) if todo else None
    accepts = _accepts(checkpoint, encoder) if todo else None
    for group in options.modalities or () if accepts is not None else ():
        reasons = {cls.__name__: accepts(cls) for cls in MODALITY_GROUPS[group]}
        if all(reasons.values()):  # asked for, and nothing of it can be encoded: a problem of the model
            why = "; ".join(f"{name}: {reason}" for name, reason in reasons.items())
            raise ValueError(f"--modalities {group}: the model takes none of its modalities ({why}); leave {group} "
                             f"out, or pass a --model that has it.")  # fmt: skip
    grid = _spectrum_grid(checkpoint) if todo else None
    plan = plan_tasks(inputs, names, todo, parts_dir, job, groups=options.modalities, sources=dict(options.sources),
                      accepts=accepts, batch_size=options.batch_size, row_group_rows=options.row_group_rows,
                      spectrum_grid=grid)  # fmt: skip
    tasks, rows_of, progress_of, identity_of = plan.tasks, plan.rows_of, plan.progress_of, plan.identity_of
    details_of, selections, not_in_model = plan.details_of, plan.selections, plan.not_in_model
    done_before += plan.rows_done
    check_identity(out, identity)
    total = sum(rows_of.values()) - sum(p["rows_done"] for p in progress_of.values() if p)
    workers = auto_workers(options.workers, options.device, len(tasks))

    hashing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aion-fast-sha256")  # overlaps the encoding
    digests: dict[int, Future] = {}
    by_path = {str(inputs[i]): i for i in todo}
    writers: dict[int, ShardWriter] = {}
    remaining = {i: rows_of[i] - (progress_of[i]["rows_done"] if progress_of[i] else 0) for i in todo}
    shard_start: dict[int, float] = {}
    encoded = failed = issues = partial = duplicates = 0
    precision_check: dict[str, Any] | None = None
    bar = tqdm(total=total, unit="obj", disable=not options.progress, desc=f"rank {rank}/{world}", file=sys.stderr,
               dynamic_ncols=True)  # fmt: skip

    def open_writer(index: int) -> ShardWriter:
        shard_start[index] = time.perf_counter()
        digests[index] = hashing.submit(file_sha256, inputs[index])
        return ShardWriter(out, names[index], str(inputs[index]), encoder.model.config.dim, job,
                           options.row_group_rows, progress_of[index], identity_of[index])  # fmt: skip

    def finish(index: int) -> None:
        nonlocal duplicates
        writer = writers.pop(index) if index in writers else open_writer(index)
        wall = time.perf_counter() - shard_start[index]
        finish_shard(writer, inputs[index], digests[index].result(), wall, details_of[index])
        duplicates += writer.duplicates

    try:
        for index in [i for i in todo if remaining[i] == 0]:  # every row already in recorded parts
            finish(index)
        loaded = batches(tasks, selections, loader=options.loader, batch_size=options.batch_size,
                         device=options.device, workers=workers)  # fmt: skip
        if torch.device(options.device).type == "cuda":  # copies of the next batch overlap this one's compute
            from aion_fast.jobs.pipeline import Prefetcher

            loaded = Prefetcher(loaded, options.device)
        with BackgroundWriter(max_pending=4) as background:  # Parquet parts and shard files: off this thread, in order
            for batch in loaded:
                index = by_path[batch.file]
                if index not in writers:
                    writers[index] = open_writer(index)
                if precision != "fp32" and precision_check is None:  # measured once per run, on its first batch
                    precision_check = encoder.compare_with_fp32(batch)
                    details_of[index]["precision_check"] = precision_check
                rows, vectors = encoder(batch)
                background.submit(writers[index].add, batch, rows, vectors)
                encoded += len(rows)
                failed += batch.size - len(rows)
                issues += sum(1 for issue in batch.issues if issue.modality != "*")
                partial += len({issue.row for issue in batch.issues if issue.modality != "*"} & set(rows.tolist()))
                remaining[index] -= batch.size
                bar.update(batch.size)
                if remaining[index] == 0:
                    background.submit(finish, index)
    finally:
        bar.close()
        hashing.shutdown(wait=True)
    wall = time.perf_counter() - start_time

    summary: dict[str, Any] = {
        "rank": rank,
        "world_size": world,
        "launcher": source,
        "checkpoint": str(checkpoint),
        "demo_checkpoint": options.model is None,
        "loader": options.loader,
        "workers": workers,
        "shards_encoded": len(todo),
        "shards_skipped_complete": len(skipped),
        "objects_encoded": encoded,
        "objects_encoded_with_modalities_skipped": partial,
        "objects_failed": failed,
        "objects_skipped_done_before": done_before,
        "modalities_skipped": issues,
        "duplicate_object_ids": duplicates,
        "modalities_not_in_model": not_in_model,
        "precision": precision,
        "precision_check": precision_check,
        "wall_s": round(wall, 3),
        "objects_per_s": round(encoded / wall, 3) if wall > 0 else None,
    }
    return close_job(summary, out, names, job, rank, distributed)


def close_job(
    summary: dict[str, Any], out: Path, names: Sequence[str], job: dict[str, Any], rank: int, distributed: bool
) -> dict[str, Any]:
    """End of a job's rank (encode and predict): once every shard of ``names`` has its record, rank 0 (or the only
    process) merges ``manifest.json`` and the summary names it; ranks of a torchrun job meet at barriers around that."""
    if distributed:
        torch.distributed.barrier()
    complete = all((out / "_parts" / f"{name}.json").is_file() for name in names)
    if complete and (rank == 0 or not distributed):
        summary["manifest"] = str(out / "manifest.json")
        merge_manifest(out, job)
    if distributed:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return summary


def init_process_group() -> None:
    """gloo process group for the end-of-job barrier (no tensors are exchanged); times out instead of hanging."""
    import datetime

    if not torch.distributed.is_initialized():
        timeout = float(os.environ.get("AION_FAST_DIST_TIMEOUT_S", "1800"))
        torch.distributed.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout))
