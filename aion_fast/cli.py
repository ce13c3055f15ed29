"""Command line entry point: ``aion-fast <command>``.

Each command lives beside the code it drives, in a module exposing ``register(subparsers)`` that adds its
sub-parser and sets ``run`` (a function of the parsed arguments returning an exit code). Modules are imported
only when the parser is built, so ``import aion_fast`` stays light.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
from typing import Any, Protocol

#: Modules that register a sub-command, in the order ``aion-fast --help`` lists them.
COMMAND_MODULES: list[str] = [
    "aion_fast.jobs.cli",
    "aion_fast.jobs.predict_cli",
    "aion_fast.downstream.cli",
    "aion_fast.export.cli",
    "aion_fast.train.tokenize",
    "aion_fast.train.loop",
    "aion_fast.train.train_codec",
]


#: Optional packages -> the extra that installs them.
_EXTRAS = {"onnx": "export", "onnxruntime": "export", "onnxscript": "export", "torchao": "export",
           "faiss": "downstream", "matplotlib": "downstream", "yaml": "train", "tensorboard": "train",
           "nvidia": "gpu", "flash_attn": "gpu"}  # fmt: skip


class Subcommands(Protocol):
    """What a command module's ``register`` receives: the result of ``parser.add_subparsers()``."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="aion-fast", description="Fast AION-1 inference, training and export.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (anywhere on the line)")
    commands = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(commands)
    return parser


def error_line(error: BaseException) -> tuple[str, int]:
    """One line saying what went wrong and what to do, and the exit status: 2 for a user error (bad input, option,
    file, checkpoint, missing extra), 1 for anything else (a defect: rerun with --debug and report it)."""
    if isinstance(error, ImportError) and error.name:
        top = error.name.split(".")[0]
        extra = _EXTRAS.get(top)
        if extra is not None:
            return f"this needs the optional package {error.name!r}: pip install 'aion-fast[{extra}]'", 2
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{text}; free some space (or give another --output) and rerun: finished work is kept", 2
    if isinstance(error, (ValueError, OSError, ImportError)):
        return text, 2
    return f"internal error ({type(error).__name__}: {text}); rerun with --debug for the traceback and report it", 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f"aion-fast {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - every failure ends as one line unless --debug
        if debug:
            raise
        line, status = error_line(error)
        print(f"aion-fast {args.command}: error: {line}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
