"""Study files: validation (every problem one line, with its TOML path) and expansion."""

from __future__ import annotations

import pytest

from ckalab.cli import main
from ckalab.config import run_id
from ckalab.study.spec import StudyError, load_study, parse_study
from ckalab.study.synthetic import classic_study_toml


def _problems(tmp_path, text):
    path = tmp_path / "study.toml"
    path.write_text(text)
    with pytest.raises(StudyError) as info:
        load_study(path)
    return info.value.problems


def test_no_sweep_is_one_run(tmp_path):
    study = parse_study({"data": {"dataset": "digits"}}, base_dir=tmp_path)
    assert len(study.runs) == 1 and study.swept == []
    assert study.out == (tmp_path / "results" / "study").resolve()


def test_classic_study_expands_to_135_runs(tmp_path):
    (tmp_path / "classic.toml").write_text(classic_study_toml())
    study = load_study(tmp_path / "classic.toml")
    assert len(study.runs) == 135 and study.swept == ["data.classes", "optim.lr"]
    cfg = study.runs[0].config
    assert cfg.data.classes == (0, 1) and cfg.optim.readout_lr == 0.1
    assert cfg.model.width == 1024 and cfg.train.epochs == 2048 and cfg.tracking.every == 4
    assert len({r.run_id for r in study.runs}) == 135
    # the resolved file expands to the same runs
    (tmp_path / "resolved.toml").write_text(study.resolved_toml())
    again = load_study(tmp_path / "resolved.toml")
    assert [r.run_id for r in again.runs] == [r.run_id for r in study.runs]
    assert again.out == study.out


def test_zip_and_seeds(tmp_path):
    study = parse_study(
        {
            "sweep": {
                "optim.lr": [0.1, 0.2],
                "zip": [{"optim.momentum": [0.0, 0.9], "optim.nesterov": [False, True]}],
                "seeds": 3,
            }
        }
    )
    assert len(study.runs) == 2 * 2 * 3
    assert study.swept == ["optim.lr", "optim.momentum", "optim.nesterov", "train.seed"]
    pairs = {(r.config.optim.momentum, r.config.optim.nesterov) for r in study.runs}
    assert pairs == {(0.0, False), (0.9, True)}
    assert {r.config.train.seed for r in study.runs} == {0, 1, 2}
    assert all(r.run_id == run_id(r.config) for r in study.runs)


def test_nested_sweep_keys(tmp_path):
    study = parse_study({"sweep": {"optim": {"lr": [0.1, 0.2]}}})
    assert study.swept == ["optim.lr"] and len(study.runs) == 2


def test_every_problem_reported_with_its_path(tmp_path):
    problems = _problems(
        tmp_path,
        """
[study]
executr = "local"
[data]
dataset = "digits"
clases = [1, 2]
[optim]
momentum = 2
[sweep]
"optim.lr" = [0.1, 0.01, -0.1]
"data.classes" = [[0, 1], [4, 12]]
"model.widht" = [3]
"train.epochs" = []
[[sweep.zip]]
"optim.weight_decay" = [0.0, 0.1]
"optim.eps" = [1e-8]
[modle]
x = 1
""",
    )
    expected = [
        "modle: unknown section (did you mean 'model'?)",
        "study.executr: unknown key (did you mean 'executor'?)",
        "data.clases: unknown field (did you mean 'classes'?)",
        "sweep.\"model.widht\": unknown run field (did you mean 'model.width'?)",
        'sweep."train.epochs" = []: empty list (give at least one value)',
        "sweep.zip[0]: zipped lists must have equal lengths (optim.weight_decay has 2, "
        "optim.eps has 1)",
        'sweep."optim.lr"[2] = -0.1: must be > 0',
        "sweep.\"data.classes\"[1] = [4, 12]: dataset 'digits' has no class 12; its classes "
        "are 0..9",
        "optim.momentum = 2: must be < 1",
    ]
    assert sorted(problems) == sorted(expected)


def test_type_errors_and_list_hint(tmp_path):
    problems = _problems(tmp_path, '[train]\nepochs = "many"\n[sweep]\n"data.classes" = [4, 9]\n')
    assert any(p.startswith('train.epochs = "many": ') for p in problems)
    assert any("the values of data.classes are lists" in p for p in problems)


def test_cross_field_and_duplicates(tmp_path):
    problems = _problems(
        tmp_path, '[sweep]\n"optim.momentum" = [0.0, 0.9]\n"optim.nesterov" = [true]\n'
    )
    assert problems == [
        "run #0 (optim.momentum=0.0, optim.nesterov=true): optim: nesterov needs optimizer "
        "'sgd' with momentum > 0"
    ]
    problems = _problems(tmp_path, '[sweep]\n"train.device" = ["cpu", "auto"]\n')
    assert len(problems) == 1 and "duplicates run #0" in problems[0]


def test_tracked_layers_checked_before_any_run(tmp_path):
    """A tracking.layers name the model lacks is found by validation (exit 2 at --dry-run),
    not by the trainer: for the base run, and per run when the architecture is swept."""
    problems = _problems(tmp_path, '[tracking]\nlayers = ["hidden3"]\n[model]\ndepth = 2\n')
    assert problems == [
        "tracking.layers = ['hidden3']: unknown layer 'hidden3'; this model (mlp, depth 2) "
        "has ['hidden1', 'hidden2']"
    ]
    problems = _problems(
        tmp_path,
        '[data]\ndataset = "digits"\n[tracking]\nlayers = ["pool"]\n'
        '[sweep]\n"model.arch" = ["cnn", "mlp"]\n',
    )
    assert len(problems) == 1 and problems[0].startswith('run #1 (model.arch="mlp"): tracking')


def test_seeds_problems(tmp_path):
    assert _problems(tmp_path, "[sweep]\nseeds = 0\n") == ["sweep.seeds = 0: must be >= 1"]
    assert _problems(tmp_path, "[sweep]\nseeds = [1, 1]\n") == [
        "sweep.seeds = [1, 1]: duplicate seeds"
    ]
    problems = _problems(tmp_path, '[sweep]\n"train.seed" = [0, 1]\nseeds = 2\n')
    assert problems == ['sweep.seeds: train.seed is already swept at sweep."train.seed"']


def test_invalid_toml(tmp_path):
    problems = _problems(tmp_path, "[study\n")
    assert len(problems) == 1 and problems[0].startswith("invalid TOML")


def test_cli_bad_study_exit_2_nothing_created(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text('[study]\nout = "res"\n[sweep]\n"optim.lr" = [0.1, -1.0]\n')
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert 'sweep."optim.lr"[1] = -1.0: must be > 0' in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


def test_cli_dry_run(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text(
        '[data]\ndataset = "digits"\n[train]\nepochs = 2\nbatch_size = 100\n'
        '[sweep]\n"optim.lr" = [0.1, 0.01]\n"data.classes" = [[0, 1], [4, 9]]\n'
    )
    assert main(["run", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "run_id" in out and "optim.lr" in out and "[4,9]" in out
    assert "4 runs" in out and "training steps" in out and "evaluations" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]
