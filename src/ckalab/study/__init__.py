"""Studies: a study file expanded into runs, executed locally, on Ray or on Slurm, and kept in a
results store (a directory of Parquet files readable without ckalab).

- :mod:`ckalab.study.spec`: the study TOML -> validated :class:`~ckalab.config.RunConfig` s.
- :mod:`ckalab.study.store`: the results store (atomic writes, resume, lock, queries).
- :mod:`ckalab.study.executors`: one protocol, three engines (local processes, Ray, Slurm).
- :mod:`ckalab.study.runner`: the driver behind ``ckalab run``.
- :mod:`ckalab.study.synthetic`: a realistic synthetic store for tests and benchmarks.

Submodules are imported on use so that ``import ckalab.study`` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_results", "swept_fields"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from ckalab.study import store

        return getattr(store, name)
    raise AttributeError(f"module 'ckalab.study' has no attribute {name!r}")
