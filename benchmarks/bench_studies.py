"""Studies: driver overhead, local parallel speed-up, and results-store reads.

Ratios are measured in one run (medians of repeats where it matters), printed with the
targets:

- ``ckalab run`` (local, one worker, in-process) over ``train`` in a plain loop on N tiny runs
  (digits, MLP width 32, 1 epoch): overhead per run, store writes included (target <= 25 ms).
- ``--workers 2`` against ``--workers 1`` on 40 small runs (target >= 1.7x on 2 free cores).
- ``load_results`` on a classic-study-sized synthetic store (135 runs x 513 evaluations x 12
  rows = 831k rows): everything (target <= 1 s) and one run's CKA curve (target <= 50 ms).

Usage: ``python benchmarks/bench_studies.py [--runs 200] [--parallel-runs 40] [--skip-train]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from ckalab.config import parse_run_config
from ckalab.study.progress import Progress
from ckalab.study.runner import run_study
from ckalab.study.spec import load_study
from ckalab.study.store import load_results
from ckalab.study.synthetic import write_synthetic_store
from ckalab.train import train

TINY = """
[study]
name = "bench"
keep_weights = true
[data]
dataset = "digits"
classes = [0, 1]
n_train = {n_train}
n_test = 40
probe_size = 40
[model]
width = {width}
[train]
epochs = {epochs}
batch_size = 50
[tracking]
schedule = "final"
[sweep]
seeds = {runs}
"""


def _study(tmp: Path, name: str, **kw: int) -> Path:
    path = tmp / f"{name}.toml"
    path.write_text(TINY.format(**kw))
    return path


def bench_overhead(tmp: Path, runs: int) -> None:
    path = _study(tmp, "overhead", n_train=200, width=32, epochs=1, runs=runs)
    study = load_study(path, out=tmp / "overhead-store")
    configs = [r.config for r in study.runs]
    train(configs[0])  # warm-up: data cache, torch kernels
    t0 = time.perf_counter()
    for c in configs:
        train(parse_run_config(c))
    plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = run_study(study, workers=1, progress=Progress())
    driven = time.perf_counter() - t0
    assert result.done == runs
    per_run = (driven - plain) / runs * 1000
    print(
        f"overhead: {runs} tiny runs: plain train loop {plain:.2f} s, ckalab run {driven:.2f} s "
        f"-> {per_run:+.1f} ms per run (target <= 25 ms), ratio {driven / plain:.2f}x"
    )


def bench_parallel(tmp: Path, runs: int) -> None:
    path = _study(tmp, "parallel", n_train=280, width=256, epochs=3, runs=runs)
    times = {}
    for workers in (1, 2):
        study = load_study(path, out=tmp / f"parallel-{workers}")
        t0 = time.perf_counter()
        result = run_study(study, workers=workers, progress=Progress())
        times[workers] = time.perf_counter() - t0
        assert result.done == runs
    print(
        f"parallel: {runs} small runs: --workers 1 {times[1]:.1f} s, --workers 2 {times[2]:.1f} s "
        f"-> speed-up {times[1] / times[2]:.2f}x (target >= 1.7x on 2 free cores; includes "
        "spawning workers and importing torch in them)"
    )


def bench_store(tmp: Path, repeats: int = 7) -> None:
    store = tmp / "classic"
    t0 = time.perf_counter()
    write_synthetic_store(store)
    print(f"store: synthetic classic store written in {time.perf_counter() - t0:.1f} s")
    runs, metrics = load_results(store)
    one = runs.run_id.iloc[len(runs) // 2]

    def median(f) -> float:
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts)

    t_all = median(lambda: load_results(store))
    t_one = median(lambda: load_results(store, run_ids=[one], metrics=["cka"], splits=["test"]))
    t_filter = median(
        lambda: load_results(store, runs={"data.classes": [4, 9], "optim.lr": 0.1}, metrics=["cka"])
    )
    print(
        f"store: load_results of everything ({len(runs)} runs, {len(metrics):,} rows): "
        f"{t_all * 1000:.0f} ms (target <= 1000 ms)"
    )
    print(f"store: one run's test CKA curve by run id: {t_one * 1000:.1f} ms (target <= 50 ms)")
    print(f"store: one run's CKA by config filter: {t_filter * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--parallel-runs", type=int, default=40)
    parser.add_argument("--skip-train", action="store_true", help="only the store reads")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bench_store(tmp)
        if not args.skip_train:
            bench_overhead(tmp, args.runs)
            bench_parallel(tmp, args.parallel_runs)


if __name__ == "__main__":
    main()
