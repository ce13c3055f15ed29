"""Command line entry point: ``aion-fast <command>``.

Each command lives beside the code it drives, in a module exposing ``register(subparsers)`` that adds its
sub-parser and sets ``run`` (a function of the parsed arguments returning an exit code). Modules are imported
only when the parser is built, so ``import aion_fast`` stays light.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

#: Modules that register a sub-command, in the order ``aion-fast --help`` lists them.
COMMAND_MODULES: list[str] = [
    "aion_fast.cli",
    "aion_fast.jobs.encode",
    "aion_fast.downstream.cli",
    "aion_fast.export.cli",
    "aion_fast.train.tokenize",
    "aion_fast.train.loop",
    "aion_fast.train.train_codec",
]


def _demo(args: argparse.Namespace) -> int:
    from aion_fast.demo import run_demo

    summary = run_demo(args.output, model_dir=args.model)
    if summary["untrained_demo_checkpoint"]:
        print(
            "NOTE: using the UNTRAINED demo checkpoint (random weights, seed 0): the pipeline runs end to end, "
            "but these embeddings carry no science. Pass --model DIR for a trained AION-1 checkpoint."
        )
    print(json.dumps(summary, indent=2))
    print(
        f"encoded {summary['objects_encoded']} objects in {summary['wall_s']} s "
        f"({summary['objects_per_s']} objects/s) -> {summary['output']}"
    )
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Adds ``demo``: encode the bundled DESI sample end to end and print a summary."""
    demo = commands.add_parser("demo", help="encode the bundled DESI sample end to end and print a summary")
    demo.add_argument("--output", default="aion-fast-demo", help="output directory (default: ./aion-fast-demo)")
    demo.add_argument("--model", default=None, help="checkpoint directory or hub id (default: untrained demo)")
    demo.set_defaults(run=_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aion-fast", description="Fast AION-1 inference, training and export.")
    commands = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
