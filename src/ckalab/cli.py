"""Command-line interface: ``ckalab <command>``.

Each sub-command is a small function that parses nothing itself: ``build_parser`` declares the
arguments, ``main`` dispatches. Heavy modules (torch, data) are imported inside the commands so
that ``ckalab --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ckalab import __version__


def _cmd_datasets(args: argparse.Namespace) -> int:
    from ckalab.data.cli import print_datasets

    print_datasets(data_dir=args.data_dir)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ckalab.report.html import build_report

    result = build_report(
        args.dir, formats=tuple(args.formats), include_not_learned=args.include_not_learned
    )
    for name, error in result.failures.items():
        print(f"ckalab: warning: figure {name} could not be drawn: {error}", file=sys.stderr)
    print(f"wrote {result.html} ({len(result.figures)} figure files, {len(result.tables)} tables)")
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

    p = sub.add_parser(
        "report",
        help="write DIR/report.html, DIR/figures/ and DIR/tables/ from a study's results store",
    )
    p.add_argument("dir", help="the results directory of the study")
    p.add_argument(
        "--formats",
        nargs="+",
        default=["png", "pdf"],
        choices=["png", "pdf", "svg"],
        help="figure file formats (default: png pdf; the page always embeds PNG)",
    )
    p.add_argument(
        "--include-not-learned",
        action="store_true",
        help="keep runs that did not learn (final train accuracy at chance) in the correlations",
    )
    p.set_defaults(func=_cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"ckalab: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
