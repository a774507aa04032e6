"""Command-line interface: ``ckalab <command>``.

Each sub-command is a small function that parses nothing itself: one ``_parser_<name>``
function declares its arguments, one ``_cmd_<name>`` function runs it, ``main`` dispatches.
Heavy modules (torch, data, pyarrow) are imported inside the commands so that ``ckalab --help``
stays instant.

Exit codes: 0 success (every run of a study finished: done or diverged), 1 some runs failed,
2 bad input (an invalid study file, a store that cannot be used, a busy store), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence

from ckalab import __version__


def _cmd_datasets(args: argparse.Namespace) -> int:
    from ckalab.data.listing import print_datasets

    print_datasets(data_dir=args.data_dir)
    return 0


# ----------------------------------------------------------------------------------------------
# ckalab run
# ----------------------------------------------------------------------------------------------

RUN_EPILOG = textwrap.dedent(
    """\
    examples:
      ckalab run examples/slow_features.toml --dry-run     # validate, list the runs, estimate
      ckalab run examples/slow_features.toml --workers 2   # run what is missing, 2 processes
      ckalab run study.toml --executor ray --address auto  # on an existing Ray cluster
      ckalab run study.toml --executor slurm               # submitit job arrays on Slurm
      ckalab run study.toml --rerun-failed                 # also retry the failed runs

    Rerunning runs only what is missing: a finished study does nothing, a new sweep value adds
    only its runs. Runs in the store that the file no longer describes are kept (reported as
    "not in this study"). Interrupted (Ctrl-C, a crash, a kill)? Run the same command again.

    exit codes: 0 every run finished (done or diverged), 1 some runs failed, 2 bad input
    (invalid study file, unusable or busy store), 130 interrupted.
    """
)


def _print_dry_run(study: object) -> None:
    from ckalab.study.spec import Study, estimate_work

    assert isinstance(study, Study)
    swept = study.swept or []
    header = ["#", "run_id", *swept]
    rows = []
    steps = evals = 0
    approx = False
    for r in study.runs:
        vals = [_cell_text(r.swept.get(name, r.config.train.seed)) for name in swept]
        rows.append([str(r.index), r.run_id, *vals])
        est = estimate_work(r.config)
        steps += est.steps
        evals += est.evaluations
        approx = approx or est.approximate
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    n = len(study.runs)
    tilde = "~" if approx else ""
    print(
        f"\nstudy {study.name}: {n} run{'s' if n != 1 else ''}, {tilde}{steps:,} training steps, "
        f"{evals:,} evaluations in total; results would go to {study.out}"
    )


def _cell_text(value: object) -> str:
    import json

    return (
        json.dumps(value, separators=(",", ":")) if isinstance(value, (list, tuple)) else str(value)
    )


def _after_run(result: object, args: argparse.Namespace) -> None:
    """After ``ckalab run``: write the study's report (unless ``--no-report``) and say where the
    results and the report are."""
    path = getattr(result, "path", None)
    print(f"results: {path}", file=sys.stderr)
    if path is None or args.no_report:
        return
    from ckalab.report.html import build_report

    report = build_report(path)
    for name, error in report.failures.items():
        print(f"ckalab: warning: figure {name} could not be drawn: {error}", file=sys.stderr)
    print(f"report: {report.html}")


def _cmd_run(args: argparse.Namespace) -> int:
    from ckalab.study.progress import make_progress
    from ckalab.study.runner import EXIT_BAD_INPUT, run_study
    from ckalab.study.spec import StudyError, load_study
    from ckalab.study.store import StoreError, StoreLockedError

    try:
        study = load_study(args.study, out=args.out)
    except StudyError as exc:
        print(f"ckalab: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.dry_run:
        _print_dry_run(study)
        for name in study.unchecked_data:
            print(
                f"note: the split sizes of dataset {name!r} were not checked: its files are not "
                "downloaded and --dry-run downloads nothing (ckalab run checks them before the "
                "first step)",
                file=sys.stderr,
            )
        return 0
    try:
        result = run_study(
            study,
            executor=args.executor,
            workers=args.workers,
            rerun_failed=args.rerun_failed,
            address=args.address,
            cluster=args.cluster,
            progress=make_progress(sys.stderr),
        )
    except (StoreLockedError, StoreError, StudyError) as exc:
        print(f"ckalab: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    err = sys.stderr
    for note in result.notes:
        print(f"note: {note}", file=err)
    print(
        f"study {study.name}: {result.total} runs; {result.already_finished} already finished, "
        f"{result.ran} ran now ({result.done} done, {result.diverged} diverged, "
        f"{result.failed} failed)",
        file=err,
    )
    if result.stale:
        print(
            f"{len(result.stale)} runs in the store are not in this study (kept; "
            "load_results(..., include_stale=True) returns them)",
            file=err,
        )
    for rid, msg in result.failures:
        print(f"  failed {rid}: {msg}", file=err)
    if result.failed_in_store:
        print(
            f"{result.failed_in_store} runs of this study failed; details: ckalab show "
            f"{study.out} RUN_ID; retry: ckalab run {args.study} --rerun-failed",
            file=err,
        )
    if result.interrupted:
        print(
            f"interrupted: {result.already_finished + result.ran} of {result.total} runs are "
            f"finished and saved; run `ckalab run {args.study}"
            + (f" --out {args.out}" if args.out else "")
            + "` again to resume",
            file=err,
        )
        return result.exit_code
    _after_run(result, args)
    return result.exit_code


def _parser_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a study file: validate, then run only what is missing into its results store",
        description="Run a study: validate every run first, then train the missing ones and "
        "store each as it finishes.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("study", help="the study file (TOML)")
    p.add_argument("--out", default=None, help="results directory (default: [study] out)")
    p.add_argument(
        "--executor",
        choices=["local", "ray", "slurm"],
        default=None,
        help="where runs train (default: [study] executor, else local)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local worker processes (default: [study] workers, else 1 = in this process)",
    )
    p.add_argument("--address", default=None, help="Ray cluster address (ray executor)")
    p.add_argument(
        "--cluster",
        default=None,
        choices=["slurm", "local", "debug"],
        help="submitit cluster for the slurm executor (default: slurm when available)",
    )
    p.add_argument("--dry-run", action="store_true", help="validate and list the runs only")
    p.add_argument("--rerun-failed", action="store_true", help="also retry failed runs")
    p.add_argument(
        "--no-report", action="store_true", help="do not write DIR/report.html at the end"
    )
    p.set_defaults(func=_cmd_run)


# ----------------------------------------------------------------------------------------------
# ckalab ls / show
# ----------------------------------------------------------------------------------------------


def _cmd_ls(args: argparse.Namespace) -> int:
    import pandas as pd

    from ckalab.study.store import load_results, study_run_ids, swept_fields

    runs, _ = load_results(args.dir, metrics=[], include_stale=args.all)
    swept = swept_fields(args.dir)
    current = study_run_ids(args.dir)
    keys = ["final.test_acc", "final.test_cka_last", "final.train_cka_last", "final.test_loss"]
    cols = ["run_id", "status", *swept, *[k for k in keys if k in runs.columns], "wall_time"]
    table = runs[[c for c in cols if c in runs.columns]].copy()
    if args.all and current is not None:
        table.insert(2, "in_study", runs.run_id.isin(current))
    if args.status:
        table = table[table.status.isin(args.status)]
    sort = args.sort or [c for c in swept if c in table.columns] or ["run_id"]
    for s in sort:
        if s not in table.columns:
            print(
                f"ckalab: error: cannot sort by {s!r}; columns: {list(table.columns)}",
                file=sys.stderr,
            )
            return 2
    table = table.sort_values(sort, ascending=not args.descending, kind="stable")
    table.columns = [c.removeprefix("final.") for c in table.columns]
    with pd.option_context("display.max_rows", None, "display.width", 200):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    counts = runs.status.value_counts().to_dict()
    print(
        f"\n{len(runs)} runs: "
        + ", ".join(f"{counts.get(s, 0)} {s}" for s in ("done", "diverged", "failed"))
    )
    return 0


def _parser_ls(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ls",
        help="list the runs of a results store with their status and key metrics",
        epilog="examples:\n  ckalab ls results/slow\n  ckalab ls results/slow --sort "
        "final.test_acc --descending\n  ckalab ls results/slow --status failed --all",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dir", help="the results store (a study's output directory)")
    p.add_argument("--sort", nargs="+", default=None, help="columns to sort by")
    p.add_argument("--descending", action="store_true", help="sort in descending order")
    p.add_argument("--status", nargs="+", choices=["done", "diverged", "failed"], default=None)
    p.add_argument("--all", action="store_true", help="include runs not in the current study")
    p.set_defaults(func=_cmd_ls)


def _cmd_show(args: argparse.Namespace) -> int:
    import json
    import math

    from ckalab.study.store import load_results

    runs, _ = load_results(args.dir, metrics=[], include_stale=True)
    match = runs[runs.run_id.str.startswith(args.run_id)]
    if len(match) != 1:
        what = "no run" if len(match) == 0 else f"{len(match)} runs"
        print(f"ckalab: error: {what} in {args.dir} with id {args.run_id!r}", file=sys.stderr)
        return 2
    row = match.iloc[0]
    _, metrics = load_results(args.dir, run_ids=[row.run_id], include_stale=True)
    print(f"run {row.run_id}: {row.status}")
    for key in ("wall_time", "steps", "diverged_at", "host", "ckalab_version", "finished_at"):
        print(f"  {key}: {row[key]}")
    finals = {k: v for k, v in row.items() if k.startswith("final.")}
    if finals:
        print("final values:")
        for k, v in finals.items():
            if v is not None and not (
                isinstance(v, float) and math.isnan(v) and row.status == "failed"
            ):
                print(f"  {k.removeprefix('final.')}: {v:.6g}")
    print("configuration:")
    print(textwrap.indent(json.dumps(json.loads(row.config), indent=2), "  "))
    if len(metrics):
        names = sorted(set(metrics.metric))
        print(f"metrics: {len(metrics)} rows ({', '.join(names)}), last step {metrics.step.max()}")
    if row.status == "failed":
        print(f"error: {row.error}")
        if isinstance(row.traceback, str):
            print(row.traceback.rstrip())
    return 0


def _parser_show(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "show",
        help="show one run of a results store: status, final values, configuration, traceback",
        epilog="example:\n  ckalab show results/slow 3f2a9c  # a unique prefix of the run id",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dir", help="the results store")
    p.add_argument("run_id", help="the run id (or a unique prefix)")
    p.set_defaults(func=_cmd_show)


def _cmd_report(args: argparse.Namespace) -> int:
    from ckalab.report.html import build_report

    result = build_report(
        args.dir, formats=tuple(args.formats), include_not_learned=args.include_not_learned
    )
    for name, error in result.failures.items():
        print(f"ckalab: warning: figure {name} could not be drawn: {error}", file=sys.stderr)
    print(f"wrote {result.html} ({len(result.figures)} figure files, {len(result.tables)} tables)")
    return 0


def _parser_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write DIR/report.html, DIR/figures/ and DIR/tables/ from a study's results store",
        description=(
            "Draw the study's figures and correlation table from its results store and write "
            "one self-contained page, DIR/report.html (also done at the end of `ckalab run`)."
        ),
        epilog="example:\n  ckalab report examples/results/quickstart",
        formatter_class=argparse.RawDescriptionHelpFormatter,
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


def _parser_datasets(sub: argparse._SubParsersAction) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ckalab",
        description=(
            "ckalab: study feature learning in neural networks through kernel alignment (CKA)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"ckalab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    _parser_datasets(sub)
    _parser_run(sub)
    _parser_ls(sub)
    _parser_show(sub)
    _parser_report(sub)
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
