"""``python -m aion_fast.train --config configs/aion-tiny.yaml`` (also under ``torchrun --nproc_per_node N``)."""

from __future__ import annotations

import argparse
import sys

from aion_fast.train.loop import add_arguments, run_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aion_fast.train", description="Train the AION transformer.")
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
