"""``aion-fast export``: a checkpoint -> a self-describing exported directory (ONNX fp32/INT8, or PyTorch INT8/FP8)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aion_fast.cli import Subcommands


def _run(args: argparse.Namespace) -> int:
    from aion_fast.export.api import export

    metadata = export(
        args.model,
        args.output,
        format=args.format,
        precision=args.precision,
        modalities=[m.strip() for m in args.modalities.split(",") if m.strip()],
        calibration=args.calibration,
        holdout=not args.no_holdout,
        weight_type=args.weight_type,
        torch_method=args.torch_method,
        embedding_target=args.embedding_target,
        token_target=args.token_target,
        sensitivity=not args.no_sensitivity,
        overwrite=args.overwrite,
    )
    if args.model is None:
        print("NOTE: exported the bundled DEMO model (trained on the 27-object sample): NOT AION-1 science quality.")
    summary = {key: value for key, value in metadata.items() if key not in ("encoder", "codecs")}
    for part in ("encoder", *(f"codecs.{name}" for name in metadata.get("codecs", {}))):
        section = metadata["encoder"] if part == "encoder" else metadata["codecs"][part.split(".", 1)[1]]
        quant = section.get("quantization", {})
        summary[part] = {
            "precision": section["precision"],
            "kept_fp32": quant.get("kept_fp32"),
            "calibration_score": quant.get("score"),
            "quantized_weight_fraction": quant.get("quantized_weight_fraction"),
        }
    print(json.dumps(summary, indent=2))
    print(f"exported to {args.output} (full report with the per-layer sensitivity in export.json)")
    return 0


def register(commands: Subcommands) -> None:
    """Adds ``export``."""
    parser = commands.add_parser(
        "export",
        help="export a checkpoint for INT8 inference (ONNX Runtime, or PyTorch INT8/FP8 on GPUs)",
        description="Writes a directory that `aion-fast encode --model DIR` loads. ONNX: token embeddings + encoder "
        "+ pooling and the image/spectrum codec networks, INT8 by ONNX Runtime (dynamic for the transformer, static "
        "calibrated on --calibration objects for the codecs; layers that hurt accuracy stay fp32).",
    )
    parser.add_argument("--model", default=None, help="checkpoint directory or hub id (default: bundled demo)")
    parser.add_argument("--output", required=True, help="directory to write, e.g. aion-int8/")
    parser.add_argument("--format", default="onnx", help="onnx (ONNX Runtime) or torch (PyTorch INT8/FP8 for GPUs)")
    parser.add_argument("--precision", default="int8", help="onnx: fp32 or int8; torch: int8 or fp8")
    parser.add_argument(
        "--modalities", default="image,spectrum,photometry", help="comma-separated groups (image,spectrum,...)"
    )
    parser.add_argument("--calibration", nargs="*", default=[], help="MMU .hdf5 files with real objects")
    parser.add_argument("--no-holdout", action="store_true", help="calibrate on every object (no held-out report)")
    parser.add_argument("--weight-type", default=None, help="QUInt8 or QInt8 (default: QUInt8 unless VNNI)")
    parser.add_argument("--torch-method", default=None, help="torch format: torchao-int8-dynamic, torchao-fp8, ...")
    parser.add_argument("--embedding-target", type=float, default=0.995, help="min calibration embedding cosine")
    parser.add_argument("--token-target", type=float, default=0.995, help="calibration token agreement per codec")
    parser.add_argument("--no-sensitivity", action="store_true", help="quantize every layer, no sensitivity search")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export in --output")
    parser.set_defaults(run=_run)
