"""Executors: where a study's runs are trained. One protocol, three engines.

An :class:`Executor` takes :class:`RunTask` s and yields one :class:`RunOutcome` per task as
runs finish (in completion order). Workers never touch the results store: an outcome carries
the run's status, metrics (an Arrow table), final summaries and, when kept, its weights
(safetensors bytes) back to the driver, which commits it (:mod:`ckalab.study.runner`). So no
worker needs write access to the store's filesystem.

- :class:`~ckalab.study.executors.local.LocalExecutor`: ``workers`` spawned processes (or the
  driver's own process for one worker).
- :class:`~ckalab.study.executors.ray.RayExecutor`: Ray tasks on a local or existing cluster.
- :class:`~ckalab.study.executors.slurm.SlurmExecutor`: submitit job arrays on Slurm (or
  submitit's local executor).

A run that raises is a ``failed`` outcome with its traceback (the other runs go on); a run whose
loss or weights become non-finite is ``diverged``, not failed.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import pyarrow as pa

    from ckalab.config import RunConfig

__all__ = [
    "Event",
    "Executor",
    "RunOutcome",
    "RunTask",
    "execute_task",
    "failed_outcome",
    "make_executor",
]


#: Fault injection for tests: a worker about to train the run whose id this environment
#: variable holds kills itself with SIGKILL (a worker "dying" as if out of memory).
CRASH_ENV = "CKALAB_TEST_CRASH_RUN"


@dataclass(frozen=True)
class RunTask:
    """One run to train: its configuration and what to bring back.

    ``keep_weights``: True, False, or ``"auto"`` (when the weights are at most
    ``weights_limit_bytes``). ``threads``: torch threads for the run (None: leave as is).
    ``epochs``: the run's length in epochs, for progress reports.
    """

    run_id: str
    config: RunConfig
    keep_weights: bool | Literal["auto"] = "auto"
    weights_limit_bytes: int = 64 * 2**20
    threads: int | None = None
    epochs: float = math.nan


@dataclass
class RunOutcome:
    """What a worker sends back for one run."""

    run_id: str
    status: Literal["done", "diverged", "failed"]
    wall_time: float
    host: str
    steps: int = 0
    diverged_at: int | None = None
    summaries: dict[str, float] = field(default_factory=dict)
    metrics: pa.Table | None = None
    weights: bytes | None = None
    error: str | None = None
    traceback: str | None = None


@dataclass(frozen=True)
class Event:
    """A progress report: ``kind`` is ``"started"`` or ``"epoch"`` (``epoch`` of ``epochs``
    done) for run ``run_id``."""

    kind: Literal["started", "epoch"]
    run_id: str
    epoch: float = 0.0
    epochs: float = math.nan


Report = Callable[[Event], None]


class Executor(Protocol):
    """Runs tasks somewhere and yields their outcomes as they finish."""

    name: str

    def run(self, tasks: Sequence[RunTask], report: Report) -> Iterator[RunOutcome]:
        """Yield one outcome per task, in completion order; ``report`` receives progress
        events (from the driver's thread only)."""
        ...

    def close(self) -> None:
        """Stop whatever is still running and release the engine's resources."""
        ...


def failed_outcome(
    task: RunTask, error: str, tb: str | None = None, wall_time: float = 0.0
) -> RunOutcome:
    """A ``failed`` outcome for ``task`` (e.g. a worker that died)."""
    return RunOutcome(
        run_id=task.run_id,
        status="failed",
        wall_time=wall_time,
        host=socket.gethostname(),
        error=error,
        traceback=tb,
    )


def _weights_bytes(task: RunTask, state_dict: dict[str, Any]) -> bytes | None:
    if task.keep_weights is False:
        return None
    size = sum(t.numel() * t.element_size() for t in state_dict.values())
    if task.keep_weights == "auto" and size > task.weights_limit_bytes:
        return None
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()})


def execute_task(task: RunTask, report: Report | None = None) -> RunOutcome:
    """Train one run and package its outcome (the body of every worker).

    An exception inside training becomes a ``failed`` outcome with the traceback; a
    ``KeyboardInterrupt`` propagates.
    """
    from ckalab.metrics import rows_to_table
    from ckalab.train import train

    if report is not None:
        report(Event("started", task.run_id, 0.0, task.epochs))
    if os.environ.get(CRASH_ENV) == task.run_id:  # fault injection for the tests
        os.kill(os.getpid(), signal.SIGKILL)
    if task.threads is not None:
        import torch

        torch.set_num_threads(task.threads)
    last = [-1.0]

    def on_metrics(rows: list[Any]) -> None:
        if report is None or not rows:
            return
        epoch = max(r.epoch for r in rows)
        if epoch > last[0]:
            last[0] = epoch
            report(Event("epoch", task.run_id, epoch, task.epochs))

    start = time.perf_counter()
    try:
        result = train(task.config, on_metrics=on_metrics)
    except Exception as exc:
        return failed_outcome(
            task,
            f"{type(exc).__name__}: {exc}",
            traceback.format_exc(),
            time.perf_counter() - start,
        )
    return RunOutcome(
        run_id=task.run_id,
        status=result.status,
        wall_time=result.wall_time,
        host=socket.gethostname(),
        steps=result.steps,
        diverged_at=result.diverged_at,
        summaries=dict(result.summaries),
        metrics=rows_to_table(result.metrics, task.run_id),
        weights=_weights_bytes(task, result.state_dict),
    )


def make_executor(
    name: str,
    *,
    workers: int | None = None,
    settings: Any = None,
    folder: Any = None,
    address: str | None = None,
    cluster: str | None = None,
) -> Executor:
    """The executor called ``name`` (``local``, ``ray``, ``slurm``) configured from the study's
    settings (:class:`~ckalab.study.spec.StudySettings`) and command-line overrides."""
    if name == "local":
        from ckalab.study.executors.local import LocalExecutor

        return LocalExecutor(workers=workers or (settings.workers if settings else None) or 1)
    if name == "ray":
        from ckalab.study.executors.ray import RayExecutor

        return RayExecutor(settings.ray if settings else None, address=address)
    if name == "slurm":
        from ckalab.study.executors.slurm import SlurmExecutor

        return SlurmExecutor(settings.slurm if settings else None, folder=folder, cluster=cluster)
    raise ValueError(f"unknown executor {name!r}; choose local, ray or slurm")
