"""The Slurm executor: submitit job arrays (``pip install "ckalab[slurm]"``).

Runs are grouped ``runs_per_task`` to an array task (thousands of tiny runs do not become
thousands of jobs) and submitted as one job array with at most ``array_parallelism`` tasks at
once, on ``partition``, with ``time_min`` minutes, ``cpus_per_task`` CPUs and ``gpus_per_task``
GPUs per task. submitit keeps its files (job scripts, logs, pickled results) in the study's
``.slurm/`` folder; the driver collects each array task's outcomes and commits them, so the
workers never write to the store. The workers must be able to import ckalab (an installed or
editable package, or ``PYTHONPATH``, which Slurm passes on).

``cluster="local"`` runs the same arrays through submitit's local executor (processes on this
machine), ``"debug"`` in this process; the default is ``"slurm"`` where ``sbatch`` exists.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ckalab.study.executors import Report, RunOutcome, RunTask, execute_task, failed_outcome

__all__ = ["SlurmExecutor", "run_chunk"]


def run_chunk(tasks: Sequence[RunTask]) -> list[RunOutcome]:
    """The body of one array task: its runs, one after the other."""
    return [execute_task(t) for t in tasks]


class SlurmExecutor:
    name = "slurm"

    def __init__(
        self, settings: Any = None, *, folder: str | Path | None = None, cluster: str | None = None
    ) -> None:
        try:
            import submitit  # noqa: F401
        except ImportError as exc:
            raise RuntimeError(
                'the slurm executor needs submitit: pip install "ckalab[slurm]"'
            ) from exc
        from ckalab.study.spec import SlurmSettings

        self.settings = settings or SlurmSettings()
        if cluster is None:
            if shutil.which("sbatch") is None:
                raise RuntimeError(
                    "the slurm executor found no sbatch on this machine; run the driver on a "
                    "Slurm login node, or use --cluster local to try it with local processes"
                )
            cluster = "slurm"
        self.cluster = cluster
        self.folder = Path(folder) if folder is not None else Path(".slurm")
        self.workers = self.settings.array_parallelism
        self._jobs: list[Any] = []
        self.poll_interval = 0.5

    def _executor(self) -> Any:
        import submitit

        s = self.settings
        ex = submitit.AutoExecutor(folder=self.folder / "%j", cluster=self.cluster)
        params: dict[str, Any] = {
            "timeout_min": s.time_min,
            "cpus_per_task": s.cpus_per_task,
            "name": "ckalab",
        }
        if s.gpus_per_task:
            params["gpus_per_node"] = s.gpus_per_task
        if s.mem_gb is not None:
            params["mem_gb"] = s.mem_gb
        if self.cluster == "slurm":
            params["slurm_array_parallelism"] = s.array_parallelism
            if s.partition:
                params["slurm_partition"] = s.partition
        ex.update_parameters(**params)
        return ex

    def run(self, tasks: Sequence[RunTask], report: Report) -> Iterator[RunOutcome]:
        k = self.settings.runs_per_task
        threads = self.settings.cpus_per_task
        tasks = [t if t.threads is not None else _with_threads(t, threads) for t in tasks]
        chunks = [list(tasks[i : i + k]) for i in range(0, len(tasks), k)]
        if not chunks:
            return
        ex = self._executor()
        jobs = ex.map_array(run_chunk, chunks)
        self._jobs = list(jobs)
        pending = dict(zip(jobs, chunks, strict=True))
        while pending:
            finished = [j for j in pending if j.done()]
            for job in finished:
                chunk = pending.pop(job)
                try:
                    outcomes = job.result()
                except Exception as exc:
                    msg = str(exc).strip().splitlines()
                    outcomes = [
                        failed_outcome(
                            t,
                            f"Slurm job {job.job_id} failed: {type(exc).__name__}: "
                            f"{msg[0] if msg else ''}",
                            str(exc),
                        )
                        for t in chunk
                    ]
                yield from outcomes
            if pending and not finished:
                time.sleep(self.poll_interval)
        self._jobs = []

    def close(self) -> None:
        for job in self._jobs:
            try:
                if not job.done():
                    job.cancel(check=False)
            except Exception:  # pragma: no cover - best effort
                pass
        self._jobs = []


def _with_threads(task: RunTask, threads: int) -> RunTask:
    from dataclasses import replace

    return replace(task, threads=threads)
