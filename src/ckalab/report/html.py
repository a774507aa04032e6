r"""The study report: ``DIR/report.html`` plus ``DIR/figures/`` and ``DIR/tables/``.

:func:`write_report` reads the results store at ``DIR`` (only the store: runs table, metric
rows, study file, header) and writes

- ``report.html``: one self-contained page (figures embedded as base64 PNG, no external
  resource) opening with the study's configuration, the run summary (done / did not learn /
  diverged / failed, wall time) and the main findings in plain numbers, then every figure with
  its caption and the correlation table;
- ``figures/<name>.png`` and ``.pdf`` (print) for each figure;
- ``tables/correlations.csv`` (every statistic, one line per cell), ``tables/correlations.md``
  and ``tables/runs.csv`` (each run's state, task and final values).

A partial or empty store gives a report of what exists and says what is missing; a figure that
cannot be drawn is replaced by a note (the error is shown on the page, never raised).

The figures: training curves (per facet), NTK alignment and kernel movement beside CKA (when the
store has NTK rows), the task map (class pairs), layer-wise CKA at the end and over time (two or
more probe layers), final CKA against accuracy, the correlation heatmap, and the layer x layer
CKA matrices of the best- and worst-aligned runs (:mod:`ckalab.report.layer_matrix`, when
weights were kept and the dataset is here). They are independent: ``workers=2`` (or
``CKALAB_REPORT_WORKERS=2``) draws them in 2 forked processes (:func:`default_workers`).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ckalab.report.chance import LEARNING_ALPHA, LEARNING_MARGIN
from ckalab.report.results import (
    FACET,
    N_TRAIN,
    SEED_FIELD,
    STATE,
    STATES,
    TASK,
    K,
    Study,
    format_value,
    prepare,
)
from ckalab.report.tables import OUTCOMES, CorrelationTable, correlation_table, label

__all__ = [
    "REPORT_FILE",
    "ReportResult",
    "build_report",
    "load_study",
    "render_report",
    "write_report",
]

REPORT_FILE = "report.html"
FIGURES_DIR = "figures"
TABLES_DIR = "tables"
#: Metric rows the report reads (the rest of the store is not loaded).
REPORT_METRICS = ("loss", "acc", "cka", "ntk_alignment", "ntk_distance_init")
#: At most this many facets get their own training-curve figure and task map.
MAX_FACETS = 4


@dataclass
class ReportResult:
    """What :func:`build_report` wrote: the page, the figure and table files, the seconds spent
    per figure (``timings``, with ``load`` and ``html``) and the figures that failed."""

    html: Path
    figures: list[Path] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


def load_study(path: str | Path) -> Study:
    """Read a results store into a prepared :class:`~ckalab.report.results.Study`; whatever is
    missing (no store, no runs, metrics files, unfinished runs) is listed in ``Study.missing``."""
    from ckalab.study.store import (
        METRICS_DIR,
        STUDY_FILE,
        StoreError,
        load_results,
        read_header,
        study_run_ids,
        swept_fields,
    )

    path = Path(path)
    missing: list[str] = []
    header: dict[str, Any] = {}
    runs = pd.DataFrame(columns=["run_id", "status"])
    metrics = None
    swept: list[str] | None = None
    planned: list[str] | None = None
    try:
        header = read_header(path)
        runs, metrics = load_results(path, metrics=list(REPORT_METRICS))
        swept = swept_fields(path) or None
        planned = study_run_ids(path)
    except StoreError as exc:
        missing.append(str(exc))
    study_file = path / STUDY_FILE
    study_text = study_file.read_text() if study_file.is_file() else ""
    if not study_text and header:
        missing.append(f"no {STUDY_FILE} in the store (the study file was not recorded)")
    if header and runs.empty:
        missing.append("no finished runs yet: the runs table is empty or absent")
    if planned is not None and len(runs):
        todo = [r for r in planned if r not in set(runs["run_id"])]
        if todo:
            missing.append(
                f"{len(todo)} of the study's {len(planned)} runs have not finished yet "
                "(not in the runs table)"
            )
    if len(runs):
        no_metrics = [
            r
            for r, st in zip(runs["run_id"], runs["status"], strict=True)
            if st != "failed" and not (path / METRICS_DIR / f"{r}.parquet").is_file()
        ]
        if no_metrics:
            missing.append(
                f"{len(no_metrics)} finished runs have no metrics file (curves not drawn): "
                + ", ".join(no_metrics[:10])
                + (" ..." if len(no_metrics) > 10 else "")
            )
    return prepare(
        runs,
        metrics,
        swept,
        path=path,
        study_text=study_text,
        store_info=header,
        missing=missing,
    )


def _hyperparameters(study: Study) -> tuple[list[str], list[str]]:
    """The fields of the correlation table, and notes on the swept fields left out."""
    fields, notes = [], []
    for f in study.swept:
        if f == SEED_FIELD:
            notes.append(f"{f}: the seed, not a hyperparameter, omitted.")
        elif f in study.task_fields:
            notes.append(f"{f}: the task (categorical), omitted; see the task map.")
        else:
            fields.append(f)
    return fields, notes


def _save(drawn: Any, directory: Path, stem: str, formats: Sequence[str]) -> tuple[bytes, list]:
    import matplotlib

    from ckalab.report.figures import STYLE

    paths = []
    png = b""
    with matplotlib.rc_context(STYLE):
        for i, fmt in enumerate(formats):
            if i == 1:  # the layout is solved by the first save; later formats reuse it
                drawn.fig.set_layout_engine("none")
            buf = io.BytesIO()
            drawn.fig.savefig(buf, format=fmt)
            data = buf.getvalue()
            p = directory / f"{stem}.{fmt}"
            p.write_bytes(data)
            paths.append(p)
            if fmt == "png":
                png = data
        if not png:
            buf = io.BytesIO()
            drawn.fig.savefig(buf, format="png")
            png = buf.getvalue()
    return png, paths


def build_report(
    path: str | Path,
    *,
    formats: Sequence[str] = ("png", "pdf"),
    include_not_learned: bool = False,
    n_boot: int | None = None,
    workers: int | None = None,
    layer_matrix_runs: Sequence[str] | None = None,
) -> ReportResult:
    """Write the report of the store at ``path`` (see the module docstring); a path that does
    not exist raises ``FileNotFoundError``, a directory that is not a store gets a report that
    says so.

    ``workers``: processes drawing the figures (default :func:`default_workers`; 1: in this
    process). ``layer_matrix_runs``: the runs whose layer x layer CKA matrix is drawn (default:
    the best- and the worst-aligned finished run with kept weights,
    :func:`ckalab.report.layer_matrix.choose_runs`)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no results directory at {path}")
    t0 = time.perf_counter()
    study = load_study(path)
    load_time = time.perf_counter() - t0
    result = render_report(
        study,
        path,
        formats=formats,
        include_not_learned=include_not_learned,
        n_boot=n_boot,
        workers=workers,
        layer_matrix_runs=layer_matrix_runs,
    )
    result.timings = {"load": load_time, **result.timings}
    return result


def render_report(
    study: Study,
    path: str | Path,
    *,
    formats: Sequence[str] = ("png", "pdf"),
    include_not_learned: bool = False,
    n_boot: int | None = None,
    workers: int | None = None,
    layer_matrix_runs: Sequence[str] | None = None,
) -> ReportResult:
    """Write the report of a prepared study into the directory ``path`` (options: see
    :func:`build_report`)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from ckalab.report import figures as F

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    out = ReportResult(html=path / REPORT_FILE, timings=timings)
    fig_dir, tab_dir = path / FIGURES_DIR, path / TABLES_DIR
    fig_dir.mkdir(exist_ok=True)
    tab_dir.mkdir(exist_ok=True)

    t = time.perf_counter()
    fields, field_notes = _hyperparameters(study)
    kwargs = {} if n_boot is None else {"n_boot": n_boot}
    table = correlation_table(
        study.runs,
        fields,
        not_learned=study.ids("did not learn"),
        include_not_learned=include_not_learned,
        **kwargs,
    )
    table.notes[:0] = field_notes
    out.tables += [
        table.to_csv(tab_dir / "correlations.csv"),
        _write(tab_dir / "correlations.md", table.to_markdown()),
        _runs_csv(study, tab_dir / "runs.csv"),
    ]
    timings["correlation table"] = time.perf_counter() - t

    facets = study.facets[:MAX_FACETS]
    jobs: list[tuple[str, Callable[[], Any]]] = []
    t = time.perf_counter()
    rows = F.curve_rows(study) if facets else None
    timings["curve rows"] = time.perf_counter() - t
    for i, facet in enumerate(facets):
        suffix = f"_{i + 1}" if len(facets) > 1 else ""
        jobs.append((f"curves{suffix}", lambda f=facet: F.training_curves(study, f, rows)))
    jobs.append(("ntk", lambda: F.ntk_curves(study)))
    for i, facet in enumerate(facets):
        suffix = f"_{i + 1}" if len(facets) > 1 else ""
        jobs.append((f"task_map{suffix}", lambda f=facet: F.task_map(study, f)))
    if len(study.layers) == 1:
        note = (
            "Layer-wise figures (final CKA per layer, CKA per layer over time) are not drawn: "
            f"the study tracks one probe layer (<code>{html.escape(study.layers[0])}</code>), "
            "whose CKA is in the training curves."
        )
        jobs.append(("layerwise", lambda: note))
    else:
        jobs += [
            ("layerwise", lambda: F.layerwise(study)),
            ("layer_time", lambda: F.layer_time(study)),
        ]
    jobs += [
        ("cka_vs_accuracy", lambda: F.cka_vs_accuracy(study)),
        ("correlations", lambda: F.correlation_heatmap(table)),
        ("layer_matrix", lambda: _layer_matrix(study, layer_matrix_runs)),
    ]
    sections: list[str] = []
    for stem, r in zip(
        [stem for stem, _ in jobs], _render_all(jobs, fig_dir, formats, workers), strict=True
    ):
        timings[stem] = r["seconds"]
        if r["failure"] is not None:
            out.failures[stem] = r["failure"]
            sections.append(
                f'<div class="warn">Figure <b>{stem}</b> could not be drawn: '
                f"<code>{html.escape(r['failure'])}</code></div>"
            )
        elif r["note"] is not None:
            sections.append(f'<p class="note">{r["note"]}</p>')
        elif r["png"] is not None:
            out.figures += r["paths"]
            sections.append(_figure_html(r, stem, r["png"]))
    if len(study.facets) > len(facets):
        sections.append(
            f'<p class="note">Training curves and task maps are drawn for the first {len(facets)} '
            f"of {len(study.facets)} combinations of "
            f"{', '.join(label(f) for f in study.facet_fields)}.</p>"
        )

    t = time.perf_counter()
    page = _page(study, table, sections, out)
    out.html.write_text(page, encoding="utf-8")
    timings["html"] = time.perf_counter() - t
    return out


def _layer_matrix(study: Study, run_ids: Sequence[str] | None) -> Any:
    from ckalab.report.layer_matrix import layer_matrix_figure

    return layer_matrix_figure(study, run_ids)


def _render_one(stem: str, job: Callable[[], Any], fig_dir: Path, formats: Sequence[str]) -> dict:
    """Draw and save one figure; never raises (a failure is returned as text). A job returns a
    :class:`~ckalab.report.figures.Drawn`, ``None`` (nothing to show) or a note (``str``, HTML)
    saying why the figure is not drawn."""
    t = time.perf_counter()
    r: dict[str, Any] = {"png": None, "paths": [], "note": None, "failure": None}
    try:
        drawn = job()
        if isinstance(drawn, str):
            r["note"] = drawn
        elif drawn is not None:
            r["png"], r["paths"] = _save(drawn, fig_dir, stem, formats)
            r["title"], r["caption"] = drawn.title, drawn.caption
            drawn.fig.clear()
    except Exception as exc:  # a figure never takes the report down with it
        r["failure"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    r["seconds"] = time.perf_counter() - t
    return r


#: The jobs of the running :func:`_render_all`, read by its forked workers (fork copies them:
#: nothing is pickled on the way in, only the PNG bytes and captions come back).
_FORK_JOBS: list[tuple[str, Callable[[], Any], Path, Sequence[str]]] = []


def _fork_worker(i: int) -> dict:
    stem, job, fig_dir, formats = _FORK_JOBS[i]
    return _render_one(stem, job, fig_dir, formats)


def default_workers() -> int:
    """Processes that draw the figures: ``CKALAB_REPORT_WORKERS`` if set, else 1.

    Not more by default: on the 2-core machine the budget is set for, shared with other jobs
    (load 5-6), 2 forked workers took as long as 1 (20.4 s against 18.5 s for the benchmark
    store) for ~1 s more CPU; on an idle multi-core machine ``workers=2`` draws the figures
    in about half the time. Processes are forked (Linux); elsewhere it stays 1."""
    env = os.environ.get("CKALAB_REPORT_WORKERS")
    if not env:
        return 1
    if "fork" not in multiprocessing.get_all_start_methods() or sys.platform == "darwin":
        return 1
    return max(1, int(env))


def _render_all(
    jobs: Sequence[tuple[str, Callable[[], Any]]],
    fig_dir: Path,
    formats: Sequence[str],
    workers: int | None,
) -> list[dict]:
    """Every figure job, in order; with ``workers > 1`` in that many forked processes (the
    figures are independent: on 2 cores this halves the wall time of the figures)."""
    workers = default_workers() if workers is None else workers
    if workers <= 1 or len(jobs) < 2:
        return [_render_one(stem, job, fig_dir, formats) for stem, job in jobs]
    _FORK_JOBS[:] = [(stem, job, fig_dir, formats) for stem, job in jobs]
    try:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(min(workers, len(jobs))) as pool:
            return pool.map(_fork_worker, range(len(jobs)), chunksize=1)
    finally:
        _FORK_JOBS.clear()


def write_report(path: str | Path, **kwargs: Any) -> Path:
    """Write ``path/report.html`` (and ``figures/``, ``tables/``) for the results store at
    ``path``; returns the path of the page. Options: see :func:`build_report`."""
    return build_report(path, **kwargs).html


# ----------------------------------------------------------------------------------------------
# Tables and page
# ----------------------------------------------------------------------------------------------


def _write(p: Path, text: str) -> Path:
    p.write_text(text, encoding="utf-8")
    return p


def _runs_csv(study: Study, p: Path) -> Path:
    runs = study.runs
    cols = ["run_id", "status", STATE, TASK, *study.swept]
    cols += [c for c in OUTCOMES if c in runs]
    cols += [c for c in ("wall_time", "steps", "diverged_at", "error") if c in runs]
    df = runs[list(dict.fromkeys(c for c in cols if c in runs))].rename(
        columns={STATE: "state", TASK: "task"}
    )
    df.to_csv(p, index=False, float_format="%.6g")
    return p


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1180px;
margin:1.5em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;
margin-top:1.6em}h3{font-size:1.05em}
table{border-collapse:collapse;font-size:.88em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:.25em .55em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0 2em}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#444;max-width:950px}
.warn{background:#fff4d6;border:1px solid #e8c35a;padding:.5em .8em;margin:.6em 0}
.note{color:#555;font-size:.9em}pre{background:#f7f7f7;padding:.7em;overflow:auto;
font-size:.85em}code{font-size:.9em}.small{font-size:.85em;color:#555}
"""


def _esc(v: Any) -> str:
    return html.escape(str(v))


def _fmt(v: Any, digits: int = 3) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return _esc(v)
    if not math.isfinite(f):
        return "–"
    return f"{f:.{digits}g}" if abs(f) < 1e4 else f"{f:,.0f}"


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "–"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _figure_html(drawn: dict, stem: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure id="fig-{_esc(stem)}"><h3>{_esc(drawn["title"])}</h3>'
        f'<img alt="{_esc(drawn["title"])}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_esc(drawn['caption'])} "
        f'<span class="small">Files: {FIGURES_DIR}/{_esc(stem)}.png, .pdf</span>'
        "</figcaption></figure>"
    )


def _configuration(study: Study) -> str:
    parts = ["<h2>Study configuration</h2>"]
    name = (study.store_info.get("study") or {}).get("name") if study.store_info else None
    info = []
    if name:
        info.append(f"study <b>{_esc(name)}</b>")
    if study.store_info.get("ckalab"):
        info.append(f"store written by ckalab {_esc(study.store_info['ckalab'])}")
    if info:
        parts.append("<p>" + "; ".join(info) + ".</p>")
    if study.swept:
        rows = []
        for f in study.swept:
            vals = study.runs[f].dropna().unique().tolist() if f in study.runs else []
            try:
                vals = sorted(vals)
            except TypeError:
                pass
            shown = ", ".join(format_value(v) for v in vals[:12]) + (" …" if len(vals) > 12 else "")
            role = (
                "task (panel rows)"
                if f in study.task_fields
                else "colors (one curve per value)"
                if f == study.hue_field
                else "averaged (band)"
                if f == SEED_FIELD
                else "one figure per value"
            )
            rows.append(
                f"<tr><td>{_esc(label(f))} <code>{_esc(f)}</code></td><td>{len(vals)}</td>"
                f"<td>{_esc(shown)}</td><td>{role}</td></tr>"
            )
        parts.append(
            "<table><tr><th>swept field</th><th>values</th><th></th><th>in the figures</th></tr>"
            + "".join(rows)
            + "</table>"
        )
    else:
        parts.append("<p>The study varies no field (or records none).</p>")
    if study.study_text:
        parts.append(
            "<details><summary>Study file (study.toml)</summary><pre>"
            + _esc(study.study_text)
            + "</pre></details>"
        )
    return "\n".join(parts)


def _run_summary(study: Study) -> str:
    runs = study.runs
    parts = ["<h2>Runs</h2>"]
    if runs.empty:
        parts.append("<p>No finished runs.</p>")
        return "\n".join(parts)
    wall = pd.to_numeric(runs.get("wall_time", pd.Series(dtype=float)), errors="coerce")
    cells = []
    for st in STATES:
        sel = runs[STATE] == st
        w = wall[sel]
        cells.append(
            f"<tr><td>{st}</td><td>{int(sel.sum())}</td><td>{_duration(float(w.sum()))}</td>"
            f"<td>{_duration(float(w.median())) if len(w.dropna()) else '–'}</td></tr>"
        )
    parts.append(
        "<table><tr><th>state</th><th>runs</th><th>wall time</th><th>median per run</th></tr>"
        + "".join(cells)
        + f"<tr><th>total</th><th>{len(runs)}</th><th>{_duration(float(wall.sum()))}</th>"
        f"<th>{_duration(float(wall.median())) if wall.notna().any() else '–'}</th></tr></table>"
    )
    hosts = sorted(set(runs["host"].dropna().astype(str))) if "host" in runs else []
    if hosts:
        parts.append(f'<p class="small">Hosts: {_esc(", ".join(hosts[:8]))}.</p>')
    parts.append(
        '<p class="small"><b>Did not learn</b>: a run that finished but whose final train '
        f"accuracy is not significantly above 1/k + {LEARNING_MARGIN} (k classes; one-sided "
        f"binomial test at level {LEARNING_ALPHA} over the training examples). Such runs are "
        "marked in every figure (hollow circle) and left out of the means and of the "
        "correlation table: a failed training is not low alignment.</p>"
    )
    for st, what in (
        ("diverged", "diverged_at"),
        ("failed", "error"),
        ("did not learn", "final.train_acc"),
    ):
        sel = runs[runs[STATE] == st]
        if sel.empty:
            continue
        head = {
            "diverged_at": "diverged at step",
            "error": "error",
            "final.train_acc": "final train accuracy (threshold)",
        }[what]
        rows = []
        for _, r in sel.head(50).iterrows():
            v = r.get(what)
            if what == "error":
                v = str(v).strip().splitlines()[-1] if isinstance(v, str) and v.strip() else "–"
                cell = f"<code>{_esc(v[:160])}</code>"
            elif what == "final.train_acc":
                thr = 1.0 / float(r[K]) + LEARNING_MARGIN if np.isfinite(r[K]) else math.nan
                cell = f"{_fmt(v)} (≤ ~{_fmt(thr)}, n ≈ {_fmt(r[N_TRAIN], 5)})"
            else:
                cell = _fmt(v, 8)
            hue = format_value(r[study.hue_field]) if study.hue_field in r else ""
            rows.append(
                f"<tr><td><code>{_esc(r['run_id'])}</code></td><td>{_esc(r[TASK])}</td>"
                f"<td>{_esc(hue)}</td><td>{_esc(r[FACET]) if study.facet_fields else ''}</td>"
                f"<td>{cell}</td></tr>"
            )
        more = f"<p class='small'>… and {len(sel) - 50} more.</p>" if len(sel) > 50 else ""
        parts.append(
            f"<h3>{st.capitalize()} ({len(sel)})</h3><table><tr><th>run</th><th>task</th>"
            f"<th>{_esc(study.colors.title)}</th>"
            f"<th>{'facet' if study.facet_fields else ''}</th><th>{head}</th></tr>"
            + "".join(rows)
            + "</table>"
            + more
        )
    return "\n".join(parts)


def _findings(study: Study, table: CorrelationTable) -> str:
    runs = study.runs
    items: list[str] = []
    good = runs[STATE] == "done"
    n_good = int(good.sum())
    items.append(
        f"{len(runs)} runs: "
        + ", ".join(f"{int((runs[STATE] == s).sum())} {s}" for s in STATES)
        + "."
    )
    cka = study.final("test", "cka", last=True)
    acc = study.final("test", "acc")
    if n_good and np.isfinite(cka[good]).any():
        by_hue = []
        for v in study.colors.values:
            sel = good & (runs["_hue"].map(format_value) == format_value(v))
            if sel.any():
                by_hue.append(
                    f"{format_value(v)}: {_fmt(cka[sel].mean(), 2)} "
                    f"(test accuracy {_fmt(100 * acc[sel].mean(), 3)}%)"
                )
        hue = study.colors.title or "all runs"
        items.append(
            "Final test CKA of the last hidden layer, mean over the runs that learned, by "
            f"{_esc(hue)}: " + "; ".join(_esc(b) for b in by_hue) + "."
        )
        if runs.loc[good, TASK].nunique() > 1:
            per_task = cka[good].groupby(runs.loc[good, TASK]).mean().dropna().sort_values()
            if len(per_task) > 1:
                m = min(3, len(per_task) // 2)
                best = per_task.index[-m:][::-1]
                worst = per_task.index[:m]
                items.append(
                    "Best-aligned tasks (mean final test CKA): "
                    + ", ".join(f"{_esc(t)} ({per_task[t]:.2f})" for t in best)
                    + "; worst: "
                    + ", ".join(f"{_esc(t)} ({per_task[t]:.2f})" for t in worst)
                    + "."
                )
    init = study.init_level(runs, "test")
    floor = study.floor(runs, "test")
    if np.isfinite(init) or np.isfinite(floor):
        items.append(
            "Chance levels of the test CKA: untrained network (step 0) "
            f"{_fmt(init, 2)}; random features of the same width on the same n "
            f"{_fmt(floor, 2)} (values near these are not feature learning)."
        )
    cells = table.cells
    if not cells.empty:
        hp = cells[~cells["row"].isin(table.columns)].dropna(subset=["pearson_r"])
        if len(hp):
            top = hp.reindex(hp["pearson_r"].abs().sort_values(ascending=False).index).head(3)
            items.append(
                "Strongest hyperparameter correlations (Pearson r [95% CI], n): "
                + "; ".join(
                    f"{_esc(label(r.row))} – {_esc(label(r.column))}: {r.pearson_r:.2f} "
                    f"[{_fmt(r.pearson_lo, 2)}, {_fmt(r.pearson_hi, 2)}], n = {int(r.n)}"
                    for r in top.itertuples()
                )
                + "."
            )
        key = cells[
            (cells["row"] == "final.test_cka_avg") & (cells["column"] == "final.test_acc")
        ].dropna(subset=["pearson_r"])
        if len(key):
            r = key.iloc[0]
            items.append(
                "Average test CKA against test accuracy: Pearson r = "
                f"{r.pearson_r:.2f} [{_fmt(r.pearson_lo, 2)}, {_fmt(r.pearson_hi, 2)}], "
                f"Spearman ρ = {r.spearman_r:.2f}, n = {int(r.n)}."
            )
    return "<h2>Main findings</h2><ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def _correlation_html(table: CorrelationTable) -> str:
    parts = ["<h2>Correlation table</h2>"]
    if table.cells.empty:
        parts.append("<p>" + " ".join(_esc(s) for s in table.summary_lines()) + "</p>")
        return "\n".join(parts)
    for name, key in (("Pearson r", "pearson"), ("Spearman ρ", "spearman")):
        head = "".join(f"<th>{_esc(label(c))}</th>" for c in table.columns)
        body = []
        for r in table.rows:
            enc = table.encodings.get(r, "")
            lab = label(r) + (f" ({enc})" if enc in ("log10", "0/1") else "")
            cells = "".join(f"<td>{_esc(table._cell_text(r, c, key))}</td>" for c in table.columns)
            body.append(f"<tr><td>{_esc(lab)}</td>{cells}</tr>")
        parts.append(
            f"<h3>{name} [bootstrap 95% interval]</h3><table><tr><th></th>{head}</tr>"
            + "".join(body)
            + "</table>"
        )
    parts.append("<ul>" + "".join(f"<li>{_esc(s)}</li>" for s in table.summary_lines()) + "</ul>")
    parts.append(
        f'<p class="small">Files: {TABLES_DIR}/correlations.csv (n, p-values and intervals of '
        f"every cell), {TABLES_DIR}/correlations.md, {TABLES_DIR}/runs.csv.</p>"
    )
    return "\n".join(parts)


def _page(study: Study, table: CorrelationTable, sections: list[str], out: ReportResult) -> str:
    name = (study.store_info.get("study") or {}).get("name") if study.store_info else None
    title = f"ckalab report: {name or (study.path.name if study.path else 'study')}"
    warn = ""
    if study.missing:
        warn = (
            '<div class="warn"><b>This report is partial.</b><ul>'
            + "".join(f"<li>{_esc(m)}</li>" for m in study.missing)
            + "</ul></div>"
        )
    figs = "\n".join(sections) if sections else "<p>No figure could be drawn from this store.</p>"
    meta = json.dumps({"runs": len(study.runs), "figures": len(sections)})
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='ckalab-report' content='{_esc(meta)}'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{_esc(title)}</h1>"
        f'<p class="small">Results store: <code>{_esc(study.path)}</code></p>'
        + warn
        + _configuration(study)
        + _run_summary(study)
        + _findings(study, table)
        + "<h2>Figures</h2>"
        + figs
        + _correlation_html(table)
        + "</body></html>"
    )
