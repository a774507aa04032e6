"""The driver behind ``ckalab run``: validate, lock the store, run what is missing, commit.

:func:`run_study` takes a validated :class:`~ckalab.study.spec.Study`, takes the store's lock
(a second driver on the same directory is refused, naming the owner), records the resolved
study file, and hands the runs that are not finished yet (plus the failed ones with
``rerun_failed``) to an executor. Each outcome is committed to the store as it arrives (see
:mod:`ckalab.study.store`; on a background thread, so that writing overlaps training), so a
crash or a SIGKILL loses at most the runs in flight and the few outcomes not yet written, Ctrl-C
only the runs in flight (everything received is written first), and running again picks up
exactly the missing ones. Runs in the store that the study no longer
describes are kept and counted as "not in this study".
"""

from __future__ import annotations

import math
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ckalab.study.executors import Executor, RunOutcome, RunTask, make_executor
from ckalab.study.preflight import check_data_sizes
from ckalab.study.progress import Progress
from ckalab.study.spec import Study, StudyError
from ckalab.study.store import ResultsStore, StoreLock, make_run_row

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "StudyRunResult",
    "run_study",
]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclass
class StudyRunResult:
    """What one ``ckalab run`` did. ``path``: the results store (the report's input)."""

    path: Path
    total: int
    already_finished: int
    ran: int = 0
    done: int = 0
    diverged: int = 0
    failed: int = 0
    stale: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)
    failed_in_store: int = 0

    @property
    def exit_code(self) -> int:
        """0: every run of the study finished (done or diverged); 1: some runs failed;
        130: interrupted."""
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_FAILED if self.failed_in_store else EXIT_OK


def run_study(
    study: Study,
    *,
    executor: str | Executor | None = None,
    workers: int | None = None,
    rerun_failed: bool = False,
    address: str | None = None,
    cluster: str | None = None,
    progress: Progress | None = None,
) -> StudyRunResult:
    """Run the missing runs of ``study`` into its store (``study.out``) and return a summary.

    ``executor``: ``"local"`` (default from the study file), ``"ray"``, ``"slurm"`` or an
    :class:`~ckalab.study.executors.Executor` instance. ``workers``: local processes.
    ``address``: the Ray cluster. ``cluster``: submitit's cluster (``"slurm"``, ``"local"``).
    Datasets whose split sizes validation left unchecked (files not local,
    :attr:`~ckalab.study.spec.Study.unchecked_data`) are loaded and checked first: a problem
    raises :class:`~ckalab.study.spec.StudyError` before anything is created. Raises
    :class:`~ckalab.study.store.StoreLockedError` when another driver holds the store and
    :class:`~ckalab.study.store.StoreError` for a store this version cannot write. A
    ``KeyboardInterrupt`` stops the executor and returns with ``interrupted=True``; every run
    committed before it is kept.
    """
    progress = progress or Progress()
    if study.unchecked_data:  # sizes validation could not check without downloading
        check = check_data_sizes(study.runs, study.base, load=True)
        if check.problems:
            raise StudyError(check.problems, str(study.source or "study"))
    out = study.out
    lock = StoreLock(out)
    lock.acquire()
    ex: Executor | None = None
    store: ResultsStore | None = None
    try:
        store = ResultsStore.open(out)
        store.compact()  # the row files a killed driver left
        result = StudyRunResult(path=out, total=len(study.runs), already_finished=0)
        if (note := lock.describe_takeover()) is not None:
            result.notes.append(note)
        if (n := store.remove_temporary_files()) > 0:
            result.notes.append(f"removed {n} temporary files left by an interrupted run")
        ids = [r.run_id for r in study.runs]
        store.write_study(study.resolved_toml(), name=study.name, run_ids=ids, swept=study.swept)
        wanted = set(ids)
        result.stale = sorted(rid for rid in store.rows if rid not in wanted)
        pending = [
            r
            for r in study.runs
            if store.status(r.run_id) is None
            or (rerun_failed and store.status(r.run_id) == "failed")
        ]
        result.already_finished = len(study.runs) - len(pending)

        settings = study.settings
        name = executor if isinstance(executor, str) else None
        if executor is None or isinstance(executor, str):
            ex = make_executor(
                name or settings.executor,
                workers=workers,
                settings=settings,
                folder=out / ".slurm",
                address=address,
                cluster=cluster,
            )
        else:
            ex = executor
        tasks = [
            RunTask(
                run_id=r.run_id,
                config=r.config,
                keep_weights=settings.keep_weights,
                weights_limit_bytes=int(settings.weights_limit_mb * 2**20),
                epochs=float(r.config.train.epochs) if r.config.train.steps is None else math.nan,
            )
            for r in pending
        ]
        by_id = {r.run_id: r for r in pending}
        progress.start(
            study.name,
            total=len(study.runs),
            finished=result.already_finished,
            pending=len(tasks),
            stale=len(result.stale),
            parallel=getattr(ex, "workers", 1),
        )
        committer = _Committer(store)
        try:
            if tasks:
                for outcome in ex.run(tasks, progress.event):
                    committer.submit(by_id[outcome.run_id].config, outcome)
                    _count(result, outcome)
                    progress.finished(outcome)
        except KeyboardInterrupt:
            result.interrupted = True
        finally:
            try:
                committer.close()  # every outcome received is committed before we return
            finally:
                progress.close(result)
        result.failed_in_store = sum(1 for rid in ids if store.status(rid) == "failed")
        return result
    finally:
        try:
            if ex is not None:
                ex.close()
        finally:
            if store is not None:
                store.compact()
            lock.release()


class _Committer:
    """Commits outcomes on a background thread, in arrival order, so that the store's file
    writes and fsyncs (which release the GIL) overlap the training of the next run instead of
    adding to it. :meth:`close` waits until everything submitted is committed and re-raises the
    first error of a commit (as does the next :meth:`submit`)."""

    def __init__(self, store: ResultsStore, depth: int = 8) -> None:
        self.store = store
        self.queue: queue.Queue[tuple[Any, RunOutcome] | None] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="ckalab-commit", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None:
                try:
                    _commit(self.store, *item)
                except BaseException as exc:  # reported to the driver's thread
                    self.error = exc

    def _raise(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def submit(self, config: Any, outcome: RunOutcome) -> None:
        self._raise()
        self.queue.put((config, outcome))

    def close(self) -> None:
        if self.thread.is_alive():
            self.queue.put(None)
            while self.thread.is_alive():  # a join that Ctrl-C cannot cut short
                try:
                    self.thread.join()
                except KeyboardInterrupt:
                    continue
        self._raise()


def _commit(store: ResultsStore, config: Any, outcome: RunOutcome) -> None:
    row = make_run_row(
        config,
        status=outcome.status,
        wall_time=outcome.wall_time,
        steps=outcome.steps,
        diverged_at=outcome.diverged_at,
        summaries=outcome.summaries if outcome.status != "failed" else None,
        error=outcome.error,
        traceback=outcome.traceback,
        host=outcome.host,
    )
    store.commit(row, outcome.metrics, outcome.weights)


def _count(result: StudyRunResult, outcome: RunOutcome) -> None:
    result.ran += 1
    if outcome.status == "failed":
        result.failed += 1
        result.failures.append((outcome.run_id, outcome.error or "failed"))
    elif outcome.status == "diverged":
        result.diverged += 1
    else:
        result.done += 1
