"""ckalab: a laboratory for studying feature learning through kernel alignment."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "load_results"]


def __getattr__(name: str) -> Any:
    # Lazy: `import ckalab` stays light (no pyarrow/pandas until results are loaded).
    if name == "load_results":
        from ckalab.study.store import load_results

        return load_results
    raise AttributeError(f"module 'ckalab' has no attribute {name!r}")
