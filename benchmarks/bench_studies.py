"""Studies: driver overhead, local parallel speed-up, and results-store reads.

Ratios are measured in one run (medians of repeats where it matters, the variants alternating
so that load drift on a shared machine affects both alike), printed with the targets:

- ``ckalab run`` (local, one worker, in-process) over ``train`` in a plain loop on N tiny runs
  (digits, MLP width 32, 1 epoch, one torch thread): overhead per run, store writes included
  (target <= 25 ms), and ``ckalab run``'s time outside ``train()`` per run.
- ``--workers 2`` against ``--workers 1`` on 40 small runs (digits pair, MLP width 256, 40
  epochs; target >= 1.7x on 2 free cores).
- ``load_results`` on a classic-study-sized synthetic store (135 runs x 513 evaluations x 12
  rows = 831k rows): everything (target <= 1 s) and one run's CKA curve (target <= 50 ms).

Usage: ``python benchmarks/bench_studies.py [--runs 200] [--repeats 3] [--parallel-runs 40]
[--skip-train]``
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

import ckalab.train
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


def _median_line(name: str, values: list[float], unit: str, fmt: str = ".1f") -> str:
    shown = ", ".join(f"{v:{fmt}}" for v in values)
    return f"{name}: median {statistics.median(values):{fmt}} {unit} (repeats: {shown})"


def bench_overhead(tmp: Path, runs: int, repeats: int = 3) -> None:
    """``repeats`` rounds of the plain loop and ``ckalab run`` (a fresh store each), their order
    alternating (ABBA) so that load drift on a shared machine affects both alike."""
    import torch

    # One torch thread for both variants: the runs are tiny (threads only add synchronization),
    # and on a loaded machine two spinning threads made the same run up to 7x slower, which
    # drowned the driver's cost in noise. The overhead is measured, not torch's threading.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _overhead(tmp, runs, repeats)
    finally:
        torch.set_num_threads(threads)


def _overhead(tmp: Path, runs: int, repeats: int) -> None:
    path = _study(tmp, "overhead", n_train=200, width=32, epochs=1, runs=runs)
    study = load_study(path, out=tmp / "overhead-store")
    configs = [r.config for r in study.runs]
    train(configs[0])  # warm-up: data cache, torch kernels

    def plain() -> float:
        t0 = time.perf_counter()
        for c in configs:
            train(parse_run_config(c))
        return time.perf_counter() - t0

    inside = [0.0]

    def timed_train(config, **kw):  # the trainer as the executor calls it, timed
        t = time.perf_counter()
        try:
            return train(config, **kw)
        finally:
            inside[0] += time.perf_counter() - t

    def driven(rep: int) -> float:
        s = dataclasses.replace(study, out=tmp / f"overhead-store-{rep}")
        inside[0] = 0.0
        ckalab.train.train = timed_train
        try:
            t0 = time.perf_counter()
            result = run_study(s, workers=1, progress=Progress())
            elapsed = time.perf_counter() - t0
        finally:
            ckalab.train.train = train
        assert result.done == runs
        return elapsed

    per_run, ratios, outside = [], [], []
    for rep in range(repeats):
        if rep % 2 == 0:
            p, d = plain(), driven(rep)
        else:
            d, p = driven(rep), plain()
        per_run.append((d - p) / runs * 1000)
        ratios.append(d / p)
        outside.append((d - inside[0]) / runs * 1000)
        print(
            f"overhead: round {rep}: {runs} tiny runs: plain train loop {p:.2f} s, ckalab run "
            f"{d:.2f} s -> {per_run[-1]:+.1f} ms per run, ratio {d / p:.3f}x; time outside "
            f"train() in ckalab run {outside[-1]:.1f} ms per run"
        )
    print(
        _median_line("overhead: ckalab run over the plain loop", per_run, "ms per run")
        + (" (target <= 25 ms)")
    )
    print(_median_line("overhead: same-round ratio", ratios, "x", ".3f"))
    print(
        _median_line("overhead: ckalab run's time outside train()", outside, "ms per run")
        + " (the driver's own cost, insensitive to how fast training happened to be)"
    )


def bench_parallel(tmp: Path, runs: int, repeats: int = 2, epochs: int = 40) -> None:
    """``--workers 1`` and ``--workers 2`` alternating (ABBA), a fresh store each time.

    Each worker process pays a fixed start (spawn, import torch, load the data: seconds on a
    small machine), so the runs must be long enough for the speed-up to mean anything:
    ``epochs`` sets their length (40: about half a second each on a free core)."""
    path = _study(tmp, "parallel", n_train=280, width=256, epochs=epochs, runs=runs)
    study = load_study(path, out=tmp / "parallel")

    def timed(workers: int, rep: int) -> float:
        s = dataclasses.replace(study, out=tmp / f"parallel-{workers}-{rep}")
        t0 = time.perf_counter()
        result = run_study(s, workers=workers, progress=Progress())
        elapsed = time.perf_counter() - t0
        assert result.done == runs
        return elapsed

    speedups = []
    for rep in range(repeats):
        order = (1, 2) if rep % 2 == 0 else (2, 1)
        times = {w: timed(w, rep) for w in order}
        speedups.append(times[1] / times[2])
        print(
            f"parallel: round {rep}: {runs} small runs: --workers 1 {times[1]:.1f} s, "
            f"--workers 2 {times[2]:.1f} s -> speed-up {speedups[-1]:.2f}x ({epochs} epochs each)"
        )
    print(
        _median_line("parallel: speed-up of --workers 2", speedups, "x", ".2f")
        + " (target >= 1.7x on 2 free cores; includes spawning workers and importing torch)"
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
    parser.add_argument("--parallel-epochs", type=int, default=40, help="length of those runs")
    parser.add_argument("--skip-train", action="store_true", help="only the store reads")
    parser.add_argument(
        "--cases", nargs="+", default=["store", "overhead", "parallel"], help="which cases to run"
    )
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the overhead case")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if "store" in args.cases:
            bench_store(tmp)
        if not args.skip_train and "overhead" in args.cases:
            bench_overhead(tmp, args.runs, args.repeats)
        if not args.skip_train and "parallel" in args.cases:
            bench_parallel(tmp, args.parallel_runs, epochs=args.parallel_epochs)


if __name__ == "__main__":
    main()
