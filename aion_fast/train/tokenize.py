"""``aion-fast tokenize``: Multimodal Universe HDF5 files in, one token shard per input file out (pre-tokenize once).

Reads each input with the readers of :mod:`aion_fast.data.mmu` (:func:`~aion_fast.data.mmu.prepare_rows`: the same
modality mapping, crops and per-object checks as ``aion-fast encode``) and tokenizes the modality batches with the
codecs of a checkpoint directory, through :func:`aion_fast.jobs.encoder.batch_tokens` (so the tokens are
exactly those the encode job embeds). The shard layout is described in :mod:`aion_fast.train.tokens`.

Nothing is dropped silently: modalities an object cannot use (NaN values, every pixel masked, ...) and objects left
with none are written to the shard's ``issues.json`` (those objects stay in the shard with no presence); modalities
whose codec the checkpoint lacks are listed in ``meta.json`` (``modalities_without_codec``) and reported.

Resumable and parallel like ``encode``: a shard is written under ``<name>.tmp/`` and renamed when complete; a
re-run skips shards whose ``meta.json`` matches the input file and job; under torchrun or SLURM each rank takes every
``world_size``-th input of the sorted shard names.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from aion_fast.data.columns import parse_sources
from aion_fast.data.formats import open_source
from aion_fast.data.mmu import MODALITY_GROUPS, ObjectBatch, prepare_rows, row_ranges, selection_of
from aion_fast.jobs.manifest import distributed_rank, file_sha256, shards_of_rank
from aion_fast.jobs.plan import shard_names
from aion_fast.model.modality_info import MODALITY_INFO
from aion_fast.train.tokens import SHARD_FORMAT

if TYPE_CHECKING:
    from aion_fast.cli import Subcommands

__all__ = ["DEFAULT_TOKENIZE_GROUPS", "register", "tokenize_files"]

logger = logging.getLogger(__name__)

#: Modality groups tokenized by default: everything the encode job reads, plus the redshift training target.
DEFAULT_TOKENIZE_GROUPS = ("image", "spectrum", "photometry", "gaia", "redshift")

#: Largest token id a shard can store (int16).
_MAX_ID = np.iinfo(np.int16).max


class _CodecTokenizer:
    """Codecs of one checkpoint on one device, tokenizing :class:`ObjectBatch` objects as the encode job does."""

    def __init__(self, checkpoint: str | os.PathLike, device: str | torch.device):
        from aion_fast.codecs import CodecManager

        self.device = torch.device(device)
        self.codecs = CodecManager(repo=checkpoint, device=self.device)
        self.checkpoint = Path(checkpoint)
        self.without_codec: dict[str, str] = {}

    def has_codec(self, modality_type: type) -> bool:
        from aion_fast.codecs.registry import codec_class_for

        name = modality_type.__name__
        if name in self.without_codec:
            return False
        codec_class = codec_class_for(modality_type)
        if codec_class is None:
            self.without_codec[name] = "no codec class exists for this modality"
            return False
        if not (self.checkpoint / codec_class.folder(modality_type) / "config.json").is_file():
            self.without_codec[name] = f"the checkpoint has no {codec_class.folder(modality_type)}/config.json"
            return False
        return True

    def tokens(self, batch: ObjectBatch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``(tokens: key -> (B, n) int64, present: key -> (B,) bool)`` of the parts whose codec exists."""
        from aion_fast.data.mmu import Issue

        had_any = {row for part in batch.parts for row in part.rows.tolist()}
        batch.parts = [part for part in batch.parts if self.has_codec(type(part.modality))]
        has_any = {row for part in batch.parts for row in part.rows.tolist()}
        for row in sorted(had_any - has_any):
            batch.issues.append(
                Issue(row, "*", "no usable modality has a codec in the checkpoint; object has no tokens")
            )
        from aion_fast.jobs.encoder import batch_tokens

        return batch_tokens(self.codecs, batch, self.device)


def _job(checkpoint: Path, groups: Sequence[str], untrained: bool, sources: dict[str, str]) -> dict[str, Any]:
    import aion_fast
    from aion_fast.model.checkpoint import checkpoint_digest

    return {
        "codecs": str(checkpoint),
        "codecs_sha256_16": checkpoint_digest(checkpoint / "codecs"),
        "untrained_demo_checkpoint": untrained,
        "modalities": list(groups),
        "sources": dict(sorted(sources.items())),
        "aion_fast_version": aion_fast.__version__,
    }


class _ShardBuilder:
    """Accumulates one input file's tokens into memory-mapped ``.npy`` files of a ``.tmp`` folder."""

    def __init__(self, folder: Path, num_objects: int):
        self.folder = folder
        self.num_objects = num_objects
        self.keys: list[str] = []
        self.arrays: dict[str, np.ndarray] = {}
        self.present: dict[str, np.ndarray] = {}
        self.object_ids: list[str] = []
        self.rows: list[int] = []
        self.issues: list[dict[str, Any]] = []

    def _array(self, key: str, width: int) -> np.ndarray:
        if key not in self.arrays:
            expected = MODALITY_INFO[key].num_tokens if key in MODALITY_INFO else None
            if expected is not None and expected != width:
                raise ValueError(f"codec of {key!r} gave {width} tokens per object; the model expects {expected}")
            self.keys.append(key)
            self.arrays[key] = np.lib.format.open_memmap(
                self.folder / f"{key}.npy", mode="w+", dtype=np.int16, shape=(self.num_objects, width)
            )
            self.present[key] = np.zeros(self.num_objects, dtype=bool)
        return self.arrays[key]

    def add(self, batch: ObjectBatch, tokens: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> None:
        start = batch.start
        for key, ids in tokens.items():
            ids = ids.cpu()
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) > _MAX_ID):
                raise ValueError(f"{key} token ids span [{int(ids.min())}, {int(ids.max())}], outside int16")
            self._array(key, ids.shape[1])[start : start + batch.size] = ids.numpy().astype(np.int16)
            self.present[key][start : start + batch.size] = present[key].cpu().numpy()
        self.object_ids += batch.object_id
        self.rows += range(start, start + batch.size)
        for issue in batch.issues:
            self.issues.append({"row": start + issue.row, "object_id": batch.object_id[issue.row],
                                "modality": issue.modality, "reason": issue.reason})  # fmt: skip

    def finish(self, meta: dict[str, Any]) -> dict[str, Any]:
        """Writes the remaining arrays and ``meta.json``; returns the meta."""
        for array in self.arrays.values():
            array.flush()
        self.arrays.clear()
        presence = np.stack([self.present[k] for k in self.keys], axis=1) if self.keys else np.zeros(
            (self.num_objects, 0), dtype=bool)  # fmt: skip
        np.save(self.folder / "present.npy", presence)
        np.save(self.folder / "object_id.npy", np.asarray(self.object_ids, dtype=str))
        np.save(self.folder / "row.npy", np.asarray(self.rows, dtype=np.int64))
        (self.folder / "issues.json").write_text(json.dumps(self.issues, indent=1))
        meta = {
            "format": SHARD_FORMAT,
            **meta,
            "num_objects": self.num_objects,
            "objects_without_modality": int((~presence.any(axis=1)).sum()),
            "keys": {
                key: {
                    "num_tokens": int(np.load(self.folder / f"{key}.npy", mmap_mode="r").shape[1]),
                    "kind": MODALITY_INFO[key].kind if key in MODALITY_INFO else "grid",
                    "dtype": "int16",
                    "objects_present": int(self.present[key].sum()),
                }
                for key in self.keys
            },
            "issues": len(self.issues),
        }
        (self.folder / "meta.json").write_text(json.dumps(meta, indent=2))
        return meta


def _complete(folder: Path, input_meta: dict[str, Any], job: dict[str, Any]) -> bool:
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return False
    meta = json.loads(meta_path.read_text())
    return (
        meta.get("format") == SHARD_FORMAT
        and meta.get("job") == job
        and all(meta.get("input", {}).get(k) == v for k, v in input_meta.items() if k != "sha256")
    )


def tokenize_files(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    codecs: str | os.PathLike | None = None,
    *,
    modalities: Sequence[str] = DEFAULT_TOKENIZE_GROUPS,
    sources: Mapping[str, str] | Sequence[tuple[str, str]] = (),
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Tokenizes this rank's inputs into one token shard folder each under ``output``.

    Args:
        inputs: MMU ``.hdf5`` files.
        output: output directory (created).
        codecs: checkpoint directory in the hub layout (``codecs/<modality>/``); None = the untrained demo
            checkpoint.
        modalities: groups of :data:`~aion_fast.data.mmu.MODALITY_GROUPS` to tokenize.
        sources: group -> survey whose columns give it, where a cross-matched file has two (``--source``, as
            ``aion-fast encode`` takes it).
        batch_size: objects per codec batch.
        device: where the codecs run.
        progress: print one line per shard to stderr.

    Returns:
        A summary: shards written and skipped, objects, issues, modalities without a codec, wall time.

    Raises:
        ValueError: missing inputs, unknown groups, a codec folder that is not a directory, batch_size < 1.
    """
    from aion_fast.demo import ensure_demo_checkpoint

    unknown = sorted(set(modalities) - set(MODALITY_GROUPS))
    if unknown or not modalities:
        raise ValueError(f"--modalities {list(modalities)}: choose one or more of {list(MODALITY_GROUPS)}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"--batch-size must be an integer >= 1, got {batch_size!r}.")
    missing = [str(p) for p in inputs if not Path(p).is_file()]
    if missing:
        raise ValueError(f"input files {missing[:5]} do not exist; pass MMU .hdf5 files.")
    sources = dict(sources)
    untrained = codecs is None
    checkpoint = Path(ensure_demo_checkpoint() if untrained else codecs)
    if not (checkpoint / "codecs").is_dir():
        raise ValueError(
            f"--codecs {str(checkpoint)!r} has no codecs/ folder; pass a checkpoint directory laid out like "
            f"polymathic-ai/aion-base (codecs/<modality>/config.json + model.safetensors)."
        )
    job = _job(checkpoint, modalities, untrained, sources)
    names = shard_names(inputs)
    rank, world, launcher = distributed_rank()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    tokenizer: _CodecTokenizer | None = None
    written, skipped, objects, issues = [], [], 0, 0
    for index in shards_of_rank(names, rank, world):
        path = Path(inputs[index])
        stat = path.stat()
        input_meta = {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        final = out / names[index]
        if _complete(final, input_meta, job):
            skipped.append(names[index])
            continue
        tokenizer = tokenizer or _CodecTokenizer(checkpoint, device)
        tmp = out / f"{names[index]}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        shard_start = time.perf_counter()
        with open_source(path) as source:
            selection = selection_of(source, modalities, sources=sources)
            builder = _ShardBuilder(tmp, source.num_rows)
            chunk = source.chunk_rows()
            for start, stop in row_ranges(source.num_rows, batch_size, chunk if chunk <= batch_size else 1):
                batch = prepare_rows(source, start, stop, selection)
                tokens, present = tokenizer.tokens(batch)
                builder.add(batch, tokens, present)
        meta = builder.finish(
            {
                "input": {**input_meta, "sha256": file_sha256(path)},
                "job": job,
                "modalities_without_codec": dict(sorted(tokenizer.without_codec.items())),
                "wall_s": round(time.perf_counter() - shard_start, 3),
            }
        )
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        written.append(names[index])
        objects += meta["num_objects"]
        issues += meta["issues"]
        if progress:
            print(f"tokenized {path} -> {final} ({meta['num_objects']} objects, keys {sorted(meta['keys'])}, "
                  f"{meta['issues']} issues)", file=sys.stderr)  # fmt: skip
    wall = time.perf_counter() - started
    return {
        "rank": rank,
        "world_size": world,
        "launcher": launcher,
        "codecs": str(checkpoint),
        "untrained_demo_checkpoint": untrained,
        "shards_written": written,
        "shards_skipped_complete": skipped,
        "objects": objects,
        "issues": issues,
        "modalities_without_codec": dict(sorted(tokenizer.without_codec.items())) if tokenizer else {},
        "wall_s": round(wall, 3),
    }


# ---------------------------------------------------------------------------------------------------------- CLI


def _run_cli(args: argparse.Namespace) -> int:
    try:
        summary = tokenize_files(
            args.inputs,
            args.output,
            args.codecs,
            modalities=tuple(g.strip() for g in args.modalities.split(",") if g.strip()),
            sources=parse_sources(args.source),
            batch_size=args.batch_size,
            device=args.device,
            progress=not args.quiet,
        )
    except ValueError as error:
        print(f"aion-fast tokenize: error: {error}", file=sys.stderr)
        return 2
    if summary["untrained_demo_checkpoint"]:
        print("NOTE: using the codecs of the UNTRAINED demo checkpoint (random weights, seed 0); pass --codecs DIR "
              "for a trained checkpoint's codecs.")  # fmt: skip
    if summary["modalities_without_codec"]:
        print(f"NOTE: not tokenized, no codec in the checkpoint: {summary['modalities_without_codec']}")
    print(json.dumps(summary, indent=2))
    return 0


def register(commands: Subcommands) -> None:
    """Adds ``tokenize``."""
    parser = commands.add_parser(
        "tokenize",
        help="pre-tokenize MMU HDF5 files into token shards for training (resumable, multi-process)",
        description="Tokenize MMU HDF5 files with the codecs of a checkpoint: one memory-mapped token shard folder "
        "per input under --output. Re-running resumes; under torchrun or SLURM each rank takes its own files.",
    )
    parser.add_argument("inputs", nargs="+", help="MMU .hdf5 files")
    parser.add_argument("--codecs", default=None, help="checkpoint directory with codecs/ (default: untrained demo)")
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument(
        "--modalities",
        default=",".join(DEFAULT_TOKENIZE_GROUPS),
        help=f"comma-separated groups from {list(MODALITY_GROUPS)} (default: %(default)s)",
    )
    parser.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="GROUP=SURVEY",
        help="when two surveys of a cross-matched file give one modality, use this survey's (repeatable)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="objects per codec batch (default: 64)")
    parser.add_argument("--device", default="cpu", help="torch device for the codecs (default: cpu)")
    parser.add_argument("--quiet", action="store_true", help="no per-shard lines")
    parser.set_defaults(run=_run_cli)
