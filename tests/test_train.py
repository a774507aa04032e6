"""The training run: metrics layout, repeatability, tracking neutrality, divergence, resume."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from ckalab.alignment import cka, one_hot, signed_targets
from ckalab.config import ConfigError, OptimConfig, RunConfig, TrackingConfig
from ckalab.data import Split, Task
from ckalab.metrics import MetricRow
from ckalab.models import MLP
from ckalab.optim import build_optimizer, lr_factor
from ckalab.tracking import EvalSet, Evaluator, batch_cka, tracking_steps
from ckalab.train import RunResult, resolve_device, train

# ----------------------------------------------------------------------------------------------
# Helpers: tiny synthetic tasks
# ----------------------------------------------------------------------------------------------


def _split(x: torch.Tensor, labels: torch.Tensor, k: int, encoding: str) -> Split:
    if encoding == "one_hot":
        y = one_hot(labels, k)
    elif encoding == "signed":
        y = signed_targets(labels)
    else:
        y = labels.clone()
    return Split(x, y, labels)


def synthetic_task(
    *,
    n_train: int = 60,
    n_test: int = 30,
    k: int = 2,
    encoding: str = "one_hot",
    image: bool = False,
    probe_train: int | None = None,
) -> Task:
    """A linearly separable task with ``k`` classes: 16 features or 1x4x4 images."""
    g = torch.Generator().manual_seed(123)
    w = torch.randn(16, k, generator=g)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, 16, generator=g)
        return x, (x @ w).argmax(1)

    (xtr, ltr), (xte, lte) = draw(n_train), draw(n_test)
    if image:
        xtr, xte = xtr.view(-1, 1, 4, 4), xte.view(-1, 1, 4, 4)
    train_split = _split(xtr, ltr, k, encoding)
    test_split = _split(xte, lte, k, encoding)
    probe = train_split if probe_train is None else train_split.subset(range(probe_train))
    return Task(
        name="synthetic",
        classes=tuple(range(k)),
        encoding=encoding,
        input_shape=tuple(xtr.shape[1:]),
        image_shape=(1, 4, 4),
        train=train_split,
        test=test_split,
        probe_train=probe,
        probe_test=test_split,
    )


def config(**sections: dict[str, Any]) -> RunConfig:
    base: dict[str, dict[str, Any]] = {
        "model": {"arch": "mlp", "depth": 2, "width": 8},
        "optim": {"lr": 0.05, "readout_lr": 0.1},
        "train": {"batch_size": 16, "epochs": 3, "device": "cpu"},
        "tracking": {"schedule": "epochs"},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return RunConfig.model_validate(base)


def assert_same_weights(a: RunResult, b: RunResult) -> None:
    assert a.state_dict.keys() == b.state_dict.keys()
    for key, value in a.state_dict.items():
        assert torch.equal(value, b.state_dict[key]), key


def rows(result: RunResult, metric: str, split: str = "train", layer: str = "") -> list[float]:
    return [
        r.value
        for r in result.metrics
        if r.metric == metric and r.split == split and r.layer == layer
    ]


# ----------------------------------------------------------------------------------------------
# A basic run
# ----------------------------------------------------------------------------------------------


def test_run_records_the_metrics_layout() -> None:
    seen: list[MetricRow] = []
    result = train(config(), task=synthetic_task(), on_metrics=seen.extend)
    assert result.status == "done" and result.diverged_at is None
    assert result.steps_per_epoch == 4 and result.steps == 12
    assert seen == result.metrics
    evaluated = sorted({r.step for r in result.metrics if r.metric == "loss"})
    assert evaluated == [0, 4, 8, 12]
    at_end = {(r.split, r.metric, r.layer) for r in result.metrics if r.step == 12}
    for split in ("train", "test"):
        assert {(split, "loss", ""), (split, "acc", "")} <= at_end
        for metric in ("cka", "cka_debiased"):
            assert {(split, metric, "hidden1"), (split, metric, "hidden2")} <= at_end
            assert (split, f"{metric}_avg", "") in at_end
            assert (split, f"{metric}_layers", "") in at_end
    assert ("train", "batch_loss", "") in at_end
    assert all(r.epoch == r.step / 4 for r in result.metrics)
    loss = rows(result, "loss")
    assert loss[-1] < loss[0]
    s = result.summaries
    assert s["train_loss"] == loss[-1]
    assert s["test_cka_last"] == s["test_cka.hidden2"]
    assert s["train_cka_avg"] == pytest.approx(
        (s["train_cka.hidden1"] + s["train_cka.hidden2"]) / 2
    )
    assert s["train_cka_layers"] == s["test_cka_debiased_layers"] == 2
    assert 0 <= s["test_acc"] <= 1
    cols = result.metrics_columns()
    assert list(cols) == ["step", "epoch", "split", "metric", "layer", "value"]
    assert len(cols["value"]) == len(result.metrics)


def test_tracked_cka_matches_the_alignment_library() -> None:
    task = synthetic_task()
    result = train(config(train={"epochs": 1}), task=task)
    model = MLP(16, 2, depth=2, width=8)
    model.load_state_dict(result.state_dict)
    with torch.no_grad():
        _, probes = model.eval().forward_with_probes(task.test.x)
    for layer in ("hidden1", "hidden2"):
        expected = float(cka(probes[layer], task.test.y))
        debiased = float(cka(probes[layer], task.test.y, debiased=True))
        assert result.summaries[f"test_cka.{layer}"] == pytest.approx(expected, rel=1e-5)
        assert result.summaries[f"test_cka_debiased.{layer}"] == pytest.approx(debiased, rel=1e-5)


def test_repeatable_bit_for_bit() -> None:
    cfg = config(
        optim={"momentum": 0.9, "nesterov": True, "weight_decay": 1e-3, "schedule": "cosine"},
        tracking={"batch_cka": True},
    )
    a = train(cfg, task=synthetic_task())
    b = train(cfg, task=synthetic_task())
    assert_same_weights(a, b)
    assert a.metrics == b.metrics
    c = train(config(train={"seed": 1}), task=synthetic_task())
    assert not torch.equal(a.state_dict["readout.weight"], c.state_dict["readout.weight"])


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_tracking_does_not_change_the_trajectory(arch: str) -> None:
    task = synthetic_task(image=arch == "cnn")
    model = {"arch": arch, "depth": 2, "width": 4}
    off = train(config(model=model, tracking={"schedule": "none"}), task=task)
    on = train(
        config(model=model, tracking={"schedule": "geometric", "batch_cka": True}), task=task
    )
    assert_same_weights(off, on)
    assert len(on.metrics) > len(off.metrics)
    assert rows(off, "batch_loss") == rows(on, "batch_loss")
    assert off.summaries.keys() == {"train_batch_loss"}


def test_steps_mode_and_schedules() -> None:
    result = train(
        config(train={"steps": 6}, tracking={"schedule": "steps", "every": 5}),
        task=synthetic_task(),
    )
    assert result.steps == 6
    assert sorted({r.step for r in result.metrics if r.metric == "loss"}) == [0, 5, 6]
    assert [r.step for r in result.metrics if r.metric == "batch_loss"] == [4, 6]


def test_tracking_steps() -> None:
    def steps(**kw: Any) -> list[int]:
        return tracking_steps(TrackingConfig(**kw), steps_per_epoch=10, total_steps=35)

    assert steps(schedule="epochs") == [0, 10, 20, 30, 35]
    assert steps(schedule="epochs", every=2) == [0, 20, 35]
    assert steps(schedule="steps", every=15) == [0, 15, 30, 35]
    assert steps(schedule="geometric") == [0, 1, 2, 4, 8, 16, 32, 35]
    assert steps(schedule="final") == [0, 35]
    assert steps(schedule="none") == []


def test_lr_schedules() -> None:
    cfg = RunConfig().optim
    assert lr_factor(cfg, 7, 10, 100) == 1.0
    warm = cfg.model_copy(update={"warmup_steps": 4})
    assert [lr_factor(warm, t, 10, 100) for t in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    step = cfg.model_copy(update={"schedule": "step", "step_epochs": 2, "gamma": 0.5})
    assert [lr_factor(step, t, 10, 100) for t in (0, 19, 20, 45)] == [1.0, 1.0, 0.5, 0.25]
    cos = cfg.model_copy(update={"schedule": "cosine", "min_lr_factor": 0.1})
    assert lr_factor(cos, 0, 10, 100) == 1.0
    assert lr_factor(cos, 50, 10, 100) == pytest.approx(0.55)
    assert lr_factor(cos, 100, 10, 100) == pytest.approx(0.1)


def test_per_group_learning_rates() -> None:
    task = synthetic_task()
    cfg = config(optim={"lr": 0.5, "readout_lr": 1e-12})
    model = MLP(16, 2, depth=2, width=8)
    opt = build_optimizer(model, cfg.optim)
    assert [(g["name"], g["lr"]) for g in opt.param_groups] == [
        ("features", 0.5),
        ("readout", 1e-12),
    ]
    init = train(config(train={"steps": 1}, optim={"lr": 1e-12, "readout_lr": 1e-12}), task=task)
    result = train(cfg, task=task)
    torch.testing.assert_close(
        result.state_dict["readout.weight"], init.state_dict["readout.weight"]
    )
    assert not torch.allclose(
        result.state_dict["blocks.hidden1.linear.weight"],
        init.state_dict["blocks.hidden1.linear.weight"],
    )


@pytest.mark.parametrize(
    ("encoding", "loss", "optimizer"),
    [
        ("index", "cross_entropy", "adam"),
        ("one_hot", "cross_entropy", "sgd"),
        ("signed", "mse", "sgd"),
    ],
)
def test_losses_and_encodings(encoding: str, loss: str, optimizer: str) -> None:
    task = synthetic_task(encoding=encoding)
    result = train(
        config(
            data={"encoding": encoding},
            train={"loss": loss, "epochs": 5},
            optim={"optimizer": optimizer, "lr": 0.01 if optimizer == "adam" else 0.1},
        ),
        task=task,
    )
    assert result.status == "done"
    assert result.summaries["train_acc"] > 0.7
    assert math.isfinite(result.summaries["train_cka_avg"])
    if encoding == "signed":
        assert result.state_dict["readout.weight"].shape == (1, 8)


def test_three_classes_and_probe_subset() -> None:
    result = train(config(), task=synthetic_task(k=3, probe_train=20))
    assert result.status == "done"
    assert result.state_dict["readout.weight"].shape == (3, 8)
    assert math.isfinite(result.summaries["train_cka_debiased_avg"])


def test_resnet_runs() -> None:
    result = train(
        config(
            model={"arch": "resnet", "depth": 1, "width": 2},
            train={"epochs": 1},
            tracking={"spatial": "mean"},
        ),
        task=synthetic_task(image=True),
    )
    assert result.status == "done"
    assert result.probe_layers[0] == "stem" and result.probe_layers[-1] == "pool"


def test_tracked_layer_subset() -> None:
    result = train(config(tracking={"layers": ["hidden2"]}), task=synthetic_task())
    assert {r.layer for r in result.metrics} == {"", "hidden2"}


# ----------------------------------------------------------------------------------------------
# Bad input, divergence, degenerate layers
# ----------------------------------------------------------------------------------------------


def test_batch_larger_than_the_split_fails_before_training() -> None:
    seen: list[MetricRow] = []
    with pytest.raises(ConfigError, match=r"train\.batch_size = 100: larger than the training"):
        train(config(train={"batch_size": 100}), task=synthetic_task(), on_metrics=seen.extend)
    assert seen == []
    bad_layers = {"model": {"depth": 2}, "tracking": {"layers": ["hidden9"]}}
    with pytest.raises(ConfigError, match=r"tracking\.layers = \['hidden9'\]: unknown layer"):
        train(bad_layers, task=synthetic_task())
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        train({"optim": {"lr": -1}}, task=synthetic_task())


def test_unavailable_device_is_a_configuration_error(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as info:
        train(config(train={"device": "cuda"}), task=synthetic_task())
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("train.device = 'cuda': CUDA is not available on this machine")
    assert "available: 'auto', 'cpu'" in message
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(
        ConfigError, match=r"'cuda:2': this machine has 2 CUDA device\(s\); .*'cuda:1'"
    ):
        resolve_device("cuda:2")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    assert resolve_device("cpu") == torch.device("cpu")


def test_divergence_ends_the_run_quietly() -> None:
    result = train(
        config(optim={"lr": 1e6, "readout_lr": 1e6}, train={"epochs": 4}),
        task=synthetic_task(),
    )
    assert result.status == "diverged"
    assert result.diverged_at is not None and result.diverged_at <= result.steps
    assert rows(result, "loss")  # step 0 was recorded
    assert all(math.isnan(v) for v in result.summaries.values())
    assert "test_acc" in result.summaries


def test_dead_layer_gives_nan_without_warning() -> None:
    model = MLP(16, 2, depth=2, width=4)
    with torch.no_grad():
        model.blocks["hidden1"].linear.weight.zero_()
        model.blocks["hidden1"].linear.bias.fill_(-1.0)  # ReLU(-1) = 0: a dead layer
    task = synthetic_task()
    s = task.train
    evaluator = Evaluator(
        [EvalSet("train", s.x, s.y, s.labels, None, s.y)],
        loss="mse",
        layers=("hidden1", "hidden2"),
        batch_size=7,
    )
    out = {(r.metric, r.layer): r.value for r in evaluator(model, 0, 0.0)}
    assert math.isnan(out["cka", "hidden1"]) and math.isnan(out["cka_debiased", "hidden1"])
    # hidden2 sees a constant input: dead too. No layer defined: the average is NaN.
    assert math.isnan(out["cka", "hidden2"])
    assert math.isnan(out["cka_avg", ""]) and out["cka_layers", ""] == 0
    assert math.isnan(out["cka_debiased_avg", ""]) and out["cka_debiased_layers", ""] == 0
    assert math.isfinite(out["loss", ""])
    assert model.training


def test_layer_averages_skip_undefined_layers_and_count_the_rest() -> None:
    model = MLP(16, 2, depth=3, width=4)
    with torch.no_grad():
        model.blocks["hidden3"].linear.weight.zero_()  # a constant (dead) last layer
    s = synthetic_task().train
    evaluator = Evaluator(
        [EvalSet("train", s.x, s.y, s.labels, None, s.y)],
        loss="mse",
        layers=("hidden1", "hidden2", "hidden3"),
        batch_size=16,
    )
    out = {(r.metric, r.layer): r.value for r in evaluator(model, 0, 0.0)}
    for metric in ("cka", "cka_debiased"):
        assert math.isnan(out[metric, "hidden3"])
        assert out[f"{metric}_layers", ""] == 2
        mean = (out[metric, "hidden1"] + out[metric, "hidden2"]) / 2
        assert out[f"{metric}_avg", ""] == pytest.approx(mean)


def test_batch_cka_matches_alignment() -> None:
    g = torch.Generator().manual_seed(0)
    for n, p in ((8, 3), (16, 40), (5, 5)):
        x = torch.randn(n, p, generator=g)
        y = one_hot(torch.arange(n) % 2, 2)
        assert float(batch_cka(x, y)) == pytest.approx(float(cka(x, y)), rel=1e-5)
    assert math.isnan(float(batch_cka(torch.ones(4, 3), y[:4])))


# ----------------------------------------------------------------------------------------------
# Checkpoints and resume
# ----------------------------------------------------------------------------------------------


class Killed(Exception):
    pass


def count_training_steps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the training steps actually executed (each computes one training loss)."""
    import ckalab.train as train_module

    calls = [0]
    real = train_module.compute_loss

    def counting(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "compute_loss", counting)
    return calls


@pytest.mark.slow
def test_killed_and_resumed_run_is_bit_for_bit_equal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ckalab.checkpoint import load_checkpoint

    task = synthetic_task()
    cfg = config(
        optim={"momentum": 0.9, "schedule": "cosine", "warmup_steps": 3},
        train={"epochs": 5},
        tracking={"batch_cka": True},
        checkpoint={"dir": str(tmp_path), "every_epochs": 1},
    )
    plain = train(cfg.model_copy(update={"checkpoint": RunConfig().checkpoint}), task=task)
    assert plain.steps == 20 and plain.steps_per_epoch == 4

    def kill_at_end_of_epoch_4(rows: list[MetricRow]) -> None:
        if any(r.step == 16 for r in rows):  # before epoch 4's checkpoint is written
            raise Killed

    steps = count_training_steps(monkeypatch)
    with pytest.raises(Killed):
        train(cfg, task=task, on_metrics=kill_at_end_of_epoch_4)
    assert steps[0] == 16
    assert (tmp_path / "checkpoint.pt").is_file()
    assert not list(tmp_path.glob("*.tmp"))
    saved = load_checkpoint(tmp_path / "checkpoint.pt")
    assert saved["step"] == 12  # taken at the end of epoch 3
    assert saved["wall_time"] > 0  # the killed segment's time is kept

    steps[0] = 0
    later: list[MetricRow] = []
    resumed = train(cfg, task=task, on_metrics=later.extend)  # automatic resume
    assert steps[0] == 20 - 12  # only the remaining steps ran
    assert_same_weights(plain, resumed)
    assert resumed.metrics == plain.metrics
    assert resumed.summaries == plain.summaries
    assert min(r.step for r in later) > 12
    assert resumed.wall_time > saved["wall_time"]  # summed over both segments

    # A finished run resumes at its end: no step runs, same result.
    steps[0] = 0
    again = train(cfg, task=task)
    assert steps[0] == 0
    assert_same_weights(plain, again)
    assert again.metrics == plain.metrics


def test_resume_from_an_explicit_file_and_mismatch(tmp_path: Path) -> None:
    task = synthetic_task()
    cfg = config(checkpoint={"dir": str(tmp_path / "a"), "every_epochs": 2})
    first = train(cfg, task=task)
    path = tmp_path / "a" / "checkpoint.pt"
    other = cfg.model_copy(update={"checkpoint": RunConfig().checkpoint})
    resumed = train(other, task=task, resume_from=path)
    assert_same_weights(first, resumed)
    changed = config(optim={"lr": 0.01})
    with pytest.raises(ValueError, match=r"differs in optim\.lr"):
        train(changed, task=task, resume_from=path)


def test_no_resume_when_disabled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    task = synthetic_task()
    cfg = config(checkpoint={"dir": str(tmp_path), "resume": False}, train={"epochs": 1})
    a = train(cfg, task=task)
    steps = count_training_steps(monkeypatch)
    b = train(cfg, task=task)  # the finished checkpoint is there, but ignored: a fresh run
    assert steps[0] == a.steps == 4
    assert a.metrics == b.metrics


# ----------------------------------------------------------------------------------------------
# A real (offline) dataset
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_trains_on_digits(arch: str) -> None:
    result = train(
        {
            "data": {"dataset": "digits", "classes": [0, 1]},
            "model": {"arch": arch, "depth": 1, "width": 16},
            "optim": {"lr": 0.1, "momentum": 0.9},
            "train": {"epochs": 6, "batch_size": 32, "augment": True, "device": "auto"},
            "tracking": {"batch_cka": True},
        }
    )
    assert result.status == "done"
    assert result.summaries["test_acc"] > 0.8
    assert 0 < result.summaries["test_cka_last"] <= 1
    assert rows(result, "batch_cka", layer=result.probe_layers[-1])


def test_bad_data_settings_name_the_section() -> None:
    with pytest.raises(ConfigError, match=r"data\.classes = \[0, 42\].*no class 42"):
        train({"data": {"dataset": "digits", "classes": [0, 42]}})
    # Known only once the class subset is loaded: still a ConfigError, before the first step.
    with pytest.raises(ConfigError, match=r"data: n_train=1000 is larger than the \d+ examples"):
        train({"data": {"dataset": "digits", "classes": [0, 1], "n_train": 1000}})
    with pytest.raises(ConfigError, match=r"train\.batch_size = 5000"):
        train({"data": {"dataset": "digits", "classes": [0, 1]}, "train": {"batch_size": 5000}})


def test_a_truncated_dataset_file_is_a_data_error_not_a_configuration_error(
    tmp_path: Path,
) -> None:
    from ckalab.data import DataError, clear_cache

    folder = tmp_path / "mnist"
    folder.mkdir()
    header = b"\x00\x00\x08\x03" + (60_000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    (folder / "train-images-idx3-ubyte").write_bytes(header + b"\x00" * 1234)  # truncated
    labels = b"\x00\x00\x08\x01" + (60_000).to_bytes(4, "big") + b"\x00" * 60_000
    (folder / "train-labels-idx1-ubyte").write_bytes(labels)
    clear_cache()
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: truncated") as info:
        train({"data": {"dataset": "mnist", "classes": [0, 1], "data_dir": str(tmp_path)}})
    assert not isinstance(info.value, ConfigError)


def test_one_pass_and_separate_probe_pass_agree() -> None:
    model = MLP(16, 2, depth=2, width=4)
    s = synthetic_task().train
    same = EvalSet("train", s.x, s.y, s.labels, None, s.y)
    separate = EvalSet("train", s.x, s.y, s.labels, s.x.clone(), s.y)
    kw: dict[str, Any] = {"loss": "mse", "layers": ("hidden1", "hidden2"), "batch_size": 16}
    a = Evaluator([same], **kw)(model, 3, 0.5)
    b = Evaluator([separate], **kw)(model, 3, 0.5)
    assert [(r.metric, r.layer) for r in a] == [(r.metric, r.layer) for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert ra.value == pytest.approx(rb.value, rel=1e-6)
    assert {r.step for r in a} == {3} and {r.epoch for r in a} == {0.5}


def test_checkpoint_files(tmp_path: Path) -> None:
    from ckalab.checkpoint import load_checkpoint, save_checkpoint

    path = save_checkpoint(tmp_path / "sub" / "c.pt", {"a": torch.ones(2), "b": [1, "x"]})
    state = load_checkpoint(path)
    assert torch.equal(state["a"], torch.ones(2)) and state["b"] == [1, "x"]
    assert [p.name for p in path.parent.iterdir()] == ["c.pt"]
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_unreadable_checkpoints_say_why_and_how_to_recover(tmp_path: Path) -> None:
    from ckalab.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    good = save_checkpoint(tmp_path / "good.pt", {"a": torch.ones(1000)}).read_bytes()

    import datetime

    torch.save({"a": datetime.date(2020, 1, 1)}, tmp_path / "foreign.pt")  # pickled object
    cases = {
        "empty.pt": (b"", r"is empty \(0 bytes\)"),
        "garbage.pt": (b"not a checkpoint", r"not a checkpoint file"),
        "cut.pt": (good[: len(good) // 2], r"truncated"),
        "foreign.pt": (None, r"objects other than tensors"),
    }
    for name, (data, reason) in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match=reason) as info:
            load_checkpoint(tmp_path / name)
        message = str(info.value)
        assert "\n" not in message and name in message
        assert "delete it" in message and "checkpoint.resume = false" in message
        assert "weights_only" not in message


def test_a_corrupt_checkpoint_stops_the_run_until_deleted_or_ignored(tmp_path: Path) -> None:
    from ckalab.checkpoint import CheckpointError

    (tmp_path / "checkpoint.pt").write_bytes(b"")
    cfg = config(train={"epochs": 1}, checkpoint={"dir": str(tmp_path)})
    with pytest.raises(CheckpointError, match=r"checkpoint\.resume = false"):
        train(cfg, task=synthetic_task())
    ignored = config(train={"epochs": 1}, checkpoint={"dir": str(tmp_path), "resume": False})
    assert train(ignored, task=synthetic_task()).status == "done"
    assert train(cfg, task=synthetic_task()).status == "done"  # overwritten: resumes now


def test_stale_temporary_checkpoints_are_removed(tmp_path: Path) -> None:
    import os
    import time

    from ckalab.checkpoint import STALE_AFTER, load_checkpoint, save_checkpoint

    path = tmp_path / "checkpoint.pt"
    stale = tmp_path / ".checkpoint.pt.0123abcd.tmp"  # left by a save killed mid-write
    live = tmp_path / ".checkpoint.pt.4567ef01.tmp"  # being written right now
    other = tmp_path / ".other.pt.89abcdef.tmp"  # another file's: not ours to remove
    for p in (stale, live, other):
        p.write_bytes(b"x" * 100)
    old = time.time() - STALE_AFTER - 5
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    save_checkpoint(path, {"a": 1})
    assert not stale.exists() and live.exists() and other.exists()
    os.utime(live, (old, old))
    load_checkpoint(path)
    assert not live.exists() and other.exists()


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_checkpoints_respect_the_umask(tmp_path: Path, umask: int) -> None:
    import os
    import stat

    from ckalab.checkpoint import save_checkpoint

    previous = os.umask(umask)
    try:
        path = save_checkpoint(tmp_path / "checkpoint.pt", {"a": 1})
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_optimizer_falls_back_when_torch_has_no_fused_cpu_step(monkeypatch) -> None:
    """torch < 2.4 refuses fused=True on the CPU; the optimizer is then built unfused."""
    real_sgd = torch.optim.SGD
    calls: list[object] = []

    def old_torch_sgd(params, **kwargs):
        calls.append(kwargs.get("fused"))
        if kwargs.get("fused"):
            raise RuntimeError("`fused=True` requires all the params to be on CUDA")
        return real_sgd(params, **kwargs)

    monkeypatch.setattr(torch.optim, "SGD", old_torch_sgd)
    opt = build_optimizer(MLP(4, 2, depth=1, width=3), OptimConfig(lr=0.1, readout_lr=0.5))
    assert calls == [True, None]
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
