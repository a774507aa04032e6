"""Faults: SIGKILL of the driver or a worker at random points, then `ckalab run` again.

No finished run may be lost or duplicated and no half-written file read: after every kill the
store is consistent, and after a final run it equals a clean run of the same study.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ckalab.study.progress import Progress
from ckalab.study.runner import run_study
from ckalab.study.spec import load_study
from ckalab.study.store import load_results, study_run_ids

STUDY = """
[study]
name = "faults"
keep_weights = true
[data]
dataset = "digits"
classes = [3, 8]
n_train = 120
n_test = 40
probe_size = 40
[model]
width = 16
[train]
epochs = 1
batch_size = 40
[sweep]
"optim.lr" = [0.3, 0.1, 0.03, 0.01, 0.003, 0.001]
"""


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _committed(store: Path) -> dict[str, str]:
    """The committed runs (run id -> status): rows of runs.parquet (each once) and row files of
    runs/ not yet compacted into it."""
    rows: dict[str, str] = {}
    if (store / "runs.parquet").exists():
        runs = pq.read_table(store / "runs.parquet").to_pandas()
        assert runs.run_id.is_unique
        rows.update(zip(runs.run_id, runs.status, strict=True))
    for p in (store / "runs").glob("*.json") if (store / "runs").is_dir() else []:
        row = json.loads(p.read_text())
        assert p.stem == row["run_id"]
        rows[row["run_id"]] = row["status"]
    return rows


def _check_consistent(store: Path, wanted: set[str]) -> int:
    """Every committed run appears once, with a complete metrics file; nothing else is read."""
    rows = _committed(store)
    assert set(rows) <= wanted
    for rid, status in rows.items():
        assert status == "done", status
        table = pq.read_table(store / "metrics" / f"{rid}.parquet")
        assert table.num_rows > 0 and set(table.column("run_id").to_pylist()) == {rid}
        assert (store / "weights" / f"{rid}.safetensors").stat().st_size > 0
    if rows:
        runs, _ = load_results(store, metrics=[])
        assert sorted(runs.run_id) == sorted(rows)
    return len(rows)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_random_kills_lose_and_duplicate_nothing(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text(STUDY)
    ref = tmp_path / "ref"
    run_study(load_study(path, out=ref), progress=Progress())
    wanted = set(study_run_ids(ref))
    assert len(wanted) == 6

    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    rng = random.Random(1234)
    kills = 0
    counts = []
    for attempt in range(12):
        workers = 2 if attempt % 3 == 2 else 1
        cmd = [sys.executable, "-m", "ckalab", "run", str(path), "--out", str(out)]
        proc = subprocess.Popen(
            [*cmd, "--workers", str(workers)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(rng.uniform(0.5, 6.0))
        victims = [proc.pid]
        if workers == 2 and (kids := _children(proc.pid)) and rng.random() < 0.5:
            victims = [rng.choice(kids)]  # a worker: the driver retries its run
        if proc.poll() is None:
            grandchildren = _children(proc.pid)
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
            kills += 1
            if victims == [proc.pid]:
                for pid in grandchildren:  # orphaned workers of a killed driver
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        proc.wait(timeout=120)
        proc.stderr.close()
        counts.append(_check_consistent(out, wanted))
        if kills >= 10 and counts[-1] == len(wanted):
            break
    assert kills >= 10, f"only {kills} kills landed"

    result = run_study(load_study(path, out=out), progress=Progress())
    assert result.exit_code == 0
    assert _check_consistent(out, wanted) == 6
    runs_a, metrics_a = load_results(ref)
    runs_b, metrics_b = load_results(out)
    assert sorted(runs_a.run_id) == sorted(runs_b.run_id)
    key = ["run_id", "step", "split", "metric", "layer"]
    a = metrics_a.sort_values(key).reset_index(drop=True)
    b = metrics_b.sort_values(key).reset_index(drop=True)
    assert a[key].equals(b[key])
    np.testing.assert_allclose(a.value, b.value, rtol=1e-5, atol=1e-6)
    assert not list(out.rglob("*.tmp"))


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_stops_cleanly_and_resumes(tmp_path, workers):
    """SIGINT mid-study: exit 130, a resume hint, nothing half-written; running again finishes
    the study without redoing, losing or duplicating a run."""
    path = tmp_path / "study.toml"
    path.write_text(STUDY.replace("epochs = 1", "epochs = 3"))
    out = tmp_path / "store"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    cmd = [sys.executable, "-m", "ckalab", "run", str(path), "--out", str(out), "--no-report"]
    proc = subprocess.Popen(
        [*cmd, "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 180
    while proc.poll() is None and time.monotonic() < deadline:
        if (out / "runs").is_dir() and any((out / "runs").glob("*.json")):
            break  # at least one run is committed: we are mid-study
        time.sleep(0.05)
    assert proc.poll() is None, "the study finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted:" in err and "again to resume" in err and "Traceback" not in err
    assert not list(out.rglob("*.tmp")) and not (out / ".lock").exists()
    wanted = {r.run_id for r in load_study(path, out=out).runs}
    n = _check_consistent(out, wanted)
    assert 1 <= n < len(wanted)
    assert f"{n} of {len(wanted)} runs are finished and saved" in err
    assert not list((out / "runs").glob("*.json"))  # compacted on the way out
    before = {
        rid: (out / "metrics" / f"{rid}.parquet").stat().st_mtime_ns for rid in _committed(out)
    }

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"{n} already finished, {len(wanted) - n} ran now" in again.stderr
    assert _check_consistent(out, wanted) == len(wanted)
    for rid, mtime in before.items():  # the runs saved before Ctrl-C were not redone
        assert (out / "metrics" / f"{rid}.parquet").stat().st_mtime_ns == mtime
