r"""The metric schema: the one home of the metric row, its columns and their encodings.

Every measured value is one row in long format (DESIGN "Metrics layout")::

    run_id, step, epoch, split, metric, layer, value

- ``step`` (int64): updates done when measured; 0 is the initialization.
- ``epoch`` (float64): ``step / steps_per_epoch``.
- ``split`` (string): ``"train"`` or ``"test"``.
- ``metric`` (string): one of :data:`METRICS` (``loss``, ``acc``, ``cka``, ...).
- ``layer`` (string): a probe layer (or parameter group) name, ``""`` for whole-model metrics.
- ``value`` (float64): the value; NaN where it is undefined (a degenerate layer).

Inside a run (:class:`MetricRow`) the ``run_id`` is implicit; the results store adds it as the
first column. The Arrow schema (:func:`arrow_schema`) is the on-disk type of every metrics file.

Final values of a run ("summaries") are a flat mapping whose keys follow one grammar::

    {split}_{metric}            whole-model metrics       train_loss, test_acc, test_cka_avg
    {split}_{metric}.{layer}    per-layer metrics         test_cka.hidden1
    {split}_{metric}_last       the last tracked layer    train_cka_last

:func:`summary_key` writes them and :func:`parse_summary_key` reads them back. The only
(de)serialization of metric rows lives here: :func:`rows_to_columns` /
:func:`rows_from_columns` (plain lists, e.g. inside a checkpoint) and :func:`rows_to_table` /
:func:`rows_from_table` (Arrow).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import astuple, dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # pyarrow is imported only by the functions that need it
    import pyarrow as pa

__all__ = [
    "COLUMNS",
    "METRICS",
    "ROW_COLUMNS",
    "SPLITS",
    "MetricRow",
    "SummaryKey",
    "arrow_schema",
    "parse_summary_key",
    "rows_from_columns",
    "rows_from_table",
    "rows_to_columns",
    "rows_to_table",
    "summaries_from_rows",
    "summary_key",
]

#: Version of the metric layout; bumped whenever a column, dtype or key grammar changes.
SCHEMA_VERSION = 1

#: The columns of a metric row inside a run, in order.
ROW_COLUMNS: tuple[str, ...] = ("step", "epoch", "split", "metric", "layer", "value")
#: The columns of a metrics table in the results store, in order.
COLUMNS: tuple[str, ...] = ("run_id", *ROW_COLUMNS)

SPLITS: tuple[str, ...] = ("train", "test")

#: Every metric name a run can record, with its meaning (per layer or whole model).
METRICS: dict[str, str] = {
    "loss": "loss on the whole split, eval mode (layer '')",
    "acc": "accuracy on the whole split, eval mode (layer '')",
    "cka": "biased linear CKA of the layer with the targets on the probe set",
    "cka_debiased": "debiased linear CKA (unbiased HSIC) of the layer with the targets",
    "cka_avg": "mean of cka over the tracked layers with a defined value (layer '')",
    "cka_debiased_avg": "mean of cka_debiased over the tracked layers with a defined value",
    "cka_layers": "number of layers averaged in cka_avg (layer '')",
    "cka_debiased_layers": "number of layers averaged in cka_debiased_avg (layer '')",
    "batch_loss": "mean training-batch loss over the epoch (split train, layer '')",
    "batch_cka": "mean per-batch CKA of the last tracked layer over the epoch (split train)",
    "ntk_alignment": "centered alignment of the empirical NTK with the target kernel",
    "ntk_alignment_uncentered": "uncentered kernel-target alignment of the empirical NTK",
    "ntk_distance_init": "kernel distance of the empirical NTK to the one at step 0",
    "ntk_distance_prev": "kernel distance of the empirical NTK to the previous evaluation",
}


@dataclass(frozen=True, slots=True)
class MetricRow:
    """One measured value of a run (long format, without the run id)."""

    step: int
    epoch: float
    split: str
    metric: str
    layer: str
    value: float

    def as_tuple(self) -> tuple[int, float, str, str, str, float]:
        return astuple(self)  # type: ignore[return-value]


@functools.cache
def arrow_schema() -> pa.Schema:
    """The Arrow schema of a metrics table (:data:`COLUMNS`): ``run_id, split, metric, layer``
    strings, ``step`` int64, ``epoch`` and ``value`` float64."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("run_id", pa.string(), nullable=False),
            pa.field("step", pa.int64(), nullable=False),
            pa.field("epoch", pa.float64(), nullable=False),
            pa.field("split", pa.string(), nullable=False),
            pa.field("metric", pa.string(), nullable=False),
            pa.field("layer", pa.string(), nullable=False),
            pa.field("value", pa.float64(), nullable=True),
        ],
        metadata={"ckalab.metrics_schema": str(SCHEMA_VERSION)},
    )


def rows_to_columns(rows: Iterable[MetricRow]) -> dict[str, list[Any]]:
    """Rows as plain columns ``{name: [values]}`` over :data:`ROW_COLUMNS` (checkpoint-safe:
    only ints, floats and strings)."""
    cols: dict[str, list[Any]] = {name: [] for name in ROW_COLUMNS}
    lists = [cols[name] for name in ROW_COLUMNS]
    for row in rows:
        for target, v in zip(lists, row.as_tuple(), strict=True):
            target.append(v)
    return cols


def rows_from_columns(cols: Mapping[str, Sequence[Any]]) -> list[MetricRow]:
    """The inverse of :func:`rows_to_columns`; raises ``ValueError`` on missing columns."""
    missing = [name for name in ROW_COLUMNS if name not in cols]
    if missing:
        raise ValueError(f"metric columns missing: {missing}")
    return [
        MetricRow(int(s), float(e), str(sp), str(m), str(la), float(v))
        for s, e, sp, m, la, v in zip(*(cols[name] for name in ROW_COLUMNS), strict=True)
    ]


def rows_to_table(rows: Iterable[MetricRow], run_id: str) -> pa.Table:
    """An Arrow table of ``rows`` with :func:`arrow_schema`, ``run_id`` in every row."""
    import pyarrow as pa

    cols = rows_to_columns(rows)
    n = len(cols["step"])
    return pa.table({"run_id": [run_id] * n, **cols}, schema=arrow_schema())


def rows_from_table(table: pa.Table) -> list[MetricRow]:
    """Metric rows from an Arrow table with (at least) :data:`ROW_COLUMNS`."""
    return rows_from_columns(table.select(list(ROW_COLUMNS)).to_pydict())


class SummaryKey(NamedTuple):
    """A parsed summary key: ``split``, ``metric``, ``layer`` (``""`` for whole-model metrics)
    and ``last`` (the key names the last tracked layer, ``{split}_{metric}_last``)."""

    split: str
    metric: str
    layer: str = ""
    last: bool = False


def summary_key(split: str, metric: str, layer: str = "", *, last: bool = False) -> str:
    """The summary key of a final value: ``{split}_{metric}``, ``{split}_{metric}.{layer}`` or
    ``{split}_{metric}_last``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if last:
        return f"{split}_{metric}_last"
    return f"{split}_{metric}" + (f".{layer}" if layer else "")


def parse_summary_key(key: str) -> SummaryKey:
    """The inverse of :func:`summary_key`; raises ``ValueError`` naming a key outside the
    grammar. ``_last`` is read as the last-layer form only for per-layer metrics (``cka``,
    ``cka_debiased``, ``batch_cka``, ...) that have no metric of that name."""
    split, sep, rest = key.partition("_")
    if split not in SPLITS or not sep or not rest:
        raise ValueError(
            f"summary key {key!r}: expected '{{split}}_{{metric}}[.{{layer}}]' with split one of "
            f"{SPLITS}"
        )
    metric, _, layer = rest.partition(".")
    if not metric:
        raise ValueError(f"summary key {key!r}: empty metric name")
    if not layer and metric.endswith("_last") and metric not in METRICS:
        return SummaryKey(split, metric.removesuffix("_last"), "", True)
    return SummaryKey(split, metric, layer, False)


def summaries_from_rows(
    rows: Sequence[MetricRow], layers: Sequence[str], *, diverged: bool = False
) -> dict[str, float]:
    """Flat final values of a run (keys by :func:`summary_key`) from its last evaluation.

    The metrics of the last step that has a ``loss`` row; ``{split}_{metric}_last`` repeats the
    last of ``layers`` (the penultimate representation); ``train_batch_loss`` is the last
    epoch's mean batch loss. ``diverged``: every value NaN (and at least the loss and accuracy
    keys present), so a diverged run never passes for a finished one.
    """
    out: dict[str, float] = {}
    evals = [r for r in rows if r.metric == "loss"]
    if evals:
        last = max(r.step for r in evals)
        for r in rows:
            if r.step != last or r.metric.startswith("batch_"):
                continue
            out[summary_key(r.split, r.metric, r.layer)] = r.value
            if layers and r.layer == layers[-1]:
                out[summary_key(r.split, r.metric, last=True)] = r.value
    batch = [r for r in rows if r.metric == "batch_loss"]
    if batch:
        out[summary_key("train", "batch_loss")] = batch[-1].value
    if diverged:
        out = dict.fromkeys(out, math.nan)
        for split in SPLITS:
            for metric in ("loss", "acc"):
                out.setdefault(summary_key(split, metric), math.nan)
    return out
