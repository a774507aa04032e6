"""Progress of a running study: a live display on a terminal (rich), plain log lines otherwise.

The display shows runs done / total, diverged and failed counts, the ETA (from the mean wall
time of the runs finished in this session and the number of parallel workers) and, when the
executor reports it (local executor), the epoch of each running run. At the end: a summary
table.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from typing import IO, Any

from ckalab.study.executors import Event, RunOutcome

__all__ = ["LiveProgress", "PlainProgress", "Progress", "make_progress"]


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _key_metric(summaries: Mapping[str, float]) -> str:
    parts = []
    for key in ("test_acc", "test_cka_last", "test_loss"):
        if key in summaries:
            parts.append(f"{key}={summaries[key]:.4g}")
    return " ".join(parts)


class Progress:
    """Counts and timing shared by both displays (and a silent display on its own)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total = 0
        self.done = self.diverged = self.failed = 0
        self.previously_finished = 0
        self.pending = 0
        self.parallel = 1
        self.running: dict[str, tuple[float, float]] = {}
        self.start_time = time.perf_counter()
        self.durations: list[float] = []
        self.name = ""

    # lifecycle ----------------------------------------------------------------------------
    def start(
        self, name: str, *, total: int, finished: int, pending: int, stale: int, parallel: int
    ) -> None:
        self.name, self.total, self.previously_finished = name, total, finished
        self.pending, self.parallel = pending, max(1, parallel)
        self.start_time = time.perf_counter()

    def event(self, ev: Event) -> None:
        if ev.kind == "started":
            self.running[ev.run_id] = (0.0, ev.epochs)
        elif ev.kind == "epoch":
            self.running[ev.run_id] = (ev.epoch, ev.epochs)

    def finished(self, outcome: RunOutcome) -> None:
        self.running.pop(outcome.run_id, None)
        if outcome.status == "failed":
            self.failed += 1
        elif outcome.status == "diverged":
            self.diverged += 1
        else:
            self.done += 1
        self.durations.append(outcome.wall_time)

    def close(self, summary: Any = None) -> None:
        pass

    # numbers ------------------------------------------------------------------------------
    @property
    def finished_now(self) -> int:
        return self.done + self.diverged + self.failed

    @property
    def finished_total(self) -> int:
        return self.previously_finished + self.finished_now

    def eta(self) -> float:
        left = self.pending - self.finished_now
        if left <= 0:
            return 0.0
        if not self.finished_now:
            return math.inf
        elapsed = time.perf_counter() - self.start_time
        return elapsed / self.finished_now * left

    def counts(self) -> str:
        return (
            f"{self.finished_total}/{self.total} runs finished "
            f"({self.diverged} diverged, {self.failed} failed this session)"
        )


class PlainProgress(Progress):
    """One log line per finished run (for logs and pipes)."""

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def start(self, name: str, **kw: Any) -> None:
        super().start(name, **kw)
        self._print(
            f"study {name}: {kw['total']} runs, {kw['finished']} already finished, "
            f"{kw['pending']} to run"
            + (f", {kw['stale']} in the store but not in this study" if kw["stale"] else "")
        )

    def finished(self, outcome: RunOutcome) -> None:
        super().finished(outcome)
        extra = outcome.error if outcome.status == "failed" else _key_metric(outcome.summaries)
        self._print(
            f"[{self.finished_now}/{self.pending}] {outcome.run_id} {outcome.status} "
            f"{outcome.wall_time:.1f}s {extra} (ETA {_fmt_time(self.eta())})"
        )


class LiveProgress(Progress):
    """A rich live display, redrawn at most 4 times a second, and a summary table at the end."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__(stream)
        from rich.console import Console

        self.console = Console(file=self.stream)
        self.live: Any = None
        self.last: list[RunOutcome] = []

    def _render(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        head = Text(f"{self.name}: {self.counts()}  ETA {_fmt_time(self.eta())}", style="bold")
        table = Table(box=None, show_header=True, header_style="dim")
        table.add_column("run")
        table.add_column("state")
        table.add_column("epoch", justify="right")
        for rid, (epoch, epochs) in list(self.running.items())[:12]:
            total = f"/{epochs:g}" if math.isfinite(epochs) else ""
            table.add_row(rid, "running", f"{epoch:g}{total}")
        for out in self.last[-5:]:
            style = {"failed": "red", "diverged": "yellow"}.get(out.status, "green")
            table.add_row(out.run_id, Text(out.status, style=style), _key_metric(out.summaries))
        return Group(head, table)

    def start(self, name: str, **kw: Any) -> None:
        super().start(name, **kw)
        from rich.live import Live

        self.live = Live(self._render(), console=self.console, refresh_per_second=4)
        self.live.start()

    def event(self, ev: Event) -> None:
        super().event(ev)
        if self.live is not None:
            self.live.update(self._render())

    def finished(self, outcome: RunOutcome) -> None:
        super().finished(outcome)
        self.last.append(outcome)
        if self.live is not None:
            self.live.update(self._render())

    def close(self, summary: Any = None) -> None:
        if self.live is not None:
            self.live.update(self._render())
            self.live.stop()
            self.live = None


def make_progress(stream: IO[str] | None = None, *, live: bool | None = None) -> Progress:
    """A live display when ``stream`` (default stderr) is a terminal, else plain lines."""
    stream = stream if stream is not None else sys.stderr
    if live is None:
        live = bool(getattr(stream, "isatty", lambda: False)())
    return LiveProgress(stream) if live else PlainProgress(stream)
