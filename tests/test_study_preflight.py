"""Pre-flight: split sizes checked against the data before anything is created or trained."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ckalab.cli import main
from ckalab.data import registry
from ckalab.data.sources import is_available, load_split
from ckalab.study import preflight
from ckalab.study.progress import Progress
from ckalab.study.runner import run_study
from ckalab.study.spec import StudyError, load_study, parse_study

STUDY = """
[study]
name = "pre"
out = "store"
[data]
dataset = "digits"
n_test = 40
[train]
epochs = 1
batch_size = 64
[sweep]
"data.classes" = [[0, 1], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]]
"data.n_train" = [100, 1000]
"""


@pytest.mark.parametrize("name", sorted(registry.DATASETS))
def test_registered_class_counts_match_the_data(name):
    info = registry.get_info(name)
    assert len(info.train_counts) == len(info.test_counts) == info.num_classes
    assert sum(info.train_counts) == info.n_train and sum(info.test_counts) == info.n_test
    if not is_available(name):
        pytest.skip(f"{name} is not available locally")
    for split in ("train", "test"):
        _, labels = load_split(name, split)
        assert tuple(np.bincount(labels, minlength=info.num_classes)) == info.class_counts(split)


def test_problems_name_the_toml_path_and_runs(tmp_path):
    (tmp_path / "s.toml").write_text(STUDY)
    with pytest.raises(StudyError) as info:
        load_study(tmp_path / "s.toml")
    assert info.value.problems == [
        "sweep.\"data.n_train\"[1] = 1000: more than the 288 train examples of 'digits' "
        "classes [0, 1] in run #1"
    ]


def test_base_and_default_values(tmp_path):
    data = {"data": {"dataset": "digits", "classes": [0, 1], "n_train": 40}}
    with pytest.raises(StudyError, match=r"train.batch_size \(default\) = 128: larger than the "):
        parse_study(data, base_dir=tmp_path)
    data["train"] = {"batch_size": 50}
    with pytest.raises(StudyError, match=r"\n  train.batch_size = 50: larger than the training"):
        parse_study(data, base_dir=tmp_path)
    data["train"] = {"batch_size": 40}
    assert len(parse_study(data, base_dir=tmp_path).runs) == 1


@pytest.fixture
def unregistered_digits(monkeypatch):
    """``digits`` as if the registry did not know its class counts and its files had to be
    downloaded first."""
    info = registry.get_info("digits")
    bare = dataclasses.replace(info, train_counts=(), test_counts=())
    monkeypatch.setitem(registry._REGISTRY, "digits", bare)
    monkeypatch.setattr("ckalab.data.sources.is_available", lambda *a, **k: False)


def test_data_that_needs_a_download(tmp_path, capsys, unregistered_digits):
    path = tmp_path / "s.toml"
    path.write_text(STUDY)
    study = load_study(path)  # not checked: no download during validation
    assert study.unchecked_data == ("digits",)
    assert main(["run", str(path), "--dry-run"]) == 0
    assert "split sizes of dataset 'digits' were not checked" in capsys.readouterr().err
    with pytest.raises(StudyError, match=r'sweep."data.n_train"\[1\] = 1000: more than the 288'):
        run_study(study, progress=Progress())  # checked (loaded) before the first step
    assert not (tmp_path / "store").exists()
    assert main(["run", str(path)]) == 2
    assert "more than the 288 train examples" in capsys.readouterr().err
    assert not (tmp_path / "store").exists()


def test_labels_loaded_once_per_split(tmp_path, monkeypatch, unregistered_digits):
    calls = []
    real = load_split

    def counting(name, split, **kw):
        calls.append((name, split))
        return real(name, split, **kw)

    monkeypatch.setattr("ckalab.data.sources.load_split", counting)
    path = tmp_path / "s.toml"
    path.write_text(STUDY.replace("1000]", "200]"))
    study = load_study(path)
    check = preflight.check_data_sizes(study.runs, study.base, load=True)
    assert check.problems == [] and check.unchecked == ()
    assert sorted(calls) == [("digits", "test"), ("digits", "train")]
