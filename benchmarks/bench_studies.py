"""Studies: driver overhead, local parallel speed-up, and results-store reads.

Ratios are measured in one run (medians of repeats where it matters, the variants alternating
so that load drift on a shared machine affects both alike), printed with the targets:

- ``ckalab run`` (local, one worker, in-process) over ``train`` in a plain loop on N tiny runs
  (digits, MLP width 32, 1 epoch, one torch thread): overhead per run, store writes included
  (target <= 25 ms), and ``ckalab run``'s time outside ``train()`` per run.
- ``ckalab run --workers 2`` against ``--workers 1``, each command timed end to end, on 40
  small runs (digits pair, MLP width 256) of two lengths: 40 epochs (~0.25 s a run) and 320
  epochs (~2 s a run); target >= 1.7x on 2 free cores. Printed with it: the bound that
  start-up puts on the ratio. Any ``ckalab run`` must start a process that imports torch
  (and torch._dynamo, which torch.optim loads on first use) before its first step: ``S``,
  ~7 s here, measured in the same run. One worker then trains the work ``W`` alone, two at
  best halve it, so the speed-up is at most ``(S + W) / (S + W/2)``: 1.44x for 40 runs of
  0.25 s, whatever the executor does.
- ``load_results`` on a classic-study-sized synthetic store (135 runs x 513 evaluations x 12
  rows = 831k rows): everything (target <= 1 s) and one run's CKA curve (target <= 50 ms).

Usage: ``python benchmarks/bench_studies.py [--runs 200] [--repeats 3] [--parallel-runs 40]
[--parallel-epochs 40 320] [--cases store overhead parallel] [--skip-train]``
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
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


_WORKER_START = """
from ckalab.config import parse_run_config
from ckalab.train import train
train(parse_run_config({config!r}))
"""


def _seconds(argv: list[str], env: dict[str, str] | None = None) -> float:
    """Wall time of a fresh process running ``argv`` (its output discarded unless it fails)."""
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return elapsed


def bench_parallel(tmp: Path, runs: int, epochs: int, repeats: int = 2) -> None:
    """``ckalab run STUDY --workers 1`` against ``--workers 2``, each a fresh command timed end
    to end as a user runs it (imports, validation, workers, store, no report), alternating
    (ABBA), a fresh store each time; plus what bounds the ratio at this run length.

    The bound: a run can only start in a process that has imported torch (and torch._dynamo,
    which torch.optim loads on first use) and set up its first run: ``S``, measured here as a
    fresh interpreter doing exactly that (the fastest of three). ``--workers 1`` pays ``S``
    once, then the work ``W`` (the faster of ``--workers 1`` at two threads and
    ``OMP_NUM_THREADS=1``, minus ``S``); two processes pay ``S`` at the same time, then at best
    halve ``W``. So whatever the executor does (spawn, fork, a fork server: some process pays
    ``S`` before the first step), ``--workers 2`` takes at least ``S + W/2`` and the speed-up
    is at most ``t(--workers 1) / (S + W/2)``: a generous bound (no contention between the two
    cores, no driver time). It is computed from noisy timings: quote the medians."""
    path = _study(tmp, f"parallel-{epochs}", n_train=280, width=256, epochs=epochs, runs=runs)
    study = load_study(path, out=tmp / "unused")
    one = study.runs[0].config.model_dump(mode="json", exclude_none=True)
    one["train"]["epochs"] = 1
    start_cmd = [sys.executable, "-c", _WORKER_START.format(config=one)]

    def cli(workers: int, tag: str, threads: int | None = None) -> float:
        env = dict(os.environ)
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)
        out = tmp / f"parallel-{epochs}-{tag}"
        argv = [sys.executable, "-m", "ckalab", "run", str(path), "--out", str(out)]
        seconds = _seconds([*argv, "--workers", str(workers), "--no-report"], env)
        shutil.rmtree(out)
        return seconds

    speedups, bounds, starts = [], [], []
    for rep in range(repeats):
        t: dict[str, float] = {}
        for variant in (
            ("w1", "w2", "w1t1", "start") if rep % 2 == 0 else ("start", "w1t1", "w2", "w1")
        ):
            if variant == "start":  # the fastest of three: the bound is then the larger
                t[variant] = min(_seconds(start_cmd) for _ in range(3))
            elif variant == "w1t1":
                t[variant] = cli(1, f"{rep}-w1t1", threads=1)
            else:
                t[variant] = cli(int(variant[1]), f"{rep}-{variant}")
        start = t["start"]
        best_two = start + (min(t["w1t1"], t["w1"]) - start) / 2
        speedups.append(t["w1"] / t["w2"])
        bounds.append(t["w1"] / best_two)
        starts.append(start)
        print(
            f"parallel ({epochs} epochs): round {rep}: {runs} runs: --workers 1 {t['w1']:.1f} s "
            f"(one thread: {t['w1t1']:.1f} s), --workers 2 {t['w2']:.1f} s -> speed-up "
            f"{speedups[-1]:.2f}x; one worker's start {start:.1f} s -> at most {bounds[-1]:.2f}x"
        )
    print(
        _median_line(f"parallel ({epochs} epochs): speed-up of --workers 2", speedups, "x", ".2f")
        + " (target >= 1.7x; `ckalab run` timed end to end)"
    )
    print(
        _median_line(
            f"parallel ({epochs} epochs): bound from the workers' start", bounds, "x", ".2f"
        )
        + f" (start median {statistics.median(starts):.1f} s)"
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
    parser.add_argument(
        "--parallel-epochs",
        type=int,
        nargs="+",
        default=[40, 320],
        help="lengths of those runs (40: ~0.25 s each, 320: ~2 s each on a free core)",
    )
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
            for epochs in args.parallel_epochs:
                bench_parallel(tmp, args.parallel_runs, epochs)


if __name__ == "__main__":
    main()
