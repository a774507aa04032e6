r"""The study's figures, drawn with matplotlib (Agg, no pyplot state) from a prepared
:class:`~ckalab.report.results.Study`.

Every figure function returns a :class:`Drawn` (the figure, a file stem, a title and a caption)
or ``None`` when the study holds nothing it could show. Conventions shared by all figures:

- one color per value of the hue hyperparameter (learning rate first), the same in every figure;
- train solid, test dashed;
- runs that diverged end with a cross where they diverged (``X``), runs that finished but did
  not learn end with a hollow circle; both are drawn one by one and kept out of the means;
- CKA is the biased linear CKA of a layer with the targets; beside it the untrained network
  (step 0, grey dash-dotted) and the random-feature floor
  (:func:`ckalab.report.chance.random_feature_cka`, grey dotted) so alignment can be told from
  estimator bias.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from ckalab.report.results import (
    FACET,
    HUE,
    LAST,
    STATE,
    TASK,
    K,
    Study,
    format_value,
)
from ckalab.report.tables import CorrelationTable, label

__all__ = [
    "STYLE",
    "Drawn",
    "cka_vs_accuracy",
    "correlation_heatmap",
    "layer_time",
    "layerwise",
    "ntk_curves",
    "select_tasks",
    "task_map",
    "training_curves",
]

#: Matplotlib settings of every figure (readable on screen at 100 dpi and in print).
STYLE: dict[str, Any] = {
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.title_fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.4,
    "savefig.dpi": 110,
    "pdf.fonttype": 42,
    "svg.fonttype": "none",
}

INIT_STYLE = {"color": "0.35", "linestyle": "-.", "linewidth": 1.0}
FLOOR_STYLE = {"color": "0.35", "linestyle": ":", "linewidth": 1.2}
CHANCE_STYLE = {"color": "0.35", "linestyle": (0, (4, 1.5, 1, 1.5, 1, 1.5)), "linewidth": 1.0}
SPLIT_STYLE = {"train": "-", "test": "--"}
BAD_MARKER = {"diverged": "X", "did not learn": "o"}

MAX_TASKS = 6
#: Tick steps of linear axes (no 0.08, 0.16, ... ticks).
TICK_STEPS = (1, 2, 2.5, 5, 10)
MAX_PANELS = 6


@dataclass
class Drawn:
    """A drawn figure: ``name`` (file stem), ``title``, ``caption`` (plain text)."""

    name: str
    title: str
    fig: Figure
    caption: str


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _log(ax: Any, which: str) -> None:
    """A log scale on the ``"x"`` or ``"y"`` axis with labelled ticks at 1, 2, 5 x 10^k (so a
    range under a decade still has numbers) and no minor ticks (they cost more to draw than
    the curves)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=7))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_locator(NullLocator())


def _colorbar_axes(fig: Figure, axes: Sequence[Any], gap: float = 0.12, w: float = 0.14) -> Any:
    """An axes for a colorbar right of ``axes`` (gap and width in inches), as tall as they are."""
    boxes = [a.get_position() for a in axes]
    fw, _ = fig.get_size_inches()
    x1 = max(b.x1 for b in boxes)
    y0, y1 = min(b.y0 for b in boxes), max(b.y1 for b in boxes)
    h = y1 - y0
    return fig.add_axes((x1 + gap / fw, y0 + 0.05 * h, w / fw, 0.9 * h))


def _fixed_grid(
    width: float,
    panel_h: float,
    nrows: int,
    ncols: int,
    *,
    left: float,
    right: float,
    top: float,
    bottom: float,
    wspace: float,
    hspace: float,
    **kw: Any,
) -> tuple[Figure, np.ndarray]:
    """A figure with an ``nrows x ncols`` grid laid out by fixed margins in inches (no layout
    engine: the constrained solver costs more than drawing a many-panel figure)."""
    height = top + bottom + nrows * panel_h + (nrows - 1) * hspace
    if width <= 0:  # -width is the panel width
        width = left + right + ncols * -width + (ncols - 1) * wspace
    fig = Figure(figsize=(width, height))
    panel_w = (width - left - right - (ncols - 1) * wspace) / ncols
    axes = fig.subplots(
        nrows,
        ncols,
        squeeze=False,
        gridspec_kw={
            "left": left / width,
            "right": 1 - right / width,
            "top": 1 - top / height,
            "bottom": bottom / height,
            "wspace": wspace / panel_w,
            "hspace": hspace / panel_h,
        },
        **kw,
    )
    return fig, axes


def _across_seeds(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The band a curve figure draws: per ``keys`` and step, the mean epoch, the mean value
    over the runs (seeds) and its range (``lo``, ``hi``)."""
    return (
        rows.groupby([*keys, "step"], sort=True)
        .agg(
            epoch=("epoch", "mean"),
            mean=("value", "mean"),
            lo=("value", "min"),
            hi=("value", "max"),
        )
        .reset_index()
    )


def _curve_grid(n_rows: int, n_cols: int, *, bottom: float) -> tuple[Figure, np.ndarray]:
    """The grid of the against-epoch figures (curves, NTK): one row of panels per task, 11 in
    wide, a shared x axis; ``bottom`` (inches) leaves room for the key legend."""
    return _fixed_grid(
        11.0,
        1.85,
        n_rows,
        n_cols,
        left=1.0,
        right=0.15,
        top=0.95,
        bottom=bottom,
        wspace=0.8,
        hspace=0.25,
        sharex=True,
    )


def _hue_key(v: Any) -> str:
    return format_value(v)


def _x(epoch: np.ndarray, log: bool, x0: float) -> np.ndarray:
    """Epochs on the x axis; on a log axis step 0 is drawn at ``x0`` (left of the first eval)."""
    e = np.asarray(epoch, dtype=float)
    return np.where(e > 0, e, x0) if log else e


def _x0(study: Study, metrics: pd.DataFrame) -> float:
    pos = metrics.loc[metrics["epoch"] > 0, "epoch"]
    return float(pos.min()) / 2 if len(pos) else 0.5


def _xlabel(study: Study) -> str:
    return "epoch (log scale; step 0 at the left edge)" if study.log_x else "epoch"


def _loss_label(study: Study) -> str:
    kinds = set(study.runs.get("train.loss", pd.Series(["mse"])).dropna())
    if kinds == {"cross_entropy"}:
        return "loss (cross-entropy)"
    if kinds == {"mse"} or not kinds:
        return "loss (MSE)"
    return "loss"


def select_tasks(study: Study, runs: pd.DataFrame, limit: int = MAX_TASKS) -> list[str]:
    """At most ``limit`` tasks: all when few, else the best and the worst aligned by mean final
    test CKA of the last layer (alternating, so both ends are shown)."""
    tasks = list(dict.fromkeys(runs[TASK]))
    if len(tasks) <= limit:
        return tasks
    cka = study.final("test", "cka", last=True).reindex(runs.index)
    ok = runs[STATE] == "done"
    means = cka[ok].groupby(runs.loc[ok, TASK]).mean().sort_values(ascending=False)
    ranked = [t for t in means.index if t in tasks] + [t for t in tasks if t not in means.index]
    top = ranked[: (limit + 1) // 2]
    bottom = [t for t in ranked[::-1] if t not in top][: limit - len(top)]
    return top + bottom[::-1]


def _hue_handles(study: Study, marker: str | None = None) -> list:
    c = study.colors
    return [
        Line2D([], [], color=c(v), lw=2.5, marker=marker, ms=5, label=c.label(v)) for v in c.values
    ]


def _hue_legend(fig: Figure, study: Study, *, marker: str | None = None, **kw: Any) -> None:
    """The legend of the hue colors, one row at the top of the figure, titled by the field."""
    handles = _hue_handles(study, marker)
    title = study.colors.title or None
    kw = {"loc": "outside upper center", "ncols": min(10, len(handles)), **kw}
    fig.legend(handles=handles, title=title, frameon=False, **kw)


def _key_handles(states: set[str], *, splits: bool = True) -> list:
    hs: list[Any] = []
    if splits:
        hs.append(Line2D([], [], color="0.2", ls="-", label="train"))
        hs.append(Line2D([], [], color="0.2", ls="--", label="test"))
    if "diverged" in states:
        hs.append(
            Line2D(
                [],
                [],
                color="0.2",
                marker="X",
                mec="0.1",
                ls="",
                ms=7,
                label="diverged (ends here)",
            )
        )
    if "did not learn" in states:
        hs.append(
            Line2D([], [], color="0.2", marker="o", mfc="none", ls="", ms=7, label="did not learn")
        )
    return hs


def _ref_handles(
    init: bool = True, floor: bool = True, chance: bool = False, init_marker: str | None = None
) -> list:
    hs = []
    if init:
        hs.append(Line2D([], [], marker=init_marker, **INIT_STYLE, label="untrained net (step 0)"))
    if floor:
        hs.append(Line2D([], [], **FLOOR_STYLE, label="random-feature floor"))
    if chance:
        hs.append(Line2D([], [], **CHANCE_STYLE, label="chance accuracy"))
    return hs


# ----------------------------------------------------------------------------------------------
# 1. Loss, accuracy and CKA against epoch
# ----------------------------------------------------------------------------------------------


def curve_rows(study: Study) -> pd.DataFrame:
    """The metric rows of the training curves: loss and accuracy (whole model) and CKA of each
    run's last layer, both splits, with the run's task, facet, hue and state attached."""
    m = study.metrics
    if m.empty:
        return m.assign(**{TASK: [], FACET: [], HUE: [], STATE: []})
    last = study.runs.set_index("run_id")[LAST]
    whole = m["metric"].isin(["loss", "acc"]) & (m["layer"] == "")
    cka = (m["metric"] == "cka") & (m["layer"] == m["run_id"].map(last))
    rows = m.loc[whole | cka, ["run_id", "step", "epoch", "split", "metric", "value"]]
    info = study.runs.set_index("run_id")[[TASK, FACET, HUE, STATE]].copy()
    info[HUE] = info[HUE].map(_hue_key)
    rows = rows.join(info, on="run_id")
    rows.loc[rows["metric"] == "acc", "value"] *= 100.0
    return rows


def _bad_runs(
    axes: np.ndarray,
    bad: pd.DataFrame,
    row_of: dict[str, int],
    panels: dict[str, int],
    color_of: dict[str, Any],
    log_x: bool,
    x0: float,
) -> None:
    """The single runs that diverged or did not learn: one thin line each up to where they
    stopped, ending in a marker (cross: diverged, hollow circle: did not learn). Drawn as one
    line collection and one scatter per panel and state (not one artist per run)."""
    from matplotlib.collections import LineCollection

    if bad.empty:
        return
    lines: dict[tuple[int, int], tuple[list, list, list]] = {}
    ends: dict[tuple[int, int, str], tuple[list, list, list]] = {}
    bad = bad.sort_values(["run_id", "split", "metric", "step"], kind="stable")
    for (task, _rid, split, metric), g in bad.groupby(
        [TASK, "run_id", "split", "metric"], sort=False
    ):
        key = (row_of[task], panels[metric])
        x = _x(g["epoch"].to_numpy(), log_x, x0)
        y = g["value"].to_numpy(dtype=float)
        col = color_of.get(g[HUE].iloc[0], "0.3")
        segs, cols, styles = lines.setdefault(key, ([], [], []))
        segs.append(np.column_stack([x, y]))
        cols.append(col)
        styles.append("--" if split == "test" else "-")
        ex, ey, ec = ends.setdefault((*key, g[STATE].iloc[0]), ([], [], []))
        ex.append(x[-1])
        ey.append(y[-1])
        ec.append(col)
    for (i, j), (segs, cols, styles) in lines.items():
        axes[i, j].add_collection(
            LineCollection(segs, colors=cols, linestyles=styles, linewidths=0.8, alpha=0.8),
            autolim=True,
        )
        axes[i, j].autoscale_view()
    for (i, j, state), (ex, ey, ec) in ends.items():
        diverged = state == "diverged"
        axes[i, j].scatter(
            ex,
            ey,
            s=49,
            marker=BAD_MARKER[state],
            c=ec if diverged else "none",
            edgecolors="0.1" if diverged else ec,
            linewidths=0.8 if diverged else 1.4,
            zorder=5,
        )


def training_curves(
    study: Study, facet: str | None = None, rows: pd.DataFrame | None = None
) -> Drawn | None:
    """Loss, accuracy and CKA of the last hidden layer against epoch: one panel row per task,
    one color per hue value, mean over seeds with a min-max band; diverged runs drawn up to
    their divergence and marked."""
    rows = curve_rows(study) if rows is None else rows
    runs = study.runs if facet is None else study.runs[study.runs[FACET] == facet]
    rows = rows if facet is None else rows[rows[FACET] == facet]
    rows = rows[np.isfinite(rows["value"].to_numpy(dtype=float))]
    if rows.empty:
        return None
    tasks = select_tasks(study, runs)
    n_tasks = len(tasks)
    fig, axes = _curve_grid(n_tasks, 3, bottom=0.95)
    x0 = _x0(study, rows)
    row_of = {t: i for i, t in enumerate(tasks)}
    rows = rows[rows[TASK].isin(row_of)]
    good = rows[rows[STATE] == "done"]
    agg = _across_seeds(good, [TASK, HUE, "split", "metric"])
    bad = rows[rows[STATE].isin(["diverged", "did not learn"])]
    panels = {"loss": 0, "acc": 1, "cka": 2}
    color_of = {_hue_key(v): study.colors(v) for v in study.colors.values}
    for (task, hue, split, metric), g in agg.groupby([TASK, HUE, "split", "metric"], sort=False):
        ax = axes[row_of[task], panels[metric]]
        x = _x(g["epoch"].to_numpy(), study.log_x, x0)
        col = color_of.get(hue, "0.3")
        ax.plot(x, g["mean"].to_numpy(), color=col, ls=SPLIT_STYLE.get(split, "-"))
        lo, hi = g["lo"].to_numpy(), g["hi"].to_numpy()
        if (hi > lo).any():
            ax.fill_between(x, lo, hi, color=col, alpha=0.15, lw=0, rasterized=True)
    _bad_runs(axes, bad, row_of, panels, color_of, study.log_x, x0)
    log_loss = bool((rows.loc[rows["metric"] == "loss", "value"] > 0).all())
    for i, task in enumerate(tasks):
        truns = runs[runs[TASK] == task]
        # reference levels
        k = truns[K].dropna()
        if len(k):
            axes[i, 1].axhline(100.0 / k.median(), **CHANCE_STYLE)
        init = study.init_level(truns, "test")
        if np.isfinite(init):
            axes[i, 2].axhline(init, **INIT_STYLE)
        floor = study.floor(truns, "test")
        if np.isfinite(floor):
            axes[i, 2].axhline(floor, **FLOOR_STYLE)
        axes[i, 0].set_ylabel(
            f"{task}\n{_loss_label(study)}"
            if n_tasks > 1 or study.task_fields
            else _loss_label(study)
        )
        axes[i, 1].set_ylabel("accuracy (%)")
        axes[i, 2].set_ylabel("CKA, last hidden layer")
        axes[i, 2].set_ylim(bottom=0)
        if log_loss:
            _log(axes[i, 0], "y")
        for ax in axes[i, 1:]:
            ax.yaxis.set_major_locator(MaxNLocator(5, steps=TICK_STEPS))
    if study.log_x:
        _log(axes[0, 0], "x")  # the x axes are shared: one locator for all
    else:
        axes[0, 0].xaxis.set_major_locator(MaxNLocator(6, steps=TICK_STEPS))
    for ax in axes[-1]:
        ax.set_xlabel(_xlabel(study))
    for j, t in enumerate(("loss", "accuracy", "CKA with the targets")):
        axes[0, j].set_title(t)
    _hue_legend(fig, study, loc="upper center", bbox_to_anchor=(0.5, 1.0))
    shown_states = set(rows.loc[rows[TASK].isin(tasks), STATE])
    handles = _key_handles(shown_states) + _ref_handles(chance=True)
    fig.legend(
        handles=handles,
        loc="lower center",
        bbox_to_anchor=(0.5, 0.0),
        ncols=min(4, len(handles)),
        frameon=False,
    )
    all_tasks = list(dict.fromkeys(runs[TASK]))
    shown = (
        f"Showing {n_tasks} of {len(all_tasks)} tasks (the best and the worst aligned by mean "
        "final test CKA; every task is in the task map). "
        if n_tasks < len(all_tasks)
        else ""
    )
    facet_text = f" ({facet})" if facet and facet != "all" else ""
    caption = (
        f"Training curves{facet_text}. {shown}Lines: mean over seeds of the runs that learned; "
        "band: min–max over seeds; thin lines: single runs that diverged (cross where they "
        "stopped) or did not learn (hollow circle). CKA panel: grey dash-dotted = untrained "
        "network "
        "(step 0, test), grey dotted = random-feature floor of biased CKA (test probe set); "
        "accuracy panel: dash-dot-dotted = chance (1/k)."
    )
    title = "Loss, accuracy and CKA during training" + facet_text
    return Drawn("curves", title, fig, caption)


# ----------------------------------------------------------------------------------------------
# 1b. NTK alignment and kernel distance against epoch, beside CKA
# ----------------------------------------------------------------------------------------------

#: The NTK metrics drawn (whole network), with their panel titles and axis labels.
NTK_PANELS: tuple[tuple[str, str, str], ...] = (
    ("ntk_alignment", "NTK-target alignment", "NTK alignment"),
    ("ntk_distance_init", "NTK distance to step 0", "kernel distance"),
)


def ntk_curves(study: Study) -> Drawn | None:
    """The empirical NTK beside CKA during training: CKA of the last hidden layer (train probe
    set), the centered NTK-target alignment and the kernel distance to the initial NTK (whole
    network), one panel row per task, one color per hue value (mean over the seeds of the runs
    that learned). ``None`` when the store has no NTK rows."""
    m = study.metrics
    names = [n for n, _, _ in NTK_PANELS]
    if m.empty or not m["metric"].isin(names).any():
        return None
    last = study.runs.set_index("run_id")[LAST]
    done = study.runs.loc[study.runs[STATE] == "done", "run_id"]
    sel = m["run_id"].isin(done) & (
        (m["metric"].isin(names) & (m["layer"] == ""))
        | ((m["metric"] == "cka") & (m["split"] == "train") & (m["layer"] == m["run_id"].map(last)))
    )
    rows = m.loc[sel, ["run_id", "step", "epoch", "split", "metric", "value"]]
    rows = rows[np.isfinite(rows["value"].to_numpy(dtype=float))]
    if not rows["metric"].isin(names).any():
        return None
    info = study.runs.set_index("run_id")[[TASK, HUE]].copy()
    info[HUE] = info[HUE].map(_hue_key)
    rows = rows.join(info, on="run_id")
    runs = study.runs[study.runs["run_id"].isin(rows["run_id"])]
    tasks = select_tasks(study, runs, limit=4)
    row_of = {t: i for i, t in enumerate(tasks)}
    rows = rows[rows[TASK].isin(row_of)]
    panels = {"cka": 0, **{n: j + 1 for j, (n, _, _) in enumerate(NTK_PANELS)}}
    fig, axes = _curve_grid(len(tasks), len(panels), bottom=0.85)
    x0 = _x0(study, rows)
    agg = _across_seeds(rows, [TASK, HUE, "metric"])
    color_of = {_hue_key(v): study.colors(v) for v in study.colors.values}
    for (task, hue, metric), g in agg.groupby([TASK, HUE, "metric"], sort=False):
        ax = axes[row_of[task], panels[metric]]
        x = _x(g["epoch"].to_numpy(), study.log_x, x0)
        col = color_of.get(hue, "0.3")
        ax.plot(x, g["mean"].to_numpy(), color=col)
        lo, hi = g["lo"].to_numpy(), g["hi"].to_numpy()
        if (hi > lo).any():
            ax.fill_between(x, lo, hi, color=col, alpha=0.15, lw=0, rasterized=True)
    for i, task in enumerate(tasks):
        truns = runs[runs[TASK] == task]
        init = study.init_level(truns, "train")
        if np.isfinite(init):
            axes[i, 0].axhline(init, **INIT_STYLE)
        prefix = f"{task}\n" if len(tasks) > 1 or study.task_fields else ""
        axes[i, 0].set_ylabel(prefix + "CKA, last hidden layer")
        for j in panels.values():
            if j:
                axes[i, j].set_ylabel(NTK_PANELS[j - 1][2])
            axes[i, j].set_ylim(bottom=0)
            axes[i, j].yaxis.set_major_locator(MaxNLocator(5, steps=TICK_STEPS))
    if study.log_x:
        _log(axes[0, 0], "x")
    else:
        axes[0, 0].xaxis.set_major_locator(MaxNLocator(6, steps=TICK_STEPS))
    for ax in axes[-1]:
        ax.set_xlabel(_xlabel(study))
    axes[0, 0].set_title("CKA with the targets (train)")
    for (_name, title, _), j in zip(NTK_PANELS, range(1, len(panels)), strict=True):
        axes[0, j].set_title(title if j == 0 else title + ",\nwhole network")
    _hue_legend(fig, study, loc="upper center", bbox_to_anchor=(0.5, 1.0))
    fig.legend(
        handles=_ref_handles(floor=False),
        loc="lower center",
        bbox_to_anchor=(0.5, 0.0),
        frameon=False,
    )
    groups = sorted(set(m.loc[m["metric"].isin(names), "layer"]) - {""})
    n_all = study.runs[TASK].nunique()
    caption = (
        "The empirical neural tangent kernel (NTK) during training, beside CKA. Left: CKA of the "
        "last hidden layer with the targets on the train probe set; middle: centered alignment "
        "of the whole network's NTK with the target kernel; right: kernel distance "
        "(1 - cosine similarity) of the NTK to the one at step 0: how far the kernel has moved, "
        "0 in the lazy (kernel) regime. Lines: mean over seeds of the runs that learned; band: "
        "min–max. "
        + (f"Showing {len(tasks)} of {n_all} tasks. " if len(tasks) < n_all else "")
        + (
            "The store also holds these values per parameter group ("
            + ", ".join(groups)
            + ") and the distance to the previous evaluation (ntk_distance_prev)."
            if groups
            else ""
        )
    )
    return Drawn("ntk", "NTK alignment and kernel movement during training", fig, caption)


# ----------------------------------------------------------------------------------------------
# 2. The task map
# ----------------------------------------------------------------------------------------------


def _pair(task_classes: Any) -> tuple[int, int] | None:
    from ckalab.report.results import _parse_classes

    c = _parse_classes(task_classes)
    return (min(c), max(c)) if c and len(c) == 2 else None


def task_map(study: Study, facet: str | None = None, max_cols: int = 5) -> Drawn | None:
    """Final test CKA of the last layer and test accuracy per class pair: triangular heatmaps,
    one per hue value (learning rate). ``None`` unless the tasks are class pairs."""
    runs = study.runs if facet is None else study.runs[study.runs[FACET] == facet]
    if "data.classes" not in runs or "data.classes" not in study.task_fields:
        return None
    pairs = runs["data.classes"].map(_pair)
    if pairs.isna().any() or pairs.nunique() < 2:
        return None
    k = int(max(max(p) for p in pairs)) + 1
    hues = [v for v in study.colors.values if (runs[HUE].map(_hue_key) == _hue_key(v)).any()]
    ncols = min(max_cols, len(hues))
    nblocks = math.ceil(len(hues) / ncols)
    metrics = [
        ("cka", "test CKA, last hidden layer", study.final("test", "cka", last=True), "viridis"),
        ("acc", "test accuracy (%)", study.final("test", "acc") * 100.0, "magma"),
    ]
    init = study.init_level(runs, "test")
    floor = study.floor(runs, "test")
    cell = 2.0
    fig, axes = _fixed_grid(
        -cell,
        cell,
        2 * nblocks,
        ncols,
        left=0.45,
        right=1.25,
        top=0.3,
        bottom=0.4,
        wspace=0.4,
        hspace=0.6,
    )
    hue_s = runs[HUE].map(_hue_key)
    good = runs[STATE] == "done"
    for m_i, (_name, title, values, cmap) in enumerate(metrics):
        vals = values.reindex(runs.index)
        v_ok = vals[good].to_numpy(dtype=float)
        v_ok = v_ok[np.isfinite(v_ok)]
        vmin, vmax = (float(v_ok.min()), float(v_ok.max())) if v_ok.size else (0.0, 1.0)
        if m_i == 0:
            vmin = 0.0
        image = None
        for h_i, hue in enumerate(hues):
            ax = axes[2 * (h_i // ncols) + m_i, h_i % ncols]
            grid = np.full((k, k), np.nan)
            flagged = np.zeros((k, k), dtype=bool)
            sel = hue_s == _hue_key(hue)
            for pair, g in runs[sel].groupby(pairs[sel]):
                a, b = pair
                ok = g[STATE] == "done"
                v = vals.loc[g.index[ok]].to_numpy(dtype=float)
                v = v[np.isfinite(v)]
                if v.size:
                    grid[b, a] = v.mean()
                if (~ok).any():
                    flagged[b, a] = True
            # rows b = 1..k-1, columns a = 0..k-2: the strict lower triangle, nothing wasted
            grid, flagged = grid[1:, :-1], flagged[1:, :-1]
            image = ax.imshow(
                np.ma.masked_invalid(grid), cmap=cmap, vmin=vmin, vmax=vmax, origin="upper"
            )
            tri = np.tril(np.ones((k - 1, k - 1), dtype=bool))
            empty = np.ma.masked_where(~(tri & np.isnan(grid)), np.ones_like(grid))
            ax.imshow(empty, cmap="Greys", vmin=0, vmax=4, origin="upper")
            ys, xs = np.nonzero(flagged)
            ax.plot(xs, ys, ls="", marker="x", color="red", ms=5, mew=1.2)
            ax.set_xticks(range(k - 1), [str(a) for a in range(k - 1)])
            ax.set_yticks(range(k - 1), [str(b) for b in range(1, k)])
            ax.tick_params(length=0, labelsize=7)
            ax.grid(False)
            for sp in ax.spines.values():
                sp.set_visible(False)
            ax.set_title(
                f"{study.colors.short_title or 'runs'} = {study.colors.label(hue)}"
                if study.colors.field
                else "all runs",
                fontsize=8,
            )
            ax.set_xlabel("class a", fontsize=7, labelpad=1)
            ax.set_ylabel("class b", fontsize=7, labelpad=1)
        for j in range(len(hues), nblocks * ncols):
            axes[2 * (j // ncols) + m_i, j % ncols].set_visible(False)
        if image is not None:
            cax = _colorbar_axes(fig, axes[m_i::2, :].ravel().tolist())
            cb = fig.colorbar(image, cax=cax)
            cb.set_label(title)
            if m_i == 0:
                for level, style in ((init, INIT_STYLE), (floor, FLOOR_STYLE)):
                    if np.isfinite(level) and vmin <= level <= vmax:
                        cb.ax.axhline(level, color="white", lw=2.2)
                        cb.ax.axhline(level, **{**style, "color": "black"})
    caption = (
        "Task map: final test CKA of the last hidden layer (upper row of each block) and test "
        "accuracy (lower row) for every class pair (a < b, mean over seeds of the runs that "
        "learned), one panel per "
        f"{study.colors.title or 'run group'}. Red cross: at least one run of that pair diverged "
        "or did not learn (grey with a cross: none learned); grey: no run. Chance levels of the "
        f"CKA (lines on the colorbar): untrained network {init:.2f} (dash-dotted, step 0), "
        f"random-feature floor {floor:.3f} (dotted)."
    )
    facet_text = f" ({facet})" if facet and facet != "all" else ""
    return Drawn("task_map", "Task map: alignment per class pair" + facet_text, fig, caption)


# ----------------------------------------------------------------------------------------------
# 3. Layer-wise CKA: at the end of training, and over time
# ----------------------------------------------------------------------------------------------


def _configurations(study: Study, runs: pd.DataFrame) -> pd.Series:
    """The model configuration of each run: the swept ``model.*`` fields, else the hue."""
    if study.model_fields:
        return runs.apply(
            lambda r: ", ".join(f"{label(f)} = {format_value(r[f])}" for f in study.model_fields),
            axis=1,
        )
    return runs[HUE].map(_hue_key)


def _config_colors(study: Study, configs: list[str]) -> dict[str, Any]:
    if not study.model_fields:
        return {_hue_key(v): study.colors(v) for v in study.colors.values}
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {c: cmap(i % 10) for i, c in enumerate(configs)}


def layerwise(study: Study) -> Drawn | None:
    """Final CKA of every probe layer, train and test, one line per model configuration (one
    panel row per task, at most :data:`MAX_TASKS`). ``None`` with fewer than two probe layers
    (one point per line: the training curves show it)."""
    layers = study.layers
    if len(layers) < 2:
        return None
    runs = study.runs
    tasks = select_tasks(study, runs, limit=4)
    configs = _configurations(study, runs)
    order = list(dict.fromkeys(configs[runs[STATE] == "done"].tolist() + configs.tolist()))
    colors = _config_colors(study, order)
    rotate = len(layers) > 4
    fig, axes = _fixed_grid(
        -min(4.2, 1.2 + 0.75 * len(layers)),
        1.9,
        len(tasks),
        2,
        left=1.0,
        right=0.2,
        top=0.85,
        bottom=1.55 if rotate else 1.15,
        wspace=0.3,
        hspace=0.35,
        sharey=True,
        sharex=True,
    )
    xs = np.arange(1, len(layers) + 1)
    any_line = False
    for i, task in enumerate(tasks):
        tsel = runs[TASK] == task
        for j, split in enumerate(("train", "test")):
            ax = axes[i, j]
            vals = pd.DataFrame(
                {lay: study.final(split, "cka", lay) for lay in layers}, index=runs.index
            )
            for cfg in order:
                sel = tsel & (configs == cfg)
                good = vals[sel & (runs[STATE] == "done")]
                if len(good) and good.notna().any().any():
                    mean = good.mean()
                    ax.plot(xs, mean.to_numpy(), color=colors[cfg], marker="o", ms=4)
                    lo, hi = good.min().to_numpy(), good.max().to_numpy()
                    if (hi > lo).any():
                        ax.fill_between(xs, lo, hi, color=colors[cfg], alpha=0.15, lw=0)
                    any_line = True
                for rid in runs.index[sel & (runs[STATE] == "did not learn")]:
                    ax.plot(
                        xs,
                        vals.loc[rid].to_numpy(),
                        color=colors[cfg],
                        lw=0.8,
                        ls=":",
                        marker="o",
                        mfc="none",
                        ms=5,
                    )
            init = [study.init_level(runs[tsel], split, lay) for lay in layers]
            if np.isfinite(init).any():
                ax.plot(xs, init, marker=".", **INIT_STYLE)
            floor = study.floor(runs[tsel], split)
            if np.isfinite(floor):
                ax.axhline(floor, **FLOOR_STYLE)
            n_div = int((runs.loc[tsel, STATE].isin(["diverged", "failed"])).sum())
            if n_div:
                ax.text(
                    0.99,
                    0.02,
                    f"{n_div} run{'s' if n_div > 1 else ''} diverged/failed (no final values)",
                    transform=ax.transAxes,
                    ha="right",
                    va="bottom",
                    fontsize=7,
                    color="0.3",
                )
            ax.set_xticks(
                xs,
                layers,
                rotation=30 if rotate else 0,
                ha="right" if rotate else "center",
            )
            ax.set_xlim(0.6, len(layers) + 0.4)
            ax.set_ylim(bottom=0)
            if i == 0:
                ax.set_title(f"{split} (final)")
            if j == 0:
                ax.set_ylabel((f"{task}\n" if study.task_fields else "") + "CKA with the targets")
    for ax in axes[-1]:
        ax.set_xlabel("probe layer (input → output)")
    if not any_line and not np.isfinite(study.final("test", "cka", layers[-1])).any():
        return None
    if study.model_fields:
        handles = [
            Line2D([], [], color=colors[c], lw=2.5, marker="o", ms=4, label=c) for c in order
        ]
        title = ", ".join(label(f) for f in study.model_fields)
        fig.legend(
            handles=handles,
            title=title,
            loc="upper center",
            bbox_to_anchor=(0.5, 1.0),
            frameon=False,
            ncols=min(4, len(handles)),
        )
    else:
        _hue_legend(fig, study, marker="o", loc="upper center", bbox_to_anchor=(0.5, 1.0))
    keys = _key_handles(set(runs[STATE]) - {"diverged", "failed"}, splits=False)
    for h in keys:
        h.set_linestyle(":")
    keys += _ref_handles(init_marker=".")
    fig.legend(
        handles=keys,
        loc="lower center",
        bbox_to_anchor=(0.5, 0.0),
        ncols=min(3, len(keys)),
        frameon=False,
    )
    caption = (
        "Layer-wise CKA at the end of training, train and test: mean over the runs that learned "
        "of each configuration (band: min–max). Grey dash-dotted: the same layers at step 0 "
        "(untrained); grey dotted: random-feature floor."
    )
    return Drawn("layerwise", "Layer-wise CKA at the end of training", fig, caption)


def layer_time(study: Study, split: str = "test") -> Drawn | None:
    """CKA of every probe layer over time as a layer x evaluation heatmap, one panel per model
    configuration (mean over the runs that learned, all tasks and seeds pooled). ``None`` with
    fewer than two probe layers."""
    m = study.metrics
    if m.empty or len(study.layers) < 2:
        return None
    runs = study.runs[study.runs[STATE] == "done"]
    cka = m[(m["metric"] == "cka") & (m["split"] == split) & (m["layer"] != "")]
    cka = cka[cka["run_id"].isin(runs["run_id"])]
    if cka.empty:
        return None
    configs = _configurations(study, runs)
    cfg_of = dict(zip(runs["run_id"], configs, strict=True))
    cka = cka.assign(_cfg=cka["run_id"].map(cfg_of))
    order = [c for c in dict.fromkeys(configs) if (cka["_cfg"] == c).any()]
    shown = order[:MAX_PANELS]
    ncols = min(3, len(shown))
    nrows = math.ceil(len(shown) / ncols)
    nl = len(study.layers)
    fig = _figure(3.6 * ncols + 1.0, max(2.0, 0.32 * nl + 1.3) * nrows + 0.4)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    agg = cka.groupby(["_cfg", "layer", "step"])[["epoch", "value"]].mean().reset_index()
    vmax = float(np.nanmax(agg["value"])) if len(agg) else 1.0
    x0 = _x0(study, agg)
    image = None
    for idx, cfg in enumerate(shown):
        ax = axes[idx // ncols, idx % ncols]
        g = agg[agg["_cfg"] == cfg]
        pivot = g.pivot(index="layer", columns="step", values="value")
        pivot = pivot.reindex([lay for lay in study.layers if lay in pivot.index])
        epochs = g.groupby("step")["epoch"].mean().reindex(pivot.columns).to_numpy()
        x = _x(epochs, study.log_x, x0)
        edges = _edges(x, study.log_x)
        image = ax.pcolormesh(
            edges,
            np.arange(len(pivot.index) + 1),
            pivot.to_numpy(),
            cmap="viridis",
            vmin=0,
            vmax=vmax,
            shading="flat",
        )
        if study.log_x:
            _log(ax, "x")
        ax.set_yticks(np.arange(len(pivot.index)) + 0.5, list(pivot.index))
        ax.grid(False)
        name = cfg if study.model_fields else f"{study.colors.short_title} = {cfg}"
        ax.set_title(name if study.colors.field or study.model_fields else "all runs")
        ax.set_xlabel(_xlabel(study))
    for j in range(len(shown), nrows * ncols):
        axes[j // ncols, j % ncols].set_visible(False)
    cb = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.9)
    cb.set_label(f"{split} CKA")
    init = study.init_level(runs, split)
    floor = study.floor(runs, split)
    for level, style in ((init, INIT_STYLE), (floor, FLOOR_STYLE)):
        if np.isfinite(level) and level <= vmax:
            cb.ax.axhline(level, color="white", lw=2.2)
            cb.ax.axhline(level, **{**style, "color": "black"})
    more = (
        f" Showing {len(shown)} of {len(order)} configurations." if len(order) > len(shown) else ""
    )
    caption = (
        f"{split.capitalize()} CKA of each probe layer (rows, input at the bottom) over training, "
        "mean over the runs that learned (tasks and seeds pooled) of each configuration."
        + more
        + " Colorbar lines: untrained network (dash-dotted, last layer at step 0) and "
        "random-feature "
        "floor (dotted)."
    )
    return Drawn("layer_time", "Layer-wise CKA over time", fig, caption)


def _edges(x: np.ndarray, log: bool) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.size == 1:
        return np.array([x[0] / 2, x[0] * 2]) if log else np.array([x[0] - 0.5, x[0] + 0.5])
    t = np.log(x) if log else x
    mid = (t[1:] + t[:-1]) / 2
    e = np.concatenate([[t[0] - (mid[0] - t[0])], mid, [t[-1] + (t[-1] - mid[-1])]])
    return np.exp(e) if log else e


# ----------------------------------------------------------------------------------------------
# 4. Final CKA against test accuracy
# ----------------------------------------------------------------------------------------------


def cka_vs_accuracy(study: Study) -> Drawn | None:
    """Final test CKA (last layer; and averaged over layers) against test accuracy, one point
    per run, colored by the hue hyperparameter; runs that did not learn are crosses."""
    runs = study.runs
    acc = study.final("test", "acc") * 100.0
    xs = [("test CKA, last hidden layer", study.final("test", "cka", last=True))]
    if len(study.layers) > 1:
        xs.append(("test CKA, mean over layers", study.final("test", "cka_avg")))
    if not any(np.isfinite(x.to_numpy(dtype=float)).any() for _, x in xs):
        return None
    fig = _figure(4.6 * len(xs) + 0.4, 4.0)
    axes = fig.subplots(1, len(xs), squeeze=False)[0]
    init = study.init_level(runs, "test")
    floor = study.floor(runs, "test")
    k = runs[K].dropna()
    for ax, (xlabel, x) in zip(axes, xs, strict=True):
        for v in study.colors.values:
            sel = runs[HUE].map(_hue_key) == _hue_key(v)
            ok = sel & (runs[STATE] == "done")
            ax.scatter(
                x[ok],
                acc[ok],
                s=22,
                color=study.colors(v),
                alpha=0.85,
                lw=0.3,
                edgecolor="white",
                zorder=3,
            )
            nl = sel & (runs[STATE] == "did not learn")
            if nl.any():
                ax.scatter(
                    x[nl],
                    acc[nl],
                    s=40,
                    marker="o",
                    facecolor="none",
                    edgecolor=study.colors(v),
                    lw=1.4,
                    zorder=4,
                )
        if np.isfinite(init) and xlabel.endswith("layer"):
            ax.axvline(init, **INIT_STYLE)
        if np.isfinite(floor):
            ax.axvline(floor, **FLOOR_STYLE)
        if len(k):
            ax.axhline(100.0 / k.median(), **CHANCE_STYLE)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%)")
        ax.set_xlim(left=0)
    n_div = int(runs[STATE].isin(["diverged", "failed"]).sum())
    hs = _hue_handles(study, marker="o")
    for h in hs:
        h.set_linestyle("")
    fig.legend(
        handles=hs, title=study.colors.title or None, loc="outside right upper", frameon=False
    )
    keys = _key_handles(set(runs[STATE]) - {"diverged"}, splits=False) + _ref_handles(chance=True)
    fig.legend(handles=keys, loc="outside right lower", frameon=False)
    caption = (
        "Final test CKA against test accuracy, one point per run, colored by "
        f"{study.colors.title or 'run'}; hollow circles: runs that did not learn. "
        + (
            f"{n_div} diverged or failed runs have no final values and are not shown. "
            if n_div
            else ""
        )
        + "Grey dash-dotted: untrained network (step 0); dotted: random-feature floor; "
        "dash-dot-dotted: "
        "chance accuracy."
    )
    return Drawn("cka_vs_accuracy", "Final CKA against test accuracy", fig, caption)


# ----------------------------------------------------------------------------------------------
# 5. The correlation table as a heatmap
# ----------------------------------------------------------------------------------------------


def correlation_heatmap(table: CorrelationTable) -> Drawn | None:
    """Pearson and Spearman coefficients of the correlation table, annotated, side by side."""
    if table.cells.empty or not table.rows or not table.columns:
        return None
    nr, nc = len(table.rows), len(table.columns)
    fig, grid = _fixed_grid(
        -0.62 * nc,
        0.36 * nr,
        1,
        2,
        left=2.2,
        right=1.05,
        top=0.3,
        bottom=1.45,
        wspace=0.3,
        hspace=0.0,
        sharey=True,
    )
    axes = grid[0]
    image = None
    for ax, (name, stat) in zip(
        axes, (("Pearson r", "pearson_r"), ("Spearman ρ", "spearman_r")), strict=True
    ):
        mat = table.matrix(stat).to_numpy(dtype=float)
        image = ax.imshow(np.ma.masked_invalid(mat), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
        for (r, c), v in np.ndenumerate(mat):
            text = "–" if not np.isfinite(v) else f"{v:.2f}"
            color = "white" if np.isfinite(v) and abs(v) > 0.6 else "black"
            ax.text(c, r, text, ha="center", va="center", fontsize=7, color=color)
        ax.set_xticks(range(nc), [label(c) for c in table.columns], rotation=35, ha="right")
        ax.set_yticks(range(nr), [_row_label(table, r) for r in table.rows])
        ax.grid(False)
        ax.set_title(name)
        n_hp = len([r for r in table.rows if r not in table.columns])
        if 0 < n_hp < nr:
            ax.axhline(n_hp - 0.5, color="black", lw=1.0)
    cb = fig.colorbar(image, cax=_colorbar_axes(fig, list(axes)))
    cb.set_label("correlation coefficient")
    caption = (
        "Correlations between the swept hyperparameters (top) or outcome metrics (bottom) and the "
        "outcomes (columns), over the runs that finished and learned. "
        + " ".join(table.summary_lines())
    )
    return Drawn("correlations", "Correlation table", fig, caption)


def _row_label(table: CorrelationTable, row: str) -> str:
    enc = table.encodings.get(row, "")
    return label(row) + (f" ({enc})" if enc in ("log10", "0/1") else "")
