"""Time `ckalab report` on a synthetic store the size of the classic study.

135 runs (45 digit pairs x 3 hidden learning rates) with 513 evaluations each, written through
the real store writer (:func:`ckalab.study.synthetic.write_synthetic_store`); the report (load,
correlation table, every figure as PNG + PDF, the page) must take at most 30 s on 2 cores.
Prints the seconds per step of the median repeat, the wall time of each repeat (a new process:
imports included) and its CPU time (user + sys): on a machine shared with other jobs the wall
time measures the contention, the CPU time what the report costs.

    python benchmarks/bench_report.py [--runs 135] [--evaluations 513] [--repeats 3] [--workers N]

The figures are drawn in ``--workers`` forked processes (default: the report's default, 1: in
the report's process; CPU time includes the workers'). The per-figure
seconds are each figure's own wall time inside its worker.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_S = 30.0

#: One report in a child process; prints its timings as JSON.
CHILD = """
import json, sys, time
t = time.perf_counter()
from ckalab.report.html import build_report
imports = time.perf_counter() - t
r = build_report(sys.argv[1])
print(json.dumps({"imports": imports, "timings": r.timings, "failures": r.failures,
                  "page_mb": r.html.stat().st_size / 1e6}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=135)
    parser.add_argument("--evaluations", type=int, default=513)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None, help="reuse or keep the store here")
    parser.add_argument("--workers", type=int, default=None, help="figure processes")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.workers is not None:
        env["CKALAB_REPORT_WORKERS"] = str(args.workers)

    from ckalab.study.synthetic import write_synthetic_store

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.dir or tmp) / "classic"
        if not (path / "runs.parquet").is_file():
            t = time.perf_counter()
            write_synthetic_store(path, runs=args.runs, evaluations=args.evaluations)
            print(
                f"synthetic store: {args.runs} runs x {args.evaluations} evaluations "
                f"written in {time.perf_counter() - t:.1f} s"
            )
        load_before = os.getloadavg()[0]
        totals, cpus, runs = [], [], []
        for _ in range(args.repeats):  # a fresh process each time: imports are counted too
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(path)],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            )
            totals.append(time.perf_counter() - t)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        median = statistics.median(totals)
        result = runs[totals.index(sorted(totals)[len(totals) // 2])]
        print(
            f"cpus: {os.cpu_count()}, load average (1 min) before: {load_before:.1f}, "
            f"after: {os.getloadavg()[0]:.1f}; figure workers: "
            f"{env.get('CKALAB_REPORT_WORKERS', 'default (1)')}"
        )
        print(f"{'step':<20} {'seconds':>8}")
        print(f"{'imports':<20} {result['imports']:8.2f}")
        for name, secs in result["timings"].items():
            print(f"{name:<20} {secs:8.2f}")
        print(
            f"{'total (median)':<20} {median:8.2f}   wall time of each repeat (new process): "
            + ", ".join(f"{t:.1f}" for t in totals)
        )
        print(
            f"{'cpu time (median)':<20} {statistics.median(cpus):8.2f}   user+sys of each repeat "
            "(what the wall time is on an idle machine): " + ", ".join(f"{c:.1f}" for c in cpus)
        )
        if result["failures"]:
            print("FAILED figures:", result["failures"])
        verdict = "within" if median <= BUDGET_S else "OVER"
        print(f"{verdict} the {BUDGET_S:.0f} s budget; page: {result['page_mb']:.1f} MB")
        return 0 if median <= BUDGET_S and not result["failures"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
