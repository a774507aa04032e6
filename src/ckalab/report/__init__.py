"""The study report: figures, the correlation table and ``report.html``, from the results store
alone (:mod:`ckalab.report.tables`, :mod:`ckalab.report.figures`, :mod:`ckalab.report.html`)."""

from __future__ import annotations

from typing import Any

__all__ = ["build_report", "write_report"]


def write_report(path: Any, **kwargs: Any) -> Any:
    """Write ``path/report.html`` for the results store at ``path``; see
    :func:`ckalab.report.html.write_report`."""
    from ckalab.report.html import write_report as _write_report

    return _write_report(path, **kwargs)


def build_report(path: Any, **kwargs: Any) -> Any:
    """See :func:`ckalab.report.html.build_report`."""
    from ckalab.report.html import build_report as _build_report

    return _build_report(path, **kwargs)
