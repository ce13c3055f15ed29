"""Command lines of the prediction job: ``aion-fast predict`` and ``aion-fast predict-check``."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from aion_fast.data.columns import MODALITY_GROUPS, parse_sources
from aion_fast.jobs.cli import _groups

if TYPE_CHECKING:
    from aion_fast.cli import Subcommands

__all__ = ["register"]


def _wavelength(text: str | None) -> tuple[float, float, float] | None:
    if text is None:
        return None
    try:
        start, stop, step = (float(v) for v in text.split(":"))
    except ValueError:
        raise ValueError(f"--wavelength {text!r}: give START:STOP:STEP in Angstrom, e.g. 3600:9824:0.8.") from None
    return start, stop, step


def _run_predict(args: argparse.Namespace) -> int:
    from aion_fast.jobs.predict import PredictOptions, run_predict

    options = PredictOptions(
        target=args.target,
        model=args.model,
        inputs=_groups(args.inputs),
        sources=parse_sources(args.source),
        num_samples=args.num_samples,
        pdf=args.pdf,
        decay=args.decay,
        temperature=args.temperature,
        max_steps=args.max_steps,
        seed=args.seed,
        wavelength=_wavelength(args.wavelength),
        batch_size=args.batch_size,
        device=args.device,
        loader=args.loader,
        workers=args.workers,
        progress=not args.quiet,
        row_group_rows=args.row_group_rows,
    )
    summary = run_predict(args.inputs_paths, args.output, options)
    if summary.get("demo_checkpoint"):
        print(
            "NOTE: using the bundled DEMO model (trained by aion_fast on the 27-object sample): NOT AION-1 science "
            "quality. Pass --model DIR_OR_HUB_ID for a real AION-1 checkpoint."
        )
    for name, reason in sorted(summary["modalities_not_in_model"].items()):
        print(f"NOTE: {name} is in the input but not used: {reason}.")
    print(json.dumps(summary, indent=2))
    print(
        f"rank {summary['rank']}/{summary['world_size']}: predicted {summary['target']} for "
        f"{summary['objects_predicted']} objects, failed {summary['objects_failed']}, skipped "
        f"{summary['objects_skipped_done_before']} done by an earlier run ({summary['shards_skipped_complete']} "
        f"complete shards), in {summary['wall_s']} s ({summary['objects_per_s']} objects/s) -> {args.output}"
    )
    return 0


def _run_check(args: argparse.Namespace) -> int:
    from aion_fast.jobs.predict_check import run_check

    metrics = run_check(args.predictions, args.truth, target=args.target, point=args.point, output=args.output,
                        plots=not args.no_plots)  # fmt: skip
    print(json.dumps(metrics, indent=2))
    coverage = f"coverage 68% {metrics['coverage_68']:.3f}, 95% {metrics['coverage_95']:.3f}"
    pit = f", PIT KS {metrics['pit_ks']:.4f}" if "pit_ks" in metrics else ""
    print(
        f"{metrics['objects']} objects: bias {metrics['bias']:.5f}, NMAD {metrics['nmad']:.5f}, outliers "
        f"{metrics['outlier_fraction']:.4f}, {coverage}{pit} -> {metrics['output']}"
    )
    return 0


def register(commands: Subcommands) -> None:
    """Adds ``predict`` and ``predict-check``."""
    from aion_fast.jobs.predict import ROW_GROUP_ROWS, TARGET_ALIASES

    predict = commands.add_parser(
        "predict",
        help="posteriors of a target modality (redshift, spectrum, ...) for every object of survey files (resumable)",
        description="Predict a target modality for every object of survey files: the exact posterior over the "
        "codec's bins for one-token targets (redshift and other scalars), ROAR draws for multi-token targets "
        "(spectra, images). One Parquet file per input; resumable; under torchrun or SLURM each rank takes a "
        "disjoint set of files, as aion-fast encode.",
    )
    predict.add_argument("inputs_paths", nargs="+", metavar="inputs", help="survey files, globs or directories")
    predict.add_argument("--target", required=True,
                         help=f"what to predict: {sorted(TARGET_ALIASES)}, a modality class name (Z, GaiaXpBp, ...) "
                         f"or a token key")  # fmt: skip
    predict.add_argument("--model", default=None, help="checkpoint directory or hub id (default: bundled demo)")
    predict.add_argument("--output", required=True, help="output directory")
    predict.add_argument("--inputs", default=None,
                         help=f"comma-separated groups to condition on, from {list(MODALITY_GROUPS)} (default: what "
                         f"each survey measured); the target's own columns are never used")  # fmt: skip
    predict.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="GROUP=SURVEY",
        help="when two surveys of a cross-matched file give one modality, use this survey's",
    )
    predict.add_argument(
        "--num-samples",
        type=int,
        default=0,
        help="draws per object (one-token targets: default 0; multi-token targets: required)",
    )
    predict.add_argument(
        "--pdf",
        nargs="?",
        const="float32",
        default=None,
        choices=["float16", "float32"],
        help="write the binned posterior of a one-token target (default dtype float32)",
    )
    predict.add_argument("--decay", type=float, default=0.9, help="ROAR decay in [0, 1) (default: 0.9)")
    predict.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: 1)")
    predict.add_argument("--max-steps", type=int, default=None, help="cap on ROAR steps (the last reveals the rest)")
    predict.add_argument("--seed", type=int, default=0, help="seed of the draws (keyed to object ids; default: 0)")
    predict.add_argument(
        "--wavelength",
        default=None,
        metavar="START:STOP:STEP",
        help="spectrum targets: decode onto this grid in Angstrom (default: the codec's grid)",
    )
    predict.add_argument("--batch-size", type=int, default=256, help="objects per device batch (default: 256)")
    predict.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    predict.add_argument("--loader", choices=["torch", "dali"], default="torch", help="input pipeline")
    predict.add_argument("--workers", type=int, default=None, help="DataLoader worker processes (default: automatic)")
    predict.add_argument(
        "--row-group-rows",
        type=int,
        default=ROW_GROUP_ROWS,
        help="rows per Parquet row group and progress save (default: %(default)s)",
    )
    predict.add_argument("--quiet", action="store_true", help="no progress bar")
    predict.set_defaults(run=_run_predict)

    check = commands.add_parser(
        "predict-check",
        help="calibration of predicted posteriors against true values (PIT, coverage, bias, NMAD, outliers)",
        description="Join aion-fast predict output with true values from survey files by object id and report the "
        "PIT histogram and its KS distance from uniform, 68%%/95%% coverage, bias, NMAD and outlier fraction of "
        "(predicted - true)/(1 + true), as metrics.json and PNG plots (matplotlib: the 'downstream' extra).",
    )
    check.add_argument("predictions", help="the --output folder of aion-fast predict")
    check.add_argument("--truth", nargs="+", required=True, help="survey files, globs or directories with true values")
    check.add_argument("--target", default="redshift", help="the predicted target (default: redshift)")
    check.add_argument("--point", choices=["median", "mean", "mode"], default="median", help="point estimate")
    check.add_argument(
        "--output", default=None, help="folder for metrics.json and the plots (default: PREDICTIONS/check)"
    )
    check.add_argument("--no-plots", action="store_true", help="numbers only (no matplotlib needed)")
    check.set_defaults(run=_run_check)
