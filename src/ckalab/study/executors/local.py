"""The local executor: ``workers`` spawned processes on this machine, or the driver's own
process for one worker.

Each worker process sets its torch threads so that ``workers x threads <= cores``. A worker
that dies (killed, out of memory) breaks the pool: the pool is rebuilt and the runs that were
in flight are tried once more; a run whose worker dies twice is recorded as ``failed``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from typing import Any

from ckalab.study.executors import (
    Event,
    Report,
    RunOutcome,
    RunTask,
    execute_task,
    failed_outcome,
)

__all__ = ["LocalExecutor", "available_cores"]

_EVENTS: Any = None  # the worker's event queue (set by the pool initializer)


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _init_worker(events: Any, threads: int) -> None:
    global _EVENTS
    # The driver handles Ctrl-C and stops the workers; they must not die half-way on their own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _EVENTS = events
    import torch

    torch.set_num_threads(threads)


def _post(event: Event) -> None:
    if _EVENTS is not None:
        # A SimpleQueue writes synchronously: a "started" event is in the pipe before the run
        # begins, so the driver knows which run a worker held even if it dies right after.
        _EVENTS.put((event, os.getpid()))


def _work(task: RunTask) -> RunOutcome:
    return execute_task(task, _post)


def _died_on_its_own(proc: Any) -> bool:
    """Whether a worker process ended by itself (killed, crashed) rather than being terminated
    by the pool after another worker died (SIGTERM); unknown: True."""
    if proc is None:
        return True
    proc.join(timeout=5)
    return proc.exitcode != -signal.SIGTERM


class LocalExecutor:
    """``workers`` processes (``multiprocessing`` spawn); ``workers=1`` trains in-process."""

    name = "local"

    def __init__(self, workers: int = 1, threads: int | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.threads = threads or max(1, available_cores() // workers)
        self._pool: ProcessPoolExecutor | None = None

    # in-process ---------------------------------------------------------------------------
    def _run_inline(self, tasks: Sequence[RunTask], report: Report) -> Iterator[RunOutcome]:
        for task in tasks:
            yield execute_task(task, report)

    # processes ----------------------------------------------------------------------------
    def _new_pool(self, events: Any, n: int) -> ProcessPoolExecutor:
        self._pool = ProcessPoolExecutor(
            max_workers=n,
            mp_context=mp.get_context("spawn"),
            initializer=_init_worker,
            initargs=(events, self.threads),
        )
        return self._pool

    def run(self, tasks: Sequence[RunTask], report: Report) -> Iterator[RunOutcome]:
        if self.workers == 1 or len(tasks) <= 1:
            yield from self._run_inline(tasks, report)
            return
        ctx = mp.get_context("spawn")
        events = ctx.SimpleQueue()
        n = min(self.workers, len(tasks))
        todo = list(tasks)
        deaths: dict[str, int] = {}
        started: dict[str, int] = {}  # run id -> pid of the worker training it

        def drain() -> None:
            while not events.empty():
                ev, pid = events.get()
                if ev.kind == "started":
                    started[ev.run_id] = pid
                report(ev)

        try:
            while todo:
                pool = self._new_pool(events, n)
                futures: dict[Future[RunOutcome], RunTask] = {
                    pool.submit(_work, t): t for t in todo
                }
                todo = []
                broken = False
                procs: dict[int, Any] = {}
                while futures:
                    procs.update(getattr(pool, "_processes", None) or {})
                    done, _ = wait(list(futures), timeout=0.2, return_when=FIRST_COMPLETED)
                    drain()
                    for fut in done:
                        task = futures.pop(fut)
                        try:
                            outcome = fut.result()
                        except BrokenProcessPool:
                            broken = True
                            todo.append(task)
                            continue
                        started.pop(task.run_id, None)
                        yield outcome
                    if broken:
                        todo.extend(futures.values())
                        futures.clear()
                drain()
                self._shutdown()  # every future is settled: the workers are idle or dead
                retry = []
                for task in todo:
                    pid = started.pop(task.run_id, None)
                    if pid is not None and _died_on_its_own(procs.get(pid)):
                        deaths[task.run_id] = deaths.get(task.run_id, 0) + 1
                    if deaths.get(task.run_id, 0) >= 2:
                        yield failed_outcome(
                            task,
                            "the worker process died twice while training this run "
                            "(killed by a signal or out of memory?)",
                        )
                    else:
                        retry.append(replace(task))
                todo = retry
        finally:
            self._shutdown()
            events.close()

    def _shutdown(self) -> None:
        """Stop the pool's workers with SIGTERM and reap them.

        Called when the pool's futures are settled (its workers idle or dead) or on the way
        out (Ctrl-C, an error). Terminating rather than asking idle workers to exit spares the
        interpreter teardown of a process that has imported torch (measured: 1.7-2.0 s per
        pool on the 2-core machine); nothing is lost, since a worker holds no state the driver
        has not received."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        procs = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=5)

    def close(self) -> None:
        self._shutdown()
