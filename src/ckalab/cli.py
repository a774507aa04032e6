"""Command-line interface: ``ckalab <command>``.

Each sub-command is a small function that parses nothing itself: ``build_parser`` declares the
arguments, ``main`` dispatches. Heavy modules (torch, data) are imported inside the commands so
that ``ckalab --help`` stays instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ckalab import __version__


def _cmd_datasets(args: argparse.Namespace) -> int:
    from ckalab.data.listing import print_datasets

    print_datasets(data_dir=args.data_dir)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ckalab",
        description=(
            "ckalab: study feature learning in neural networks through kernel alignment (CKA)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"ckalab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "datasets",
        help="list the datasets, which are available offline, and where the cache is",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="data folder to inspect (default: $CKALAB_DATA or the user cache directory)",
    )
    p.set_defaults(func=_cmd_datasets)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # inside the try: a closed pipe surfaces here, not at exit
        return code
    except BrokenPipeError:
        return _stdout_closed()
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"ckalab: error: {exc}", file=sys.stderr)
        return 2


def _stdout_closed() -> int:
    """The reader of stdout went away (``ckalab datasets | head -3``): stop quietly.

    The Python documentation's recipe (``signal`` module, "Note on SIGPIPE"): point stdout at
    devnull so that the interpreter's final flush does not fail again, and exit with status 1.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor
        pass
    return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
