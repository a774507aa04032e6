r"""The correlation table (Canatar & Pehlevan 2022, Table I) between hyperparameters and outcomes.

Rows are the hyperparameters a study varies (skip connections, augmentation, batch size, learning
rates, momentum, width, ...) followed by the outcome metrics; columns are the outcome metrics
(:data:`OUTCOMES`: final train loss, test accuracy, last-hidden-layer CKA on test and train, CKA
averaged over layers on test and train). Every cell holds:

- Pearson ``r`` and Spearman ``rho`` with their two-sided p-values (the t test with ``n - 2``
  degrees of freedom, as :func:`scipy.stats.pearsonr` and :func:`scipy.stats.spearmanr` compute
  them and equal to them to rounding, tested; computed here from :mod:`scipy.special`, whose
  import costs a third of :mod:`scipy.stats`');
- ``n``: runs with both values finite (pairwise complete);
- percentile bootstrap 95% intervals of both coefficients: runs resampled with replacement,
  :data:`N_BOOTSTRAP` seeded resamples shared by all cells (a cell with missing values resamples
  its own complete runs, seeded by the seed and the cell's names), so a cell depends only on
  its data and the seed.

Encodings (:func:`encode_hyperparameter`): booleans as 0/1; learning-rate-like fields
(:data:`LOG_SCALE_FIELDS`) as ``log10`` (a field holding zeros stays linear, with a note); an unset
``optim.readout_lr`` is the effective readout rate ``optim.lr``; text fields (architecture, class
subset) are categorical and omitted with a note, as is any field that does not vary among the
included runs. Diverged and failed runs are excluded and listed by id; runs that did not learn
(:func:`ckalab.report.chance.did_not_learn`) too, unless ``include_not_learned=True``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ckalab.metrics import summary_key
from ckalab.study.store import FINAL_PREFIX

__all__ = [
    "LOG_SCALE_FIELDS",
    "N_BOOTSTRAP",
    "OUTCOMES",
    "CorrelationTable",
    "correlate",
    "correlation_table",
    "encode_hyperparameter",
    "final_column",
]


def final_column(split: str, metric: str, layer: str = "", *, last: bool = False) -> str:
    """The runs-table column of a final summary: ``final.`` + :func:`ckalab.metrics.summary_key`."""
    return FINAL_PREFIX + summary_key(split, metric, layer, last=last)


#: The outcome columns of the table, with their labels, in order.
OUTCOMES: dict[str, str] = {
    final_column("train", "loss"): "train loss",
    final_column("test", "acc"): "test accuracy",
    final_column("test", "cka", last=True): "test CKA (last hidden)",
    final_column("train", "cka", last=True): "train CKA (last hidden)",
    final_column("test", "cka_avg"): "test CKA (layer avg)",
    final_column("train", "cka_avg"): "train CKA (layer avg)",
}

#: Learning-rate-like fields, correlated on a log10 scale.
LOG_SCALE_FIELDS: tuple[str, ...] = ("optim.lr", "optim.readout_lr", "optim.weight_decay")

#: Columns of :attr:`CorrelationTable.cells`.
CELL_COLUMNS: tuple[str, ...] = (
    "row",
    "column",
    "n",
    "pearson_r",
    "pearson_p",
    "pearson_lo",
    "pearson_hi",
    "spearman_r",
    "spearman_p",
    "spearman_lo",
    "spearman_hi",
)

#: Bootstrap resamples per cell.
N_BOOTSTRAP = 2000

#: Readable names of common hyperparameters (the dotted name otherwise).
LABELS: dict[str, str] = {
    "model.skip": "skip connections",
    "train.augment": "augmentation",
    "train.batch_size": "batch size",
    "optim.lr": "learning rate",
    "optim.readout_lr": "readout learning rate",
    "optim.momentum": "momentum",
    "optim.weight_decay": "weight decay",
    "model.width": "width",
    "model.depth": "depth",
    "model.batch_norm": "batch norm",
    "train.epochs": "epochs",
}


def label(name: str) -> str:
    """A readable label of a hyperparameter or outcome column."""
    return OUTCOMES.get(name) or LABELS.get(name, name)


def encode_hyperparameter(values: pd.Series) -> tuple[np.ndarray | None, str]:
    """Numeric values of one hyperparameter column and how they were encoded.

    Returns ``(x, encoding)``: ``encoding`` is ``"0/1"``, ``"log10"``, ``"linear"``, or the
    reason the field is left out (``x`` is None): ``"categorical"``.
    """
    name = str(values.name)
    s = values
    if s.dtype == bool or (s.dropna().map(type).isin([bool, np.bool_]).all() and s.notna().any()):
        return s.astype(float).to_numpy(), "0/1"
    x = pd.to_numeric(s, errors="coerce")
    if x.isna().sum() > s.isna().sum():  # some value is not a number
        return None, "categorical"
    arr = x.to_numpy(dtype=float)
    if name in LOG_SCALE_FIELDS:
        finite = arr[np.isfinite(arr)]
        if finite.size and (finite > 0).all():
            return np.log10(arr), "log10"
        return arr, "linear (has values <= 0, not logged)"
    return arr, "linear"


def _standardized_rows(x: np.ndarray) -> np.ndarray:
    """Each row of a (B, n) array centered and scaled to unit norm (NaN rows where constant),
    so that the Pearson r of two rows is their dot product."""
    xc = x - x.mean(axis=1, keepdims=True)
    norm = np.sqrt(np.einsum("ij,ij->i", xc, xc))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = xc / norm[:, None]
    z[~(norm > 1e-12 * max(1.0, float(np.abs(x).max(initial=0.0))))] = np.nan
    return z


def _row_dots(za: np.ndarray, zb: np.ndarray) -> np.ndarray:
    return np.clip(np.einsum("ij,ij->i", za, zb), -1.0, 1.0)


def _bootstrap_ranks(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank, as :func:`scipy.stats.rankdata`) of every
    bootstrap resample ``x[idx[b]]``, in O(B n): counts of each distinct value per resample,
    then each value's rank is the count below it plus (its count + 1) / 2."""
    uniq, inv = np.unique(x, return_inverse=True)
    b, _ = idx.shape
    u = uniq.size
    codes = inv[idx]  # (B, n) value codes
    counts = np.bincount((codes + u * np.arange(b)[:, None]).ravel(), minlength=b * u)
    counts = counts.reshape(b, u).astype(float)
    rank_of = np.cumsum(counts, axis=1) - counts + (counts + 1.0) / 2.0
    return np.take_along_axis(rank_of, codes, axis=1)


class _Resamples:
    """Bootstrap resamples of one set of runs, shared by every cell of a table: each variable's
    resampled values and ranks are standardized once, each cell is then a row-wise dot product."""

    def __init__(self, n: int, n_boot: int, seed: Any) -> None:
        self.idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def standardized(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key = id(x)
        if key not in self._cache:
            self._cache[key] = (
                _standardized_rows(x[self.idx]),
                _standardized_rows(_bootstrap_ranks(x, self.idx)),
            )
        return self._cache[key]

    def intervals(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
        zx, rx = self.standardized(x)
        zy, ry = self.standardized(y)
        return (*_interval(_row_dots(zx, zy)), *_interval(_row_dots(rx, ry)))


def _interval(samples: np.ndarray) -> tuple[float, float]:
    ok = samples[np.isfinite(samples)]
    if ok.size < max(20, samples.size // 2):
        return (np.nan, np.nan)
    lo, hi = np.percentile(ok, [2.5, 97.5])
    return float(lo), float(hi)


def _pearson(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Pearson r of two non-constant samples and its two-sided p-value: under independence
    ``t = r sqrt((n - 2) / (1 - r^2))`` follows Student's t with ``n - 2`` degrees of freedom."""
    from scipy.special import stdtr

    r = float(
        np.clip(_row_dots(_standardized_rows(x[None]), _standardized_rows(y[None]))[0], -1, 1)
    )
    dof = x.size - 2
    if abs(r) >= 1.0:
        return r, 0.0
    t = abs(r) * math.sqrt(dof / ((1.0 - r) * (1.0 + r)))
    return r, float(2.0 * stdtr(dof, -t))


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank, as :func:`scipy.stats.rankdata`)."""
    return _bootstrap_ranks(x, np.arange(x.size)[None])[0]


def correlate(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    n_boot: int = N_BOOTSTRAP,
    seed: int | Sequence[int] = 0,
    resamples: _Resamples | None = None,
) -> dict[str, float]:
    """Pearson and Spearman coefficients of two samples, pairwise complete.

    Returns ``n, pearson_r, pearson_p, pearson_lo, pearson_hi, spearman_r, spearman_p,
    spearman_lo, spearman_hi``; NaN coefficients where fewer than 3 pairs or a constant sample.
    """
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    ok = np.isfinite(xa) & np.isfinite(ya)
    if not ok.all():
        xa, ya, resamples = xa[ok], ya[ok], None  # pairwise complete: resample these runs
    n = int(xa.size)
    out = dict.fromkeys(CELL_COLUMNS[3:], np.nan)  # the statistics after row, column, n
    out = {"n": float(n), **out}
    if n < 3 or np.ptp(xa) == 0 or np.ptp(ya) == 0:
        return out
    out["pearson_r"], out["pearson_p"] = _pearson(xa, ya)
    out["spearman_r"], out["spearman_p"] = _pearson(_ranks(xa), _ranks(ya))
    if n_boot > 0:
        boot = resamples if resamples is not None else _Resamples(n, n_boot, seed)
        (
            out["pearson_lo"],
            out["pearson_hi"],
            out["spearman_lo"],
            out["spearman_hi"],
        ) = boot.intervals(xa, ya)
    return out


def _cell_seed(seed: int, row: str, col: str) -> list[int]:
    return [seed, zlib.crc32(row.encode()), zlib.crc32(col.encode())]


@dataclass
class CorrelationTable:
    """The correlation table: ``cells`` is long format, one row per (row, column) pair with the
    columns of :func:`correlate`; ``rows`` and ``columns`` give the order; ``encodings`` how each
    hyperparameter was encoded; ``excluded`` maps a reason to the run ids left out; ``notes``
    say which fields were omitted and why."""

    cells: pd.DataFrame
    rows: list[str]
    columns: list[str]
    encodings: dict[str, str] = field(default_factory=dict)
    excluded: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    n_runs: int = 0

    def matrix(self, stat: str = "pearson_r") -> pd.DataFrame:
        """One statistic as a rows x columns matrix (labels as index and columns)."""
        if self.cells.empty:
            return pd.DataFrame(index=self.rows, columns=self.columns, dtype=float)
        m = self.cells.pivot(index="row", columns="column", values=stat)
        return m.reindex(index=self.rows, columns=self.columns)

    def to_csv(self, path: str | Path) -> Path:
        """The long table (every statistic, one line per cell) as CSV."""
        path = Path(path)
        cells = self.cells.copy()
        cells.insert(1, "row_label", cells["row"].map(label))
        cells.insert(3, "column_label", cells["column"].map(label))
        cells.insert(4, "encoding", cells["row"].map(lambda r: self.encodings.get(r, "")))
        cells.to_csv(path, index=False, float_format="%.6g")
        return path

    def to_markdown(self) -> str:
        """Pearson and Spearman matrices, ``r [lo, hi]`` with stars for p < 0.05 / 0.01 / 0.001,
        followed by n, the exclusions and the notes."""
        lines: list[str] = []
        for name, key in (("Pearson r", "pearson"), ("Spearman rho", "spearman")):
            lines.append(f"### {name} [bootstrap 95% interval]")
            lines.append("")
            lines.append("| | " + " | ".join(label(c) for c in self.columns) + " |")
            lines.append("|---|" + "---|" * len(self.columns))
            for r in self.rows:
                enc = self.encodings.get(r, "")
                head = label(r) + (f" ({enc})" if enc in ("log10", "0/1") else "")
                cells = [self._cell_text(r, c, key) for c in self.columns]
                lines.append(f"| {head} | " + " | ".join(cells) + " |")
            lines.append("")
        lines.extend(f"- {t}" for t in self.summary_lines())
        return "\n".join(lines) + "\n"

    def _cell_text(self, row: str, col: str, key: str) -> str:
        sel = self.cells[(self.cells["row"] == row) & (self.cells["column"] == col)]
        if sel.empty:
            return ""
        c = sel.iloc[0]
        r, p, lo, hi = c[f"{key}_r"], c[f"{key}_p"], c[f"{key}_lo"], c[f"{key}_hi"]
        if not np.isfinite(r):
            return "–"
        stars = "***" if p < 1e-3 else "**" if p < 1e-2 else "*" if p < 0.05 else ""
        ci = f" [{lo:.2f}, {hi:.2f}]" if np.isfinite(lo) else ""
        return f"{r:.2f}{stars}{ci}"

    def summary_lines(self) -> list[str]:
        """n, exclusions and notes as plain sentences."""
        out = []
        ns = self.cells["n"].dropna().astype(int) if not self.cells.empty else pd.Series([])
        if len(ns):
            span = f"{ns.min()}" if ns.min() == ns.max() else f"{ns.min()}–{ns.max()}"
            out.append(
                f"n = {span} runs per cell (pairwise complete) of {self.n_runs} included; "
                "stars: p < 0.05 (*), 0.01 (**), 0.001 (***)."
            )
        else:
            out.append("No cell could be computed (fewer than 3 usable runs or nothing varies).")
        for reason, ids in self.excluded.items():
            if ids:
                out.append(f"Excluded ({reason}, {len(ids)}): {', '.join(ids)}.")
        out.extend(self.notes)
        return out


def correlation_table(
    runs: pd.DataFrame,
    fields: Sequence[str],
    *,
    outcomes: Mapping[str, str] | Sequence[str] = tuple(OUTCOMES),
    not_learned: Sequence[str] = (),
    include_not_learned: bool = False,
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
) -> CorrelationTable:
    """The correlation table of ``runs`` (a runs table) over the hyperparameters ``fields``.

    Runs whose ``status`` is not ``"done"`` are excluded and listed; so are the ids in
    ``not_learned`` unless ``include_not_learned``. Outcome columns missing from ``runs`` are
    left out with a note.
    """
    outcomes = list(outcomes)
    excluded: dict[str, list[str]] = {}
    status = runs["status"] if "status" in runs else pd.Series("done", index=runs.index)
    for st in ("diverged", "failed"):
        excluded[st] = sorted(runs.loc[status == st, "run_id"].astype(str))
    other = ~status.isin(["done", "diverged", "failed"])
    if other.any():
        excluded["status " + "/".join(sorted(set(status[other].astype(str))))] = sorted(
            runs.loc[other, "run_id"].astype(str)
        )
    keep = status == "done"
    if not include_not_learned and len(not_learned):
        nl = runs["run_id"].isin(list(not_learned)) & keep
        excluded["did not learn"] = sorted(runs.loc[nl, "run_id"].astype(str))
        keep &= ~nl
    df = runs.loc[keep]
    notes: list[str] = []
    columns = [c for c in outcomes if c in df.columns]
    missing = [c for c in outcomes if c not in df.columns]
    if missing:
        notes.append("Outcomes not in the store, omitted: " + ", ".join(missing) + ".")

    values: dict[str, np.ndarray] = {}
    encodings: dict[str, str] = {}
    for f in fields:
        if f not in df.columns:
            notes.append(f"{label(f)} ({f}): not in the runs table, omitted.")
            continue
        col = df[f]
        if f == "optim.readout_lr" and "optim.lr" in df.columns:
            col = col.where(col.notna(), df["optim.lr"]).rename(f)  # effective readout rate
        x, enc = encode_hyperparameter(col)
        if x is None:
            notes.append(f"{label(f)} ({f}): {enc}, omitted.")
            continue
        finite = x[np.isfinite(x)]
        if finite.size == 0 or np.ptp(finite) == 0:
            shown = col.dropna().iloc[0] if col.notna().any() else "missing"
            notes.append(f"{label(f)} ({f}): does not vary among the included runs ({shown}).")
            continue
        values[f] = x
        encodings[f] = enc
    for c in columns:
        values[c] = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float)
    rows = [f for f in fields if f in encodings] + columns
    cells = []
    shared = _Resamples(len(df), n_boot, seed) if n_boot > 0 and len(df) else None
    for r in rows:
        for c in columns:
            stats = correlate(
                values[r],
                values[c],
                n_boot=n_boot,
                seed=_cell_seed(seed, r, c),
                resamples=shared,
            )
            cells.append({"row": r, "column": c, **stats})
    table = pd.DataFrame(cells, columns=CELL_COLUMNS)
    if not table.empty:
        table["n"] = table["n"].astype(int)
    return CorrelationTable(
        cells=table,
        rows=rows,
        columns=columns,
        encodings=encodings,
        excluded=excluded,
        notes=notes,
        n_runs=len(df),
    )
