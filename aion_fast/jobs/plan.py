"""The shard plan of ``aion-fast encode``: which inputs, under which output names, and what is already done.

A shard is one input file (or Arrow dataset directory). Its output name is its path relative to the survey root
(``legacysurvey/dr10_south_21/healpix=1/001-of-001.hdf5`` -> ``legacysurvey__dr10_south_21__healpix=1__001-of-001``),
so it does not depend on which other files are passed with it: one-file-per-invocation jobs into one ``--output``
keep every result. An output that already holds a shard of that name made from another input (another path, or the
same path with other content) or by another job (model, options) stops the job with an error; nothing is replaced.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aion_fast.data.formats import locate

__all__ = ["OutputConflictError", "ShardState", "relative_name", "shard_name", "shard_states"]


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
                f"{seen[name]} and {resolved} would both be written as {name}.parquet (neither path has a survey "
                f"folder such as legacysurvey/ or desi/); keep the MMU layout <survey>/<config>/healpix=N/..., or "
                f"encode them into separate --output directories."
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


def _same_input(record: dict[str, Any], path: str) -> tuple[bool, str]:
    """Whether a shard record was made from ``path`` as it is now (path, then size/mtime, then SHA-256)."""
    from aion_fast.jobs.manifest import file_sha256, input_stat

    if os.path.realpath(record.get("input", "")) != os.path.realpath(path):
        return False, f"made from {record.get('input')}"
    size, mtime_ns = input_stat(path)
    if record.get("size") == size and record.get("mtime_ns") == mtime_ns:
        return True, ""
    if record.get("sha256") == file_sha256(path):
        return True, ""
    return False, f"made from {path} when it had other content (SHA-256 {str(record.get('sha256'))[:12]}...)"


def _differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:4])


def shard_states(
    inputs: Sequence[str], names: Sequence[str], indices: Sequence[int], output: Path, job: dict[str, Any]
) -> list[ShardState]:
    """What ``output`` holds for each input of ``indices``.

    Raises:
        OutputConflictError: a record of another job (model, options) is in ``output``, or a shard of the same
            name was made from another input or from this input's earlier content.
    """
    parts_dir = output / "_parts"
    for record_path in sorted(parts_dir.glob("*.json")) if parts_dir.is_dir() else []:
        if record_path.name.endswith(".progress.json"):
            continue
        try:
            other = json.loads(record_path.read_text()).get("job", {})
        except (OSError, ValueError):
            continue
        if other != job:
            raise OutputConflictError(
                f"{output} holds results of another job ({_differences(other, job)}); write this job to a new "
                f"--output directory (results of different models or options never share one)."
            )
    states = []
    for index in indices:
        state = ShardState(index, str(inputs[index]), names[index])
        record_path = parts_dir / f"{names[index]}.json"
        if record_path.is_file():
            record = json.loads(record_path.read_text())
            same, why = _same_input(record, state.path)
            if not same:
                raise OutputConflictError(
                    f"{output / (names[index] + '.parquet')} was {why}, not from {state.path} as it is now; "
                    f"use a new --output directory (or delete that shard's files to encode it again)."
                )
            state.complete = (output / f"{names[index]}.parquet").is_file()
            state.rows_in = record.get("rows_in", 0) if state.complete else 0
        states.append(state)
    return states
