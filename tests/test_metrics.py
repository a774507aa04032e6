"""The metric schema: rows, columns, Arrow schema, summary keys."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ckalab.metrics import (
    COLUMNS,
    METRICS,
    ROW_COLUMNS,
    MetricRow,
    SummaryKey,
    arrow_schema,
    parse_summary_key,
    rows_from_columns,
    rows_from_table,
    rows_to_columns,
    rows_to_table,
    summaries_from_rows,
    summary_key,
)

names = st.sampled_from(["", "hidden1", "conv2", "block3"])
rows_strategy = st.lists(
    st.builds(
        MetricRow,
        step=st.integers(0, 2**40),
        epoch=st.floats(0, 1e6, allow_nan=False),
        split=st.sampled_from(["train", "test"]),
        metric=st.sampled_from(sorted(METRICS)),
        layer=names,
        value=st.floats(allow_nan=True, allow_infinity=True),
    ),
    max_size=20,
)


def _same(a: list[MetricRow], b: list[MetricRow]) -> bool:
    return len(a) == len(b) and all(
        x.as_tuple()[:5] == y.as_tuple()[:5]
        and (x.value == y.value or (math.isnan(x.value) and math.isnan(y.value)))
        for x, y in zip(a, b, strict=True)
    )


@given(rows_strategy)
def test_columns_roundtrip(rows: list[MetricRow]) -> None:
    cols = rows_to_columns(rows)
    assert tuple(cols) == ROW_COLUMNS
    assert _same(rows_from_columns(cols), rows)


@given(rows_strategy)
def test_arrow_roundtrip_has_the_schema(rows: list[MetricRow]) -> None:
    table = rows_to_table(rows, "abc123")
    assert table.schema.equals(arrow_schema(), check_metadata=True)
    assert tuple(table.column_names) == COLUMNS
    assert set(table.column("run_id").to_pylist()) <= {"abc123"}
    assert _same(rows_from_table(table), rows)


def test_arrow_types() -> None:
    schema = arrow_schema()
    assert schema.field("step").type == pa.int64()
    assert schema.field("value").type == pa.float64()
    assert schema.field("layer").type == pa.string()


def test_missing_column_is_named() -> None:
    cols = rows_to_columns([MetricRow(0, 0.0, "train", "loss", "", 1.0)])
    del cols["layer"]
    with pytest.raises(ValueError, match="layer"):
        rows_from_columns(cols)


@pytest.mark.parametrize(
    ("key", "parsed"),
    [
        ("train_loss", SummaryKey("train", "loss")),
        ("test_cka_avg", SummaryKey("test", "cka_avg")),
        ("test_cka.hidden1", SummaryKey("test", "cka", "hidden1")),
        ("train_cka_debiased.conv2", SummaryKey("train", "cka_debiased", "conv2")),
        ("train_cka_last", SummaryKey("train", "cka", "", True)),
        ("test_cka_debiased_last", SummaryKey("test", "cka_debiased", "", True)),
        ("train_batch_loss", SummaryKey("train", "batch_loss")),
    ],
)
def test_summary_key_grammar(key: str, parsed: SummaryKey) -> None:
    assert parse_summary_key(key) == parsed
    assert summary_key(parsed.split, parsed.metric, parsed.layer, last=parsed.last) == key


@pytest.mark.parametrize("key", ["loss", "val_loss", "train_", "train_.x"])
def test_bad_summary_keys_are_named(key: str) -> None:
    with pytest.raises(ValueError, match="summary key"):
        parse_summary_key(key)


def test_summary_key_refuses_unknown_split() -> None:
    with pytest.raises(ValueError, match="split"):
        summary_key("val", "loss")


def test_summaries_take_the_last_evaluation() -> None:
    rows = [
        MetricRow(0, 0.0, "train", "loss", "", 2.0),
        MetricRow(0, 0.0, "train", "cka", "hidden1", 0.1),
        MetricRow(5, 1.0, "train", "batch_loss", "", 1.5),
        MetricRow(10, 2.0, "train", "loss", "", 1.0),
        MetricRow(10, 2.0, "train", "cka", "hidden1", 0.7),
        MetricRow(10, 2.0, "train", "batch_loss", "", 1.1),
    ]
    out = summaries_from_rows(rows, ["hidden1"])
    assert out == {
        "train_loss": 1.0,
        "train_cka.hidden1": 0.7,
        "train_cka_last": 0.7,
        "train_batch_loss": 1.1,
    }
    for key in out:
        parse_summary_key(key)
    diverged = summaries_from_rows(rows, ["hidden1"], diverged=True)
    assert set(diverged) >= {"train_loss", "test_loss", "train_acc", "test_acc"}
    assert all(math.isnan(v) for v in diverged.values())
