"""Pre-flight: a study's runs checked against their data before anything is created or trained.

The run configuration's validators know the datasets' class lists but not how many examples a
class subset has; the trainer finds out when it loads the data. So a study asking for
``data.n_test = 100`` of a digit pair (which has 71 test examples), or ``train.batch_size``
larger than its training split, would only fail once its turn comes, after other runs trained.
:func:`check_data_sizes` finds these problems for every run at once, from the per-class counts
the dataset registry knows (:attr:`~ckalab.data.registry.DatasetInfo.train_counts`), so nothing
is loaded. For a dataset without registered counts the labels are loaded once per distinct
``(dataset, data_dir, split)``; with ``load=False`` only when that needs no download (the
dataset is then reported in :attr:`DataCheck.unchecked`: ``--dry-run`` never downloads, and
:func:`~ckalab.study.runner.run_study` checks it before the first step).

Problems are one line each and name the TOML path of the offending value, as the rest of the
study validation does::

    sweep."train.batch_size"[1] = 4096: larger than the training split (1,438 examples) in run #1
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ckalab.study.spec import RunSpec

__all__ = ["DataCheck", "check_data_sizes"]

_MAX_PROBLEMS = 20
_MAX_RUNS_NAMED = 5


@dataclass(frozen=True)
class DataCheck:
    """The outcome of :func:`check_data_sizes`: ``problems`` (one line each) and the datasets
    that could not be checked without downloading them (``unchecked``)."""

    problems: list[str] = field(default_factory=list)
    unchecked: tuple[str, ...] = ()


class _Counts:
    """Per-class example counts of dataset splits: from the registry, else from the labels."""

    def __init__(self, load: bool) -> None:
        self.load = load
        self.cache: dict[tuple[str, str | None, str], tuple[int, ...] | None] = {}
        self.unchecked: dict[str, None] = {}

    def get(self, dataset: str, data_dir: str | None, split: str) -> tuple[int, ...] | None:
        from ckalab.data.registry import get_info

        info = get_info(dataset)
        known = info.class_counts(split)
        if known is not None:
            return known
        key = (dataset, data_dir, split)
        if key not in self.cache:
            self.cache[key] = self._from_labels(dataset, data_dir, split, info.num_classes)
        if self.cache[key] is None:
            self.unchecked[dataset] = None
        return self.cache[key]

    def _from_labels(
        self, dataset: str, data_dir: str | None, split: str, num_classes: int
    ) -> tuple[int, ...] | None:
        import numpy as np

        from ckalab.data.sources import is_available, load_split

        if not self.load and not is_available(dataset, data_dir=data_dir):
            return None
        _, labels = load_split(dataset, split, data_dir=data_dir)
        return tuple(int(c) for c in np.bincount(labels, minlength=num_classes))


def _value_text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, tuple, str, bool)) else repr(value)


def _path(run: RunSpec, dotted: str, base: Mapping[str, Any]) -> str:
    """Where ``dotted``'s value of ``run`` is written: its sweep path, the base section, or
    nowhere (the default)."""
    if dotted in run.paths:
        return run.paths[dotted]
    section, name = dotted.split(".", 1)
    return dotted if name in base.get(section, {}) else f"{dotted} (default)"


def check_data_sizes(
    runs: Sequence[RunSpec], base: Mapping[str, Any] | None = None, *, load: bool = False
) -> DataCheck:
    """Check each run's ``data.n_train``, ``data.n_test`` and ``train.batch_size`` against the
    examples its class subset has in each split.

    ``base``: the study's base run sections (to tell a value written there from a default).
    ``load``: load (and if need be download) the labels of datasets whose class counts the
    registry does not know; with False such datasets are skipped when not available locally and
    listed in :attr:`DataCheck.unchecked`. Problems shared by several runs are reported once,
    naming the runs (``#index`` as in ``ckalab run --dry-run``).
    """
    base = base or {}
    counts = _Counts(load)
    found: dict[str, list[int]] = {}  # problem line (without the runs) -> run indices

    def problem(run: RunSpec, dotted: str, value: Any, reason: str) -> None:
        line = f"{_path(run, dotted, base)} = {_value_text(value)}: {reason}"
        found.setdefault(line, []).append(run.index)

    for run in runs:
        d, t = run.config.data, run.config.train
        sizes: dict[str, int | None] = {}
        for split, wanted in (("train", d.n_train), ("test", d.n_test)):
            per_class = counts.get(d.dataset, d.data_dir, split)
            if per_class is None:
                sizes[split] = None
                continue
            classes = d.classes if d.classes is not None else range(len(per_class))
            have = sum(per_class[c] for c in classes)
            which = f"of {d.dataset!r}" + (
                "" if d.classes is None else f" classes {list(d.classes)}"
            )
            if wanted is not None and wanted > have:
                problem(
                    run,
                    f"data.n_{split}",
                    wanted,
                    f"more than the {have:,} {split} examples {which}",
                )
                sizes[split] = None
            else:
                sizes[split] = wanted if wanted is not None else have
        n_train = sizes["train"]
        if n_train is not None and t.batch_size > n_train:
            problem(
                run,
                "train.batch_size",
                t.batch_size,
                f"larger than the training split ({n_train:,} examples)",
            )

    problems = []
    for line, indices in found.items():
        named = ", ".join(f"#{i}" for i in indices[:_MAX_RUNS_NAMED])
        more = len(indices) - _MAX_RUNS_NAMED
        which = f"run {named}" if len(indices) == 1 else f"runs {named}"
        problems.append(f"{line} in {which}" + (f" and {more} more" if more > 0 else ""))
    if len(problems) > _MAX_PROBLEMS:
        extra = len(problems) - _MAX_PROBLEMS
        problems = [*problems[:_MAX_PROBLEMS], f"... and {extra} more data problems"]
    return DataCheck(problems=problems, unchecked=tuple(counts.unchecked))
