"""The shard plan of ``aion-fast encode``: which inputs, under which output names, and what is already done.

A shard is one input file (or Arrow dataset directory). Its output name is its path relative to the survey root
(``legacysurvey/dr10_south_21/healpix=1/001-of-001.hdf5`` -> ``legacysurvey__dr10_south_21__healpix=1__001-of-001``),
so it does not depend on which other files are passed with it: one-file-per-invocation jobs into one ``--output``
keep every result. An output that already holds a shard of that name made from another input (another path, or the
same path with other content) or by another job (model, options) stops the job with an error; nothing is replaced.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aion_fast.data.formats import locate
from aion_fast.jobs.manifest import parquet_rows, read_record, warn

__all__ = [
    "OutputConflictError",
    "ShardState",
    "TaskPlan",
    "differences",
    "plan_tasks",
    "relative_name",
    "shard_name",
    "shard_states",
]


class OutputConflictError(ValueError):
    """The output directory holds results that this run would replace."""


def relative_name(path: str | os.PathLike) -> str:
    """``path`` relative to its survey root (:func:`aion_fast.data.formats.locate`)."""
    return locate(path)[1]


def shard_name(path: str | os.PathLike) -> str:
    """Output name of one input: :func:`relative_name` without its suffix, ``/`` replaced by ``__``."""
    rel = Path(relative_name(path))
    return "__".join(rel.with_suffix("").parts if rel.suffix in (".hdf5", ".h5", ".parquet", ".fits") else rel.parts)


def shard_names(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """:func:`shard_name` of every input.

    Raises:
        ValueError: two different inputs map to one name, or one file is given twice.
    """
    names = [shard_name(p) for p in inputs]
    seen: dict[str, str] = {}
    for path, name in zip(inputs, names):
        resolved = os.path.realpath(path)
        if name in seen:
            if seen[name] == resolved:
                raise ValueError(f"{path} is given twice; pass each input once.")
            raise ValueError(
                f"{seen[name]} and {resolved} are different files that would both be written as {name}.parquet "
                f"(a shard's name is its path below the survey folder, e.g. legacysurvey/, or its parent folder); "
                f"encode them into separate --output directories, or keep one MMU tree per output."
            )
        seen[name] = resolved
    return names


@dataclass
class ShardState:
    """One input of this rank and what the output directory already holds for it.

    Attributes:
        index: position in the job's inputs.
        path: the input.
        name: output name.
        complete: a finished record of this input and job exists (the shard is skipped).
        rows_in: input rows of a complete shard.
    """

    index: int
    path: str
    name: str
    complete: bool = False
    rows_in: int = 0


def _same_input(record: dict[str, Any], path: str, checksum: bool = True) -> tuple[bool, str]:
    """Whether a shard record was made from ``path`` as it is now: same path, size and content (SHA-256).

    The content is compared even when size and modification time match: both can be restored after an edit
    (``touch -d``, a copy with ``-p``). ``checksum=False`` trusts size and mtime (``--trust-mtime``).
    """
    from aion_fast.jobs.manifest import file_sha256, input_stat

    if os.path.realpath(record.get("input", "")) != os.path.realpath(path):
        return False, f"made from {record.get('input')}"
    size, mtime_ns = input_stat(path)
    if not checksum and record.get("size") == size and record.get("mtime_ns") == mtime_ns:
        return True, ""
    if record.get("size") == size and record.get("sha256") == file_sha256(path):
        return True, ""
    return False, f"made from {path} when it had other content (SHA-256 {str(record.get('sha256'))[:12]}...)"


def differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:4])


def shard_states(
    inputs: Sequence[str],
    names: Sequence[str],
    indices: Sequence[int],
    output: Path,
    job: dict[str, Any],
    checksum: bool = True,
) -> list[ShardState]:
    """What ``output`` holds for each input of ``indices``.

    A shard is complete when its record is whole and its Parquet file is a complete file of the recorded rows. A
    torn record (not JSON, 0 bytes) or a torn or empty Parquet file is named on stderr and the shard is redone.
    ``checksum``: compare each complete shard's input by SHA-256 (default) or by size and mtime only.

    Raises:
        OutputConflictError: a record of another job (model, options) is in ``output``, or a shard of the same
            name was made from another input or from this input's earlier content.
    """
    parts_dir = output / "_parts"
    for record_path in sorted(parts_dir.glob("*.json")) if parts_dir.is_dir() else []:
        if record_path.name.endswith(".progress.json"):
            continue
        record = read_record(record_path, ("job",))
        if record is None:
            continue  # torn: named and redone below if it is one of ours
        other = record["job"]
        if other != job:
            raise OutputConflictError(
                f"{output} holds results of another job ({differences(other, job)}); write this job to a new "
                f"--output directory (results of different models or options never share one)."
            )
    states = []
    for index in indices:
        state = ShardState(index, str(inputs[index]), names[index])
        record_path = parts_dir / f"{names[index]}.json"
        final = output / f"{names[index]}.parquet"
        if record_path.is_file():
            record = read_record(record_path, ("input", "rows_in", "rows_written", "sha256", "job"))
            if record is None:
                warn(f"{record_path} is torn or empty; shard {names[index]} is encoded again.")
                record_path.unlink()
                states.append(state)
                continue
            same, why = _same_input(record, state.path, checksum)
            if not same:
                raise OutputConflictError(
                    f"{final} was {why}, not from {state.path} as it is now; "
                    f"use a new --output directory (or delete that shard's files to encode it again)."
                )
            if parquet_rows(final) != record["rows_written"]:
                warn(f"{final} is {'torn or empty' if final.exists() else 'missing'} (its record says "
                     f"{record['rows_written']} rows); shard {names[index]} is encoded again.")  # fmt: skip
                record_path.unlink()
                states.append(state)
                continue
            state.complete = True
            state.rows_in = record["rows_in"]
        states.append(state)
    return states


@dataclass
class TaskPlan:
    """The row ranges still to run for a job's unfinished shards, and what each shard contributes.

    Attributes:
        tasks: ``(input, start, stop)`` row ranges, after each shard's last recorded part.
        rows_of: shard index -> input rows.
        progress_of: shard index -> its progress record to resume from (None: start afresh).
        identity_of: shard index -> what a progress record must match (input size and mtime, batch step).
        details_of: shard index -> format, id column, modalities used and not in the model (for its record).
        selections: input path -> its :class:`~aion_fast.data.columns.Selection`.
        not_in_model: modality class name -> why the model cannot take it (over every shard).
        rows_done: input rows already in recorded parts.
    """

    tasks: list[tuple[str, int, int]]
    rows_of: dict[int, int]
    progress_of: dict[int, dict | None]
    identity_of: dict[int, dict]
    details_of: dict[int, dict]
    selections: dict[str, Any]
    not_in_model: dict[str, str]
    rows_done: int


def plan_tasks(
    inputs: Sequence[str], names: Sequence[str], todo: Sequence[int], parts_dir: Path, job: dict[str, Any], *,
    groups: Sequence[str] | None, sources: dict[str, str], accepts: Any, batch_size: int, row_group_rows: int,
    spectrum_grid: tuple[float, float, int] | None = None,
) -> TaskPlan:  # fmt: skip
    """Opens each unfinished shard once: chooses what it contributes (a column of the wrong shape stops the job
    here, naming it), splits it into row ranges aligned on its chunks, and finds where a stopped run left it."""
    import dataclasses

    from aion_fast.data.mmu import check_columns, row_ranges, selection_of
    from aion_fast.jobs.loader import open_input
    from aion_fast.jobs.manifest import input_stat
    from aion_fast.jobs.writer import load_progress, remove_progress

    plan = TaskPlan([], {}, {}, {}, {}, {}, {}, 0)
    for index in todo:
        with open_input(inputs[index]) as handle:
            chunk = handle.chunk_rows()
            plan.rows_of[index] = handle.num_rows
            selection = selection_of(handle, groups, sources=sources, accepts=accepts)
            check_columns(handle, selection)
            selection = dataclasses.replace(selection, spectrum_grid=spectrum_grid)
            plan.details_of[index] = {
                "format": getattr(handle, "format", "mmu-hdf5"),
                "id_column": "/".join(filter(None, selection.id_column)) if selection.id_column else None,
                "modalities_used": selection.modality_names(),
                "modalities_not_in_model": dict(selection.not_in_model),
            }
        plan.selections[str(inputs[index])] = selection
        plan.not_in_model.update(selection.not_in_model)
        ranges = row_ranges(plan.rows_of[index], batch_size, chunk if chunk <= batch_size else 1)
        size, mtime_ns = input_stat(inputs[index])
        step = ranges[0][1] - ranges[0][0] if ranges else 0
        identity = {"size": size, "mtime_ns": mtime_ns, "step": step, "row_group_rows": row_group_rows}
        plan.identity_of[index] = identity
        plan.progress_of[index] = load_progress(parts_dir, names[index], job, identity)
        if plan.progress_of[index] is None:
            remove_progress(parts_dir, names[index])
        first = plan.progress_of[index]["rows_done"] if plan.progress_of[index] else 0
        plan.rows_done += first
        plan.tasks += [(str(inputs[index]), a, b) for a, b in ranges if a >= first]
    return plan
