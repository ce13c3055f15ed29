"""``python -m aion_fast.data.formats FILE...``: prints the column mapping of each shard (:func:`describe_text`)."""

from __future__ import annotations

import sys

from aion_fast.data.formats import describe_text, discover, open_source


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m aion_fast.data.formats FILE_OR_DIR...", file=sys.stderr)
        return 2
    try:
        for path in discover(args):
            with open_source(path) as source:
                print(describe_text(source))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
