r"""A study's results prepared for the report: runs classified, tasks and hues assigned.

:func:`prepare` takes the two tables of the results store (``runs_df, metrics_df`` as returned
by :func:`ckalab.study.store.load_results`) and the swept fields, and returns a :class:`Study`:

- ``state`` of each run: ``done``, ``did not learn`` (finished at chance,
  :func:`ckalab.report.chance.did_not_learn`), ``diverged`` or ``failed``;
- the **task** (the swept ``data.dataset`` / ``data.classes``: one panel row per task), the
  **hue** (the swept hyperparameter drawn as one curve per value, learning rate first, see
  :data:`HUE_PRIORITY`), the **facet** (the other swept fields except the seed: one figure per
  combination) and the **group** (task, facet, hue: its runs differ only by seed and are
  averaged);
- the probe layers in forward order and each run's last (penultimate) layer;
- the per-run sizes behind the chance levels: number of classes, target rank, train-split size
  and probe-set sizes (from the run's configuration and the dataset registry's metadata; for a
  class subset the split size is estimated as the class fraction of the full split);
- one color per hue value, shared by every figure.

It reads only the store's tables (and dataset metadata); it never imports the trainer.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ckalab.report.chance import did_not_learn, random_feature_cka, target_rank
from ckalab.report.tables import FINAL_PREFIX, final_column, label

__all__ = [
    "HUE_PRIORITY",
    "STATES",
    "Study",
    "format_value",
    "prepare",
]

#: Run states in the report, in display order.
STATES: tuple[str, ...] = ("done", "did not learn", "diverged", "failed")
SEED_FIELD = "train.seed"
TASK_FIELDS: tuple[str, ...] = ("data.dataset", "data.classes")
#: The swept field drawn as colors is the first of these that varies (else the first swept one).
HUE_PRIORITY: tuple[str, ...] = (
    "optim.lr",
    "optim.readout_lr",
    "optim.momentum",
    "train.batch_size",
    "model.width",
    "model.depth",
    "model.skip",
    "train.augment",
    "model.arch",
)
#: Derived columns added to the runs table (never written to the store).
STATE, TASK, HUE, FACET, GROUP = "_state", "_task", "_hue", "_facet", "_group"
K, RANK, N_TRAIN, PROBE_TRAIN, PROBE_TEST, WIDTH, LAST = (
    "_classes",
    "_rank",
    "_n_train",
    "_probe_train",
    "_probe_test",
    "_width",
    "_last_layer",
)


def format_value(v: Any) -> str:
    """A hyperparameter value as short text: ``0.001``, ``1e-05``, ``true``, ``4 vs 9``."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "default"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):g}"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return str(v)


def _parse_classes(v: Any) -> list[int] | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except ValueError:
            return None
    try:
        return [int(c) for c in v] if v is not None else None
    except TypeError:
        return None


def _task_label(dataset: Any, classes: list[int] | None, with_dataset: bool) -> str:
    if classes is None:
        text = "all classes"
    elif len(classes) == 2:
        text = f"{classes[0]} vs {classes[1]}"
    else:
        text = "classes " + ",".join(map(str, classes))
    return f"{dataset}: {text}" if with_dataset and isinstance(dataset, str) else text


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


@dataclass
class HueColors:
    """One color per hue value, the same in every figure: a sequential palette for ordered
    numbers, a qualitative one otherwise."""

    field: str | None
    values: list[Any]
    colors: list[tuple[float, float, float, float]]
    numeric: bool
    #: The legend title when the field's label alone would mislead (see :func:`prepare`).
    name: str | None = None

    def __call__(self, value: Any) -> tuple[float, float, float, float]:
        for v, c in zip(self.values, self.colors, strict=True):
            if v == value or (_isnan(v) and _isnan(value)):
                return c
        return (0.3, 0.3, 0.3, 1.0)

    def label(self, value: Any) -> str:
        return format_value(value)

    @property
    def title(self) -> str:
        if self.name:
            return self.name
        return label(self.field) if self.field else ""

    @property
    def short_title(self) -> str:
        """The title for a small panel: ``hidden lr`` when the readout has its own rate."""
        return "hidden lr" if self.name else self.title


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _hue_colors(field_name: str | None, values: Sequence[Any]) -> HueColors:
    from matplotlib import colormaps

    vals = list(values)
    numeric = all(
        isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        for v in vals
    )
    if numeric and len(vals) > 1:
        cmap = colormaps["viridis"]
        colors = [cmap(0.88 * i / (len(vals) - 1)) for i in range(len(vals))]
    else:
        cmap = colormaps["tab10"]
        colors = [cmap(i % 10) for i in range(len(vals))]
    return HueColors(field_name, vals, colors, numeric)


@dataclass
class Study:
    """Prepared results of one study (see the module docstring)."""

    runs: pd.DataFrame
    metrics: pd.DataFrame
    swept: list[str]
    task_fields: list[str]
    hue_field: str | None
    facet_fields: list[str]
    model_fields: list[str]
    layers: list[str]
    log_x: bool
    colors: HueColors
    path: Path | None = None
    study_text: str = ""
    store_info: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    # ---- selections -------------------------------------------------------------------------
    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(self.runs[TASK]))

    @property
    def hues(self) -> list[Any]:
        return self.colors.values

    @property
    def facets(self) -> list[str]:
        return list(dict.fromkeys(self.runs[FACET]))

    def ids(self, *states: str) -> list[str]:
        return self.runs.loc[self.runs[STATE].isin(states), "run_id"].astype(str).tolist()

    @property
    def learned(self) -> pd.DataFrame:
        return self.runs[self.runs[STATE] == "done"]

    def final(self, split: str, metric: str, layer: str = "", *, last: bool = False) -> pd.Series:
        """A final-summary column (NaN where the store has none)."""
        col = final_column(split, metric, layer, last=last)
        if col in self.runs:
            return pd.to_numeric(self.runs[col], errors="coerce")
        return pd.Series(np.nan, index=self.runs.index)

    def floor(self, runs: pd.DataFrame, split: str) -> float:
        """The random-feature floor of biased CKA for these runs (median over runs; NaN when
        the feature width is unknown, i.e. not an MLP)."""
        probe = PROBE_TRAIN if split == "train" else PROBE_TEST
        vals = [
            random_feature_cka(int(n), int(p), int(r))
            for n, p, r in zip(runs[probe], runs[WIDTH], runs[RANK], strict=True)
            if np.isfinite(n) and np.isfinite(p) and np.isfinite(r)
        ]
        return float(np.median(vals)) if vals else math.nan

    @functools.cached_property
    def _step0_cka(self) -> pd.DataFrame:
        m = self.metrics
        if m.empty:
            return m
        return m[(m["step"] == 0) & (m["metric"] == "cka")]

    def init_level(self, runs: pd.DataFrame, split: str, layer: str | None = None) -> float:
        """Mean CKA at step 0 (the untrained network) over ``runs``; ``layer=None``: each
        run's last layer."""
        m = self._step0_cka
        if m.empty:
            return math.nan
        sel = m[m["split"] == split]
        sel = sel[sel["run_id"].isin(runs["run_id"])]
        if layer is None:
            last = runs.set_index("run_id")[LAST]
            sel = sel[sel["layer"] == sel["run_id"].map(last)]
        else:
            sel = sel[sel["layer"] == layer]
        v = sel["value"].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        return float(v.mean()) if v.size else math.nan


def _varying(runs: pd.DataFrame, col: str) -> bool:
    if col not in runs:
        return False
    s = runs[col].astype(str)
    return s.nunique(dropna=False) > 1


def _config_columns(runs: pd.DataFrame) -> list[str]:
    return [
        c
        for c in runs.columns
        if "." in c and not c.startswith(FINAL_PREFIX) and not c.startswith("_")
    ]


def _layer_order(runs: pd.DataFrame, metrics: pd.DataFrame) -> tuple[list[str], dict[str, str]]:
    """Probe layers in forward order and each run's last (penultimate) layer.

    From the metric rows when there are any (the evaluator writes layers in forward order; runs
    of different depths are merged, each layer after its predecessor), else from the runs
    table's ``final.test_cka.<layer>`` columns in natural order (``hidden2`` before ``hidden10``).
    """
    last: dict[str, str] = {}
    order: list[str] = []
    if not metrics.empty:
        cka = metrics[(metrics["metric"] == "cka") & (metrics["layer"] != "")]
        if not cka.empty:
            first = cka[cka["step"] == cka.groupby("run_id", sort=False)["step"].transform("min")]
            first = first[first["split"] == first.groupby("run_id")["split"].transform("first")]
            for rid, layers in first.groupby("run_id", sort=False)["layer"]:
                names = list(dict.fromkeys(layers))
                last[str(rid)] = names[-1]
                for i, name in enumerate(names):
                    if name not in order:
                        order.insert(order.index(names[i - 1]) + 1 if i else 0, name)
    prefix = FINAL_PREFIX + "test_cka."
    from_cols = sorted(
        (c[len(prefix) :] for c in runs.columns if c.startswith(prefix)), key=_natural_key
    )
    if not order:
        order = from_cols
    if not last and order:
        for _, row in runs.iterrows():
            have = [n for n in order if pd.notna(row.get(prefix + n))]
            last[str(row["run_id"])] = have[-1] if have else order[-1]
    return order, last


def _dataset_meta(dataset: Any) -> tuple[float, float, float]:
    """(num_classes, n_train, n_test) of a registered dataset, NaN when unknown."""
    try:
        from ckalab.data.registry import get_info

        info = get_info(str(dataset))
        return float(info.num_classes), float(info.n_train), float(info.n_test)
    except (ValueError, KeyError, ImportError):
        return math.nan, math.nan, math.nan


def _sizes(runs: pd.DataFrame) -> pd.DataFrame:
    """Classes, target rank, train size, probe sizes and feature width of each run."""
    out = pd.DataFrame(index=runs.index)
    ks, ranks, ntr, ptr, pte, widths = [], [], [], [], [], []
    for _, r in runs.iterrows():
        total_k, full_train, full_test = _dataset_meta(r.get("data.dataset", "digits"))
        classes = _parse_classes(r.get("data.classes"))
        k = float(len(classes)) if classes else total_k
        frac = k / total_k if np.isfinite(total_k) and total_k > 0 else 1.0
        n_train = _num(r.get("data.n_train"))
        n_test = _num(r.get("data.n_test"))
        n_train = n_train if np.isfinite(n_train) else round(full_train * frac)
        n_test = n_test if np.isfinite(n_test) else round(full_test * frac)
        probe = _num(r.get("data.probe_size"))
        probe = probe if np.isfinite(probe) else 10_000.0
        ks.append(k)
        enc = r.get("data.encoding", "one_hot")
        ranks.append(float(target_rank(int(k), str(enc))) if np.isfinite(k) else math.nan)
        ntr.append(n_train)
        ptr.append(min(probe, n_train) if np.isfinite(n_train) else math.nan)
        pte.append(min(probe, n_test) if np.isfinite(n_test) else math.nan)
        arch = r.get("model.arch", "mlp")
        widths.append(_num(r.get("model.width")) if arch == "mlp" else math.nan)
    out[K], out[RANK], out[N_TRAIN] = ks, ranks, ntr
    out[PROBE_TRAIN], out[PROBE_TEST], out[WIDTH] = ptr, pte, widths
    return out


def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def prepare(
    runs: pd.DataFrame,
    metrics: pd.DataFrame | None = None,
    swept: Sequence[str] | None = None,
    *,
    path: Path | None = None,
    study_text: str = "",
    store_info: dict[str, Any] | None = None,
    missing: Sequence[str] = (),
) -> Study:
    """Classify and annotate a study's runs (see the module docstring).

    ``swept``: the fields the study varies (:func:`ckalab.study.store.swept_fields`); default:
    every configuration column that takes more than one value.
    """
    runs = runs.copy().reset_index(drop=True)
    if "run_id" not in runs:
        runs["run_id"] = pd.Series(dtype=str)
    runs["run_id"] = runs["run_id"].astype(str)
    if "status" not in runs:
        runs["status"] = "done"
    metrics = (
        metrics.copy()
        if metrics is not None
        else pd.DataFrame(columns=["run_id", "step", "epoch", "split", "metric", "layer", "value"])
    )
    if swept is None:
        swept = [c for c in _config_columns(runs) if _varying(runs, c)]
    swept = [s for s in swept if s in runs.columns]
    runs = pd.concat([runs, _sizes(runs)], axis=1)

    # state
    state = runs["status"].astype(str).where(runs["status"].isin(STATES), "failed")
    acc_col = final_column("train", "acc")
    acc = pd.to_numeric(runs[acc_col], errors="coerce") if acc_col in runs else np.nan
    k = runs[K].fillna(2.0)
    nl = did_not_learn(np.asarray(acc, dtype=float) * np.ones(len(runs)), k, runs[N_TRAIN])
    runs[STATE] = np.where((state == "done") & nl, "did not learn", state)

    task_fields = [f for f in TASK_FIELDS if f in swept]
    with_dataset = "data.dataset" in task_fields
    runs[TASK] = [
        _task_label(r.get("data.dataset"), _parse_classes(r.get("data.classes")), with_dataset)
        for _, r in runs.iterrows()
    ]
    if not task_fields and len(runs):
        runs[TASK] = runs[TASK].iloc[0] if runs[TASK].nunique() == 1 else runs[TASK]
    rest = [f for f in swept if f not in task_fields and f != SEED_FIELD]
    hue_field = next((f for f in HUE_PRIORITY if f in rest), rest[0] if rest else None)
    facet_fields = [f for f in rest if f != hue_field]
    if hue_field is not None:
        hue = runs[hue_field]
        if hue_field == "optim.readout_lr" and "optim.lr" in runs:
            hue = hue.where(hue.notna(), runs["optim.lr"])
        runs[HUE] = hue
    else:
        runs[HUE] = "all runs"
    runs[FACET] = [
        ", ".join(f"{label(f)} = {format_value(r[f])}" for f in facet_fields) or "all"
        for _, r in runs.iterrows()
    ]
    runs[TASK] = runs[TASK].astype(object)
    runs[FACET] = pd.Series(runs[FACET], index=runs.index, dtype=object)
    runs[GROUP] = [
        f"{t} | {f} | {format_value(h)}"
        for t, f, h in zip(runs[TASK], runs[FACET], runs[HUE], strict=True)
    ]
    hue_values = _sorted_unique(runs[HUE])
    colors = _hue_colors(hue_field, hue_values)
    if hue_field == "optim.lr" and _readout_lr_set(runs):
        # the readout has its own rate: "learning rate" alone would read as the only one
        colors.name = "hidden learning rate (optim.lr)"

    layers, last = _layer_order(runs, metrics)
    runs[LAST] = runs["run_id"].map(last).fillna(layers[-1] if layers else "")
    log_x = (
        "tracking.schedule" in runs
        and len(runs)
        and bool((runs["tracking.schedule"] == "geometric").mean() > 0.5)
    )
    return Study(
        runs=runs,
        metrics=metrics,
        swept=list(swept),
        task_fields=task_fields,
        hue_field=hue_field,
        facet_fields=facet_fields,
        model_fields=[f for f in rest if f.startswith("model.")],
        layers=layers,
        log_x=bool(log_x),
        colors=colors,
        path=path,
        study_text=study_text,
        store_info=dict(store_info or {}),
        missing=list(missing),
    )


def _readout_lr_set(runs: pd.DataFrame) -> bool:
    """Whether some run sets ``optim.readout_lr`` (its readout then learns at its own rate)."""
    if "optim.readout_lr" not in runs:
        return False
    return bool(pd.to_numeric(runs["optim.readout_lr"], errors="coerce").notna().any())


def _sorted_unique(s: pd.Series) -> list[Any]:
    vals = list(dict.fromkeys(v for v in s.tolist() if not _isnan(v)))
    if s.map(_isnan).any():
        vals.append(math.nan)
    try:
        return sorted(vals, key=lambda v: (_isnan(v), v))
    except TypeError:
        return sorted(vals, key=lambda v: str(v))
