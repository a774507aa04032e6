"""`ckalab run / ls / show`: resume semantics, failures, stale runs, the lock, exit codes."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from ckalab.cli import main
from ckalab.config import ConfigError
from ckalab.study.store import StoreLock, load_results

BASE = """
[study]
name = "tiny"
out = "store"
[data]
dataset = "digits"
n_train = 200
n_test = 40
probe_size = 40
[model]
width = 16
[train]
epochs = 1
batch_size = 50
"""


def write(tmp_path, sweep):
    path = tmp_path / "study.toml"
    path.write_text(BASE + "[sweep]\n" + sweep)
    return path


def run(*args):
    return main(["run", *map(str, args)])


@pytest.mark.slow
def test_resume_and_extend(tmp_path, capsys):
    study = write(tmp_path, '"optim.lr" = [0.1, 0.01]\n')
    store = tmp_path / "store"
    assert run(study) == 0
    runs, metrics = load_results(store)
    assert len(runs) == 2 and set(runs.status) == {"done"}
    assert set(metrics.run_id) == set(runs.run_id)
    assert len(list((store / "weights").glob("*.safetensors"))) == 2
    mtimes = {p.name: p.stat().st_mtime_ns for p in (store / "metrics").iterdir()}
    capsys.readouterr()

    assert run(study) == 0  # a finished study does nothing
    err = capsys.readouterr().err
    assert "2 already finished, 0 ran now" in err
    assert {p.name: p.stat().st_mtime_ns for p in (store / "metrics").iterdir()} == mtimes

    write(tmp_path, '"optim.lr" = [0.1, 0.01, 0.05]\n')  # one more value: one more run
    assert run(study) == 0
    assert "2 already finished, 1 ran now" in capsys.readouterr().err
    runs, _ = load_results(store)
    assert len(runs) == 3 and runs.run_id.is_unique

    write(tmp_path, '"optim.lr" = [0.1]\n')  # two runs leave the study: kept, not returned
    assert run(study) == 0
    assert "2 runs in the store are not in this study" in capsys.readouterr().err
    assert len(load_results(store)[0]) == 1
    assert len(load_results(store, include_stale=True)[0]) == 3
    assert main(["ls", str(store)]) == 0
    assert "1 runs: 1 done" in capsys.readouterr().out
    assert main(["ls", str(store), "--all", "--sort", "final.test_acc"]) == 0
    assert "in_study" in capsys.readouterr().out


def _failing_train(monkeypatch, n_test):
    """The trainer raises ConfigError for the runs with ``data.n_test == n_test`` (a problem
    only training finds)."""
    import ckalab.train

    real = ckalab.train.train

    def train(config, **kw):
        if config.data.n_test == n_test:
            raise ConfigError("a problem only the trainer finds")
        return real(config, **kw)

    monkeypatch.setattr(ckalab.train, "train", train)


@pytest.mark.slow
def test_failed_and_diverged_runs(tmp_path, capsys, monkeypatch):
    _failing_train(monkeypatch, 60)
    study = write(
        tmp_path, '"data.classes" = [[0, 1]]\n"data.n_test" = [40, 60]\n"optim.lr" = [0.1, 1e6]\n'
    )
    assert run(study) == 1
    err = capsys.readouterr().err
    assert "2 failed" in err and "--rerun-failed" in err
    runs, _ = load_results(tmp_path / "store")
    by = runs.set_index(["data.n_test", "optim.lr"])
    assert by.loc[(60, 0.1), "status"] == "failed"
    failed = runs[runs.status == "failed"]
    assert failed.error.str.contains("ConfigError").all()
    assert failed.traceback.str.contains("Traceback").all()
    assert failed["final.test_acc"].isna().all()
    diverged = runs[(runs.status == "diverged")]
    assert list(diverged["optim.lr"]) == [1e6] and diverged.diverged_at.notna().all()
    assert len(runs[runs.status == "done"]) == 1

    rid = failed.run_id.iloc[0]
    assert main(["show", str(tmp_path / "store"), rid[:6]]) == 0
    out = capsys.readouterr().out
    assert "failed" in out and "Traceback" in out and '"n_test": 60' in out

    # plain rerun leaves failed runs alone; --rerun-failed retries them (they fail again)
    assert run(study) == 1
    assert "0 ran now" in capsys.readouterr().err
    before = pq.read_table(tmp_path / "store" / "runs.parquet").to_pandas()
    assert run(study, "--rerun-failed") == 1
    assert "2 ran now" in capsys.readouterr().err
    after = pq.read_table(tmp_path / "store" / "runs.parquet").to_pandas()
    assert len(after) == len(before) == 4 and after.run_id.is_unique


def test_data_sizes_checked_before_anything(tmp_path, capsys):
    # a digit pair has 288 training and 72 test examples: both problems, every run, at once
    study = write(
        tmp_path,
        '"data.classes" = [[0, 1]]\n"data.n_test" = [40, 100]\n"train.batch_size" = [50, 4096]\n',
    )
    study.write_text(study.read_text().replace("n_train = 200\n", ""))
    for extra in (["--dry-run"], []):
        assert run(study, *extra) == 2
        err = capsys.readouterr().err
        assert (
            "sweep.\"data.n_test\"[1] = 100: more than the 72 test examples of 'digits' classes "
            "[0, 1] in runs #2, #3" in err
        )
        assert (
            'sweep."train.batch_size"[1] = 4096: larger than the training split (288 examples) '
            "in runs #1, #3" in err
        )
        assert not (tmp_path / "store").exists()


@pytest.mark.slow
def test_second_driver_refused(tmp_path, capsys):
    study = write(tmp_path, '"optim.lr" = [0.1]\n')
    store = tmp_path / "store"
    assert run(study) == 0
    capsys.readouterr()
    with StoreLock(store):
        # flock is per open file description: a second acquire in this process is refused too
        assert run(study) == 2
    err = capsys.readouterr().err
    assert "in use by another ckalab run" in err and "pid" in err and "started" in err


@pytest.mark.slow
def test_store_of_another_version(tmp_path, capsys):
    study = write(tmp_path, '"optim.lr" = [0.1]\n')
    assert run(study) == 0
    header_path = tmp_path / "store" / "store.json"
    header = json.loads(header_path.read_text())
    header["metrics_schema"] = 2
    header_path.write_text(json.dumps(header))
    capsys.readouterr()
    assert run(study) == 2
    assert "upgrade ckalab" in capsys.readouterr().err


def test_refuses_to_write_into_foreign_directory(tmp_path, capsys):
    study = write(tmp_path, '"optim.lr" = [0.1]\n')
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "thesis.tex").write_text("x")
    assert run(study) == 2
    assert "not a ckalab results store" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["thesis.tex"]


@pytest.mark.parametrize("cmd", [["run"], ["ls"], ["show"]])
def test_help_has_examples(cmd, capsys):
    with pytest.raises(SystemExit):
        main([*cmd, "--help"])
    assert "example" in capsys.readouterr().out
