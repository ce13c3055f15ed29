"""``aion-fast train-codec``: train the image or spectrum codec, or fit the scalar codecs, on MMU files.

    aion-fast train-codec image    --data legacysurvey/*.hdf5 hsc/*.hdf5 --config configs/image-codec.yaml --output DIR
    aion-fast train-codec spectrum --data desi/*.hdf5 sdss/*.hdf5 --config configs/spectrum-codec.yaml --output DIR
    aion-fast train-codec scalar   --data legacysurvey/*.hdf5 gaia/*.hdf5 \
        --config configs/scalar-codecs.yaml --output DIR
    aion-fast train-codec demo     --output DIR     # the tiny demo codecs on the bundled sample (a few CPU minutes)

Codecs are written to ``DIR/codecs/<modality name>/`` (config.json + model.safetensors, the hub layout that
``CodecManager(repo=DIR)`` and AION checkpoints read); the metrics log goes to ``DIR/train-codec-<kind>.jsonl``,
image/spectrum checkpoints to ``DIR/checkpoints/<kind>-codec/`` (a re-run resumes from the newest one).
See :mod:`aion_fast.train.codec_training` for the losses and the optimisation.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aion_fast.cli import Subcommands

__all__ = ["register", "run_train_codec"]

_MODALITY_OF_KIND = {"image": "LegacySurveyImage", "spectrum": "DESISpectrum"}


def run_train_codec(
    kind: str,
    data: list[str] | None,
    config_path: str | None,
    output: str,
    overrides: dict[str, Any] | None = None,
    echo: bool = True,
) -> dict[str, Any]:
    """Runs one ``train-codec`` command; returns its summary (also printed as JSON by the CLI).

    Image and spectrum runs checkpoint into ``output/checkpoints/<kind>-codec/`` (every ``checkpoint.every_steps``,
    on SIGTERM and at the end) and resume from the newest one when ``checkpoint.resume`` is true.

    Args:
        kind: ``image``, ``spectrum``, ``scalar`` or ``demo``.
        data: MMU shards, globs or directories (ignored by ``demo``, which uses the bundled sample).
        config_path: the YAML (not used by ``demo``).
        output: checkpoint directory receiving ``codecs/<modality name>/``.
        overrides: ``{"section.key": value}`` replacing the YAML's (e.g. ``train.max_steps``, ``train.device``,
            ``train.seed``; the scalar fit's ``seed``); ``demo`` reads ``train.max_steps`` and ``train.seed``.
        echo: print progress lines.

    Raises:
        ValueError: bad arguments, config or data (the message names the field and the fix).
    """
    from aion_fast import modalities as m
    from aion_fast.train import codec_training as ct
    from aion_fast.train.distributed import latest_checkpoint
    from aion_fast.train.engine import MetricsLog

    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    output_dir = Path(output)
    output_dir.mkdir(parents=True, exist_ok=True)
    log_path = output_dir / f"train-codec-{kind}.jsonl"
    start = time.perf_counter()

    def echo_record(record: dict[str, Any], prefix: str = kind) -> None:
        if echo:
            shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
            print(f"[{prefix}] {shown}", flush=True)

    if kind == "demo":
        log_path.unlink(missing_ok=True)

        def demo_log(which: str, record: dict[str, Any]) -> None:
            MetricsLog(log_path, tags={"codec": which}).write(record)
            echo_record(record, which)

        summary = ct.train_demo_codecs(
            output_dir,
            image_steps=overrides.get("train.max_steps", 300),
            spectrum_steps=overrides.get("train.max_steps", 300),
            seed=overrides.get("train.seed", 0),
            log=demo_log,
        )
    else:
        if not data:
            raise ValueError(f"train-codec {kind}: pass the MMU files to train on with --data.")
        if config_path is None:
            raise ValueError(f"train-codec {kind}: pass --config (e.g. configs/{kind}-codec*.yaml).")
        config = ct.load_config(config_path, kind, overrides)
        if kind == "scalar":
            fitted = ct.fit_scalar_codecs(
                data, config.codecs, defaults=config.defaults, read_rows=config.read_rows, seed=config.seed
            )
            folders = ct.save_codecs(output_dir, [(codec, modality) for modality, codec in fitted.items()])
            summary = {"codecs": len(fitted)}
        else:
            checkpoints = output_dir / "checkpoints" / f"{kind}-codec"
            if not (config.checkpoint.resume and latest_checkpoint(checkpoints)):
                log_path.unlink(missing_ok=True)  # a fresh run: a fresh log
            trainer = ct.train_image_codec if kind == "image" else ct.train_spectrum_codec
            codec, history = trainer(data, config.codec, config, echo_record, checkpoint_dir=checkpoints,
                                     metrics_path=log_path)  # fmt: skip
            folders = ct.save_codecs(output_dir, [(codec, getattr(m, _MODALITY_OF_KIND[kind]))])
            summary = {
                "steps": config.train.max_steps,
                "steps_run": len(history),
                "first_loss": history[0]["loss"] if history else None,
                "last_loss": history[-1]["loss"] if history else None,
            }
        summary["folders"] = [str(f) for f in folders]
    summary.update({"kind": kind, "output": str(output_dir), "log": str(log_path)})
    summary["wall_s"] = round(time.perf_counter() - start, 2)
    return summary


def _run_cli(args: argparse.Namespace) -> int:
    from aion_fast.train.config import parse_overrides

    try:
        overrides = parse_overrides(args.set or [])
        flags = {"seed": args.seed} if args.kind == "scalar" else {
            "train.max_steps": args.steps, "train.device": args.device, "train.seed": args.seed}  # fmt: skip
        overrides.update({key: value for key, value in flags.items() if value is not None})
        summary = run_train_codec(args.kind, args.data, args.config, args.output, overrides)
    except ValueError as error:
        if getattr(args, "debug", False):
            raise
        print(f"aion-fast train-codec: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


def register(commands: Subcommands) -> None:
    """Adds ``train-codec``."""
    parser = commands.add_parser(
        "train-codec",
        help="train the image/spectrum codec or fit the scalar codecs on MMU files (hub layout output)",
        description="Train a codec (tokenizer) on Multimodal Universe shards (HDF5, Parquet, Arrow, FITS) and write it "
        "to OUTPUT/codecs/<modality>/ (config.json + model.safetensors). Image and spectrum runs checkpoint into "
        "OUTPUT/checkpoints/ and resume. 'demo' trains the tiny demo codecs on the bundled sample.",
    )
    parser.add_argument("kind", choices=["image", "spectrum", "scalar", "demo"], help="which codec(s) to train")
    parser.add_argument("--data", nargs="+", default=None, help="MMU shards, globs or directories (not used by demo)")
    parser.add_argument("--config", default=None, help="YAML: configs/image-codec.yaml, spectrum-codec, scalar-codecs")
    parser.add_argument("--output", required=True, help="checkpoint directory to write codecs/<modality>/ into")
    parser.add_argument("--steps", type=int, default=None, help="override train.max_steps (demo: steps per codec)")
    parser.add_argument("--device", default=None, help="override train.device (auto, cpu or cuda)")
    parser.add_argument("--seed", type=int, default=None, help="override the seed")
    parser.add_argument(
        "--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value (repeatable)"
    )
    parser.set_defaults(run=_run_cli)
