"""Command lines of the encoding job: ``aion-fast encode`` and ``aion-fast merge-manifest``."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from aion_fast.data.columns import MODALITY_GROUPS, SURVEY_DEFAULT_GROUPS, parse_sources
from aion_fast.precision import PRECISIONS

if TYPE_CHECKING:
    from aion_fast.cli import Subcommands

__all__ = ["register"]

_DEFAULTS_TEXT = ", ".join(f"{survey}={'+'.join(groups)}" for survey, groups in SURVEY_DEFAULT_GROUPS.items())


def _groups(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(g.strip() for g in text.split(",") if g.strip())


def _list_columns(paths: list[str]) -> int:
    """Prints, per input, each column the job reads and the modality it becomes."""
    from aion_fast.data.mmu import selection_of
    from aion_fast.jobs.encode import discover_inputs
    from aion_fast.jobs.loader import open_input

    for path in discover_inputs(paths):
        with open_input(path) as source:
            selection = selection_of(source, tuple(MODALITY_GROUPS))
            default_keys = {(u.kind, u.survey, tuple(u.columns.items())) for u in selection_of(source).uses}
            print(f"{path}  ({getattr(source, 'format', 'mmu-hdf5')}, {source.num_rows} rows)")
            try:
                from aion_fast.data.formats import describe

                for entry in describe(source):
                    print("  " + "  ".join(f"{k}={v}" for k, v in entry.items()))
            except ImportError:
                pass
            print(f"  id: {'/'.join(filter(None, selection.id_column)) if selection.id_column else '<path>:<row>'}")
            for use in selection.uses:
                columns = ", ".join(f"{role}={'/'.join(filter(None, key))}" for role, key in use.columns.items())
                names = "|".join(cls.__name__ for cls in use.modalities)
                used = (use.kind, use.survey, tuple(use.columns.items())) in default_keys
                default = "default" if used else "on request"
                print(f"  {names:<28} group={use.group:<12} {default:<10} {columns}")
    return 0


def _run_encode(args: argparse.Namespace) -> int:
    from aion_fast.jobs.encode import EncodeOptions, run_encode

    if args.list_columns:
        return _list_columns(args.inputs)
    if args.output is None:
        raise ValueError("--output is required: give the directory the embeddings are written to.")
    options = EncodeOptions(
        model=args.model,
        modalities=_groups(args.modalities),
        sources=parse_sources(args.source),
        batch_size=args.batch_size,
        device=args.device,
        loader=args.loader,
        workers=args.workers,
        pooling=args.pooling,
        dtype=args.dtype,
        precision=args.precision,
        progress=not args.quiet,
        row_group_rows=args.row_group_rows,
        verify_inputs=not args.trust_mtime,
    )
    summary = run_encode(args.inputs, args.output, options)
    if summary.get("demo_checkpoint"):
        print(
            "NOTE: using the bundled DEMO model (trained by aion_fast on the 27-object sample): NOT AION-1 science "
            "quality. Pass --model DIR_OR_HUB_ID for a real AION-1 checkpoint."
        )
    for name, reason in sorted(summary["modalities_not_in_model"].items()):
        print(f"NOTE: {name} is in the input but not used: {reason}.")
    print(json.dumps(summary, indent=2))
    print(
        f"rank {summary['rank']}/{summary['world_size']}: encoded {summary['objects_encoded']} objects "
        f"({summary['objects_encoded_with_modalities_skipped']} with a modality skipped), "
        f"failed {summary['objects_failed']}, skipped {summary['objects_skipped_done_before']} done by an earlier run "
        f"({summary['shards_skipped_complete']} complete shards), in {summary['wall_s']} s "
        f"({summary['objects_per_s']} objects/s) -> {args.output}"
    )
    if summary.get("duplicate_object_ids"):
        print(f"NOTE: {summary['duplicate_object_ids']} rows repeat an object_id (see the shard records in "
              f"{args.output}/_parts); `aion-fast search` needs unique ids.")  # fmt: skip
    return 0


def _run_merge(args: argparse.Namespace) -> int:
    from aion_fast.jobs.manifest import merge_manifest

    manifest = merge_manifest(args.output)
    print(f"merged {len(manifest['shards'])} shards, {manifest['rows_written']} rows -> {args.output}/manifest.json")
    return 0


def register(commands: Subcommands) -> None:
    """Adds ``encode`` and ``merge-manifest``."""
    from aion_fast.jobs.encode import ROW_GROUP_ROWS

    encode = commands.add_parser(
        "encode",
        help="encode survey files (MMU HDF5, hub Parquet, cross-matches) into Parquet embeddings (resumable)",
        description="Encode survey files into one Parquet file of embeddings per input. Inputs are files, globs or "
        "directories (their shards are found below them). Re-running the same command resumes; under torchrun or "
        "SLURM each rank takes a disjoint set of files.",
    )
    encode.add_argument("inputs", nargs="+", help="survey files, globs or directories")
    encode.add_argument("--model", default=None, help="checkpoint directory or hub id (default: bundled demo)")
    encode.add_argument("--output", default=None, help="output directory")
    encode.add_argument(
        "--modalities",
        default=None,
        help=f"comma-separated groups from {list(MODALITY_GROUPS)}, taken from every survey of a file (default: "
        f"what each survey measured: {_DEFAULTS_TEXT})",
    )
    encode.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="GROUP=SURVEY",
        help="when two surveys of a cross-matched file give one modality, use this survey's (repeatable)",
    )
    encode.add_argument("--list-columns", action="store_true", help="print how each input's columns are read; exit")
    encode.add_argument("--batch-size", type=int, default=256, help="objects per device batch (default: 256)")
    encode.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    encode.add_argument("--loader", choices=["torch", "dali"], default="torch", help="input pipeline")
    encode.add_argument(
        "--workers",
        type=int,
        default=None,
        help="DataLoader worker processes (default: automatic; 0 for jobs of a few batches, 1 on CPU)",
    )
    encode.add_argument("--pooling", choices=["mean"], default="mean", help="mean over present tokens")
    encode.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="embedding dtype")
    encode.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="fp32 (exact, the default), bf16 (codec networks and transformer under bf16 autocast) or fast (float32, "
        "the codec networks' fast CPU kernels); quantization stays fp32, and a bf16 or fast run reports its token "
        "agreement and embedding cosine with fp32 on its first batch",
    )
    encode.add_argument(
        "--row-group-rows",
        type=int,
        default=ROW_GROUP_ROWS,
        help="rows per Parquet row group, also how often a shard's progress is saved (default: %(default)s)",
    )
    encode.add_argument(
        "--trust-mtime",
        action="store_true",
        help="on a re-run, take a finished shard's input as unchanged when its size and modification time are (by "
        "default its SHA-256 is compared too, reading every finished input again)",
    )
    encode.add_argument("--quiet", action="store_true", help="no progress bar")
    encode.set_defaults(run=_run_encode)
    merge = commands.add_parser("merge-manifest", help="join the shard records of an encode output directory")
    merge.add_argument("output", help="the encode --output directory")
    merge.set_defaults(run=_run_merge)
