"""The Ray executor: one Ray task per run (``pip install "ckalab[ray]"``).

Joins the cluster at ``address`` (``[study.ray] address`` or ``--address``; ``"auto"`` for the
one this machine belongs to) or, without one, uses the Ray instance already initialized in this
process or starts a local one. Each run asks for ``num_cpus`` CPUs and ``num_gpus`` (possibly
fractional) GPUs. A task whose worker dies is retried ``max_retries`` times (default once), then
recorded as ``failed``; an exception inside training is a ``failed`` outcome at once (not
retried: it would fail again).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from ckalab.study.executors import Report, RunOutcome, RunTask, execute_task, failed_outcome

__all__ = ["RayExecutor"]


def _ray_run(task: RunTask) -> RunOutcome:
    return execute_task(task)


class RayExecutor:
    name = "ray"

    def __init__(self, settings: Any = None, *, address: str | None = None) -> None:
        try:
            import ray  # noqa: F401
        except ImportError as exc:
            raise RuntimeError('the ray executor needs Ray: pip install "ckalab[ray]"') from exc
        from ckalab.study.spec import RaySettings

        self.settings = settings or RaySettings()
        self.address = address or self.settings.address
        self.workers = 1
        self._started = False
        self._refs: list[Any] = []

    def _init(self) -> None:
        import ray

        if ray.is_initialized():
            return
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if self.address:
            kwargs["address"] = self.address
        ray.init(**kwargs)
        self._started = True

    def run(self, tasks: Sequence[RunTask], report: Report) -> Iterator[RunOutcome]:
        import ray
        from ray.exceptions import RayError

        self._init()
        s = self.settings
        cpus = ray.cluster_resources().get("CPU", 1)
        self.workers = max(1, int(cpus // s.num_cpus))
        remote = ray.remote(_ray_run).options(
            num_cpus=s.num_cpus,
            num_gpus=s.num_gpus,
            max_retries=s.max_retries,
            retry_exceptions=False,
        )
        threads = max(1, int(s.num_cpus))
        pending = {}
        for task in tasks:
            t = task if task.threads is not None else _with_threads(task, threads)
            pending[remote.remote(t)] = task
        self._refs = list(pending)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in done:
                task = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except RayError as exc:
                    outcome = failed_outcome(
                        task,
                        f"the Ray task failed after {s.max_retries} retries: "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                        str(exc),
                    )
                yield outcome
        self._refs = []

    def close(self) -> None:
        import ray

        for ref in self._refs:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # pragma: no cover - best effort
                pass
        self._refs = []
        if self._started and ray.is_initialized():
            ray.shutdown()
        self._started = False


def _with_threads(task: RunTask, threads: int) -> RunTask:
    from dataclasses import replace

    return replace(task, threads=threads)
