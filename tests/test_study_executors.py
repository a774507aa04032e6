"""Executors against real engines: local processes, a local Ray instance, submitit's local
executor, and a real single-node Slurm (.ci/start-slurm.sh) where one is running."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest

from ckalab.study.executors import CRASH_ENV
from ckalab.study.executors.local import LocalExecutor
from ckalab.study.progress import Progress
from ckalab.study.runner import run_study
from ckalab.study.spec import load_study
from ckalab.study.store import load_results

STUDY = """
[study]
name = "exec"
[data]
dataset = "digits"
classes = [4, 9]
n_train = 120
n_test = 40
probe_size = 40
[model]
width = 16
[train]
epochs = 1
batch_size = 40
[sweep]
"optim.lr" = [0.1, 0.03, 0.01, 0.003]
"""


@pytest.fixture(scope="module")
def study_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("exec") / "study.toml"
    path.write_text(STUDY)
    return path


@pytest.fixture(scope="module")
def reference(study_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "store"
    result = run_study(load_study(study_path, out=out), progress=Progress())
    assert result.exit_code == 0 and result.done == 4
    return load_results(out)


def _same_results(reference, out):
    runs_a, m_a = reference
    runs_b, m_b = load_results(out)
    assert sorted(runs_a.run_id) == sorted(runs_b.run_id)
    assert set(runs_b.status) == {"done"}
    key = ["run_id", "step", "split", "metric", "layer"]
    a = m_a.sort_values(key).reset_index(drop=True)
    b = m_b.sort_values(key).reset_index(drop=True)
    assert a[key].equals(b[key])
    np.testing.assert_allclose(a.value, b.value, rtol=1e-5, atol=1e-6)


class Events(Progress):
    def __init__(self):
        super().__init__()
        self.events = []

    def event(self, ev):
        super().event(ev)
        self.events.append(ev)


@pytest.mark.slow
def test_local_two_workers(study_path, reference, tmp_path):
    progress = Events()
    out = tmp_path / "store"
    result = run_study(load_study(study_path, out=out), workers=2, progress=progress)
    assert result.exit_code == 0
    _same_results(reference, out)
    kinds = {(e.kind, e.run_id) for e in progress.events}
    assert {rid for k, rid in kinds if k == "epoch"} == set(reference[0].run_id)


def test_local_threads_fit_the_cores():
    ex = LocalExecutor(workers=2)
    assert ex.workers * ex.threads <= max(2, os.cpu_count() or 1)


@pytest.mark.slow
def test_local_worker_death_retried_then_failed(study_path, reference, tmp_path, monkeypatch):
    victim = sorted(reference[0].run_id)[0]
    monkeypatch.setenv(CRASH_ENV, victim)  # spawned workers inherit the environment
    out = tmp_path / "store"
    result = run_study(load_study(study_path, out=out), workers=2, progress=Progress())
    assert result.exit_code == 1
    runs, _ = load_results(out)
    status = dict(zip(runs.run_id, runs.status, strict=True))
    assert status.pop(victim) == "failed" and set(status.values()) == {"done"}
    assert "died twice" in runs.set_index("run_id").loc[victim, "error"]


@pytest.mark.slow
def test_ray(study_path, reference, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'ckalab[ray]')")
    victim = sorted(reference[0].run_id)[1]
    monkeypatch.setenv(CRASH_ENV, victim)  # the local Ray instance's workers inherit it
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "store"
        result = run_study(load_study(study_path, out=out), executor="ray", progress=Progress())
    finally:
        ray.shutdown()
    assert result.exit_code == 1 and result.failed == 1 and result.done == 3
    runs, _ = load_results(out)
    row = runs.set_index("run_id").loc[victim]
    assert row.status == "failed" and "retries" in row.error
    # the rest are exactly the reference runs
    ok = runs[runs.status == "done"].run_id
    _, ref_metrics = reference
    _, m = load_results(out, run_ids=list(ok))
    a = ref_metrics[ref_metrics.run_id.isin(ok)].sort_values(
        ["run_id", "step", "split", "metric", "layer"]
    )
    b = m.sort_values(["run_id", "step", "split", "metric", "layer"])
    np.testing.assert_allclose(a.value.to_numpy(), b.value.to_numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_submitit_local(study_path, reference, tmp_path):
    pytest.importorskip(
        "submitit", reason="submitit is not installed (pip install 'ckalab[slurm]')"
    )
    from ckalab.study.executors.slurm import SlurmExecutor
    from ckalab.study.spec import SlurmSettings

    out = tmp_path / "store"
    ex = SlurmExecutor(SlurmSettings(runs_per_task=2), folder=out / ".slurm", cluster="local")
    result = run_study(load_study(study_path, out=out), executor=ex, progress=Progress())
    assert result.exit_code == 0
    _same_results(reference, out)
    assert (out / ".slurm").is_dir()


def _slurm_running() -> str | None:
    if shutil.which("sbatch") is None or shutil.which("srun") is None:
        return "Slurm is not installed (.ci/run installs slurm-wlm and starts it as root)"
    try:
        p = subprocess.run(
            ["timeout", "15", "srun", "-t", "1", "--immediate=10", "true"],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "Slurm does not answer (start it with .ci/start-slurm.sh)"
    if p.returncode != 0:
        return "Slurm does not answer srun (start it with .ci/start-slurm.sh)"
    return None


@pytest.mark.slow
def test_real_slurm(study_path, reference, tmp_path):
    pytest.importorskip(
        "submitit", reason="submitit is not installed (pip install 'ckalab[slurm]')"
    )
    reason = _slurm_running()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "store"
    study = load_study(study_path, out=out)
    settings = study.settings.model_copy(
        update={
            "slurm": study.settings.slurm.model_copy(update={"runs_per_task": 2, "time_min": 5})
        }
    )
    study = type(study)(**{**study.__dict__, "settings": settings})
    result = run_study(study, executor="slurm", progress=Progress())
    assert result.exit_code == 0, result.failures
    _same_results(reference, out)
    logs = list((out / ".slurm").rglob("*_log.out"))
    assert len(logs) == 2  # 4 runs, 2 per array task: one array of 2 tasks
