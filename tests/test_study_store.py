"""The results store: layout, atomic commits, filters pushed into the reads, versions, lock."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

import ckalab
from ckalab.config import RunConfig, run_id
from ckalab.metrics import MetricRow, arrow_schema, rows_to_table
from ckalab.study.store import (
    FIXED_COLUMNS,
    ResultsStore,
    StoreError,
    StoreLock,
    load_results,
    make_run_row,
    read_header,
    swept_fields,
)
from ckalab.study.synthetic import write_synthetic_store


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    path = tmp_path_factory.mktemp("syn") / "store"
    return write_synthetic_store(
        path,
        runs=12,
        evaluations=6,
        pairs=[(0, 1), (4, 9), (2, 7), (3, 5)],
        lrs=(0.01, 0.1, 1.0),
        diverged_fraction=0.2,
    )


def test_layout_and_header(synthetic):
    names = {p.name for p in synthetic.iterdir()}
    assert {"store.json", "study.toml", "runs.parquet", "metrics"} <= names
    header = json.loads((synthetic / "store.json").read_text())
    assert header["format"] == "ckalab-store" and header["version"] == 2
    assert header["metrics_schema"] == 1 and header["ckalab"] == ckalab.__version__
    assert len(list((synthetic / "metrics").glob("*.parquet"))) == 12
    assert not list(synthetic.rglob("*.tmp"))


def test_runs_table_columns(synthetic):
    runs, metrics = ckalab.load_results(synthetic)
    assert list(runs.columns[: len(FIXED_COLUMNS)]) == list(FIXED_COLUMNS)
    assert len(runs) == 12 and runs.run_id.is_unique
    for col in (
        "data.dataset",
        "data.classes",
        "optim.lr",
        "optim.readout_lr",
        "model.width",
        "train.seed",
        "final.test_acc",
        "final.train_cka_last",
        "final.test_cka_avg",
        "final.test_cka.hidden1",
    ):
        assert col in runs.columns, col
    assert set(runs["data.classes"]) == {"[0,1]", "[4,9]", "[2,7]", "[3,5]"}
    assert set(runs.status) == {"done", "diverged"}
    div = runs[runs.status == "diverged"]
    assert div["final.test_acc"].isna().all() and div["diverged_at"].notna().all()
    done = runs[runs.status == "done"]
    assert done["final.test_acc"].notna().all() and done["diverged_at"].isna().all()
    assert list(metrics.columns) == ["run_id", "step", "epoch", "split", "metric", "layer", "value"]
    assert set(metrics.run_id) == set(runs.run_id)
    # the config column is the canonical JSON and the run id follows from it
    cfg = RunConfig.model_validate(json.loads(runs.config.iloc[0]))
    assert run_id(cfg) == runs.run_id.iloc[0]


def test_cka_rises_with_lr(synthetic):
    runs, _ = load_results(synthetic, runs={"status": "done"})
    by_lr = runs.groupby("optim.lr")["final.test_cka_last"].mean()
    assert by_lr.is_monotonic_increasing


def test_filters(synthetic):
    runs, metrics = load_results(
        synthetic,
        runs={"data.classes": [4, 9], "optim.lr": [0.1, 0.01]},
        metrics=["cka"],
        splits="test",
    )
    assert len(runs) == 2 and set(runs["data.classes"]) == {"[4,9]"}
    assert set(metrics.metric) == {"cka"} and set(metrics.split) == {"test"}
    assert set(metrics.run_id) == set(runs.run_id)
    runs2, _ = load_results(synthetic, runs={"data.classes": [[4, 9], [0, 1]], "optim.lr": 1.0})
    assert len(runs2) == 2
    one = runs.run_id.iloc[0]
    r, m = load_results(synthetic, run_ids=[one], layers=[""])
    assert list(r.run_id) == [one] and set(m.layer) == {""}
    with pytest.raises(StoreError, match=r"did you mean 'optim\.lr'"):
        load_results(synthetic, runs={"optim.lrr": 0.1})


def test_swept_fields(synthetic):
    assert swept_fields(synthetic) == ["data.classes", "optim.lr"]


def test_version_mismatch_is_an_error(synthetic, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(synthetic, copy)
    header = json.loads((copy / "store.json").read_text())
    header["version"] = 99
    (copy / "store.json").write_text(json.dumps(header))
    with pytest.raises(StoreError, match="upgrade ckalab"):
        load_results(copy)
    header["version"], header["metrics_schema"] = 2, 0
    (copy / "store.json").write_text(json.dumps(header))
    with pytest.raises(StoreError, match="metrics schema 0"):
        read_header(copy)
    with pytest.raises(StoreError, match="not a ckalab results store"):
        load_results(tmp_path)
    with pytest.raises(StoreError, match="does not exist"):
        load_results(tmp_path / "nope")


def _result(store, cfg, status="done", value=0.5):
    rows = [
        MetricRow(0, 0.0, "train", "loss", "", value),
        MetricRow(1, 1.0, "test", "acc", "", value),
    ]
    row = make_run_row(
        cfg,
        status=status,
        wall_time=1.0,
        steps=1,
        summaries={"test_acc": value} if status != "failed" else None,
        error="boom" if status == "failed" else None,
    )
    store.commit(row, rows_to_table(rows, row["run_id"]) if status != "failed" else None)
    return row["run_id"]


def test_commit_replaces_and_stale(tmp_path):
    store = ResultsStore.open(tmp_path / "s")
    a, b = RunConfig(), RunConfig.model_validate({"optim": {"lr": 0.5}})
    ra = _result(store, a, "failed")
    rb = _result(store, b)
    assert store.status(ra) == "failed"
    _result(store, a, "done", 0.7)  # a rerun of the failed run replaces its row
    store.write_study("[study]\nname='x'\n", name="x", run_ids=[ra], swept=[])
    reopened = ResultsStore.open(tmp_path / "s")
    assert set(reopened.rows) == {ra, rb} and reopened.status(ra) == "done"
    runs, metrics = load_results(tmp_path / "s")
    assert list(runs.run_id) == [ra]  # rb is not in the current study: stale
    assert set(metrics.run_id) == {ra}
    runs, _ = load_results(tmp_path / "s", include_stale=True)
    assert set(runs.run_id) == {ra, rb}
    assert math.isclose(runs.set_index("run_id").loc[ra, "final.test_acc"], 0.7)
    t = pq.read_table(tmp_path / "s" / "metrics" / f"{ra}.parquet")
    assert t.schema.remove_metadata() == arrow_schema().remove_metadata()


def test_row_files_and_compaction(tmp_path):
    """Committed rows live in runs/ until compaction; readers merge them with runs.parquet,
    a row file winning (newer); a row in both places (a crash mid-compaction) is read once."""
    path = tmp_path / "s"
    store = ResultsStore.open(path)
    a, b = RunConfig(), RunConfig.model_validate({"optim": {"lr": 0.5}})
    ra = _result(store, a, "failed")
    assert (path / "runs" / f"{ra}.json").is_file() and not (path / "runs.parquet").exists()
    assert store.compact() == 1
    assert not list((path / "runs").glob("*.json"))
    rb = _result(store, b)
    _result(store, a, "done", 0.7)  # the failed run redone: its row file overrides the table
    runs, metrics = load_results(path)
    assert sorted(runs.run_id) == sorted([ra, rb]) and set(metrics.run_id) == {ra, rb}
    assert runs.set_index("run_id").loc[ra, "status"] == "done"
    assert list(runs.columns[: len(FIXED_COLUMNS)]) == list(FIXED_COLUMNS)
    assert str(runs.finished_at.dtype).startswith("datetime64")
    kept = {p.name: p.read_bytes() for p in (path / "runs").glob("*.json")}
    store.compact()
    for name, raw in kept.items():  # as if killed between the table's rename and the unlinks
        (path / "runs" / name).write_bytes(raw)
    again, _ = load_results(path)
    assert sorted(again.run_id) == sorted(runs.run_id)
    reopened = ResultsStore.open(path)
    assert set(reopened.rows) == {ra, rb} and reopened.status(ra) == "done"
    reopened.compact()
    table = pq.read_table(path / "runs.parquet").to_pandas()
    assert len(table) == 2 and table.run_id.is_unique


def test_version_1_store_is_read_and_upgraded(tmp_path):
    path = tmp_path / "s"
    store = ResultsStore.open(path)
    ra = _result(store, RunConfig())
    store.compact()
    header = json.loads((path / "store.json").read_text())
    (path / "store.json").write_text(json.dumps({**header, "version": 1}))
    assert list(load_results(path)[0].run_id) == [ra]
    old = ResultsStore.open(path)
    assert old.status(ra) == "done"
    _result(old, RunConfig.model_validate({"optim": {"lr": 0.5}}))  # writing upgrades it
    assert json.loads((path / "store.json").read_text())["version"] == 2
    assert len(load_results(path)[0]) == 2


def test_refuses_foreign_directory(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a ckalab results store"):
        ResultsStore.open(tmp_path / "x")


def test_lock_refuses_second_owner_and_takes_over_stale(tmp_path):
    with StoreLock(tmp_path) as lock:
        assert lock.took_over is None
        code = (
            "import sys; from ckalab.study.store import StoreLock\n"
            "try:\n    StoreLock(sys.argv[1]).acquire()\n"
            "except Exception as e:\n    print(e); sys.exit(3)\n"
        )
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        p = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env
        )
        assert p.returncode == 3
        assert f"pid {os.getpid()}" in p.stdout and "started" in p.stdout
    # a lock file left by a dead process
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".lock").write_text(
        json.dumps(
            {"pid": dead.pid, "host": os.uname().nodename, "started": "2024-01-01T00:00:00+00:00"}
        )
    )
    with StoreLock(tmp_path) as lock:
        assert lock.took_over["pid"] == dead.pid
        assert "stale lock" in lock.describe_takeover()
    assert not (tmp_path / ".lock").exists()


def test_readable_without_ckalab(synthetic):
    duckdb = pytest.importorskip("duckdb")
    con = duckdb.connect()
    n = con.execute(
        f"SELECT count(*) FROM read_parquet('{synthetic}/metrics/*.parquet') m "
        f"JOIN read_parquet('{synthetic}/runs.parquet') r USING (run_id) "
        "WHERE m.metric = 'cka' AND r.status = 'done'"
    ).fetchall()[0][0]
    assert n > 0
