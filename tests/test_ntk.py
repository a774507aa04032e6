"""The empirical NTK: against an explicit autograd loop, its structure, memory-bounded blocks,
neutrality (no weight, buffer, mode or random state changes), alignment, and tracking."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from ckalab.alignment import one_hot
from ckalab.config import ConfigError, NTKTrackingConfig, RunConfig
from ckalab.data import Split
from ckalab.models import CNN, MLP, ResNet
from ckalab.ntk import (
    NTKTracker,
    balanced_subset,
    empirical_ntk,
    kernel_distance,
    ntk_alignment,
    ntk_groups,
    plan_ntk,
    target_kernel,
)
from ckalab.train import train

METHODS = ["jacobian", "vp"]


def reference_ntk(
    model: nn.Module, x: torch.Tensor, groups: dict[str, tuple[str, ...]]
) -> dict[str, torch.Tensor]:
    """Full NTK per group from one ``torch.autograd.grad`` per example and output (eval mode)."""
    model.eval()
    named = dict(model.named_parameters())
    rows: dict[str, list[torch.Tensor]] = {g: [] for g in groups}
    for i in range(x.shape[0]):
        out = model(x[i : i + 1])[0]
        for o in range(out.shape[0]):
            for g, names in groups.items():
                grads = torch.autograd.grad(
                    out[o], [named[n] for n in names], retain_graph=True, allow_unused=True
                )
                flat = [
                    torch.zeros_like(named[n]).reshape(-1) if gr is None else gr.reshape(-1)
                    for n, gr in zip(names, grads, strict=True)
                ]
                rows[g].append(torch.cat(flat))
    return {g: torch.stack(r) @ torch.stack(r).T for g, r in rows.items()}


def trace_of(full: torch.Tensor, o: int) -> torch.Tensor:
    n = full.shape[0] // o
    return full.reshape(n, o, n, o).diagonal(dim1=1, dim2=3).sum(-1)


def tiny_mlp() -> tuple[nn.Module, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    model = MLP(6, 3, depth=2, width=7, activation="tanh", generator=g).double()
    return model, torch.randn(9, 6, generator=g, dtype=torch.float64)


def tiny_cnn(batch_norm: bool = True) -> tuple[nn.Module, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    model = CNN((2, 6, 6), 2, depth=2, width=3, batch_norm=batch_norm, generator=g).double()
    if batch_norm:  # non-trivial running statistics
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.5, 0.5, generator=g)
                    m.running_var.uniform_(0.5, 2.0, generator=g)
                    m.weight.uniform_(0.5, 1.5, generator=g)
                    m.bias.uniform_(-0.5, 0.5, generator=g)
    return model, torch.randn(7, 2, 6, 6, generator=g, dtype=torch.float64)


# ----------------------------------------------------------------------------------------------
# Against the explicit loop
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "method"),
    [(tiny_mlp, m) for m in [*METHODS, "loop"]] + [(tiny_cnn, m) for m in METHODS],
    ids=["mlp-jacobian", "mlp-vp", "mlp-loop", "cnn-jacobian", "cnn-vp"],
)
def test_matches_the_explicit_autograd_loop(make: Any, method: str) -> None:
    model, x = make()
    groups = ntk_groups(model)
    ref = reference_ntk(model, x, groups)
    o = 3 if make is tiny_mlp else 2
    full = empirical_ntk(model, x, kind="full", method=method)
    trace = empirical_ntk(model, x, kind="trace", method=method)
    assert full.method == trace.method == method
    assert full.kernel.shape == (x.shape[0] * o,) * 2 and trace.kernel.shape == (x.shape[0],) * 2
    assert list(full.groups) == list(groups)
    for g, k in ref.items():
        torch.testing.assert_close(full.groups[g], k, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(trace.groups[g], trace_of(k, o), rtol=1e-10, atol=1e-12)
    whole = sum(ref.values())
    torch.testing.assert_close(full.kernel, whole, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(full.trace().kernel, trace.kernel, rtol=1e-10, atol=1e-12)


def test_groups_default_and_validation() -> None:
    model, _ = tiny_mlp()
    assert ntk_groups(model) == {
        "hidden1": ("blocks.hidden1.linear.weight", "blocks.hidden1.linear.bias"),
        "hidden2": ("blocks.hidden2.linear.weight", "blocks.hidden2.linear.bias"),
        "readout": ("readout.weight", "readout.bias"),
    }
    resnet = ResNet((3, 8, 8), 2, width=4)
    assert list(ntk_groups(resnet)) == ["stem", "block1", "block2", "block3", "readout"]
    seq = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert ntk_groups(seq) == {"0": ("0.weight", "0.bias"), "2": ("2.weight", "2.bias")}
    with pytest.raises(ValueError, match="no parameter 'nope'"):
        ntk_groups(seq, {"a": ["nope"]})
    with pytest.raises(ValueError, match="in two groups"):
        ntk_groups(seq, {"a": ["0.weight"], "b": ["0.weight"]})
    with pytest.raises(ValueError, match="empty"):
        ntk_groups(seq, {"a": []})


def test_custom_groups_on_a_plain_module_hold_the_rest_fixed() -> None:
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    groups = {"first": ("0.weight",), "last": ("2.weight", "2.bias")}
    ntk = empirical_ntk(seq, x, groups=groups, kind="full")
    ref = reference_ntk(seq, x, groups)
    torch.testing.assert_close(ntk.kernel, ref["first"] + ref["last"])


# ----------------------------------------------------------------------------------------------
# Structure
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["trace", "full"])
def test_groups_sum_to_the_whole_and_the_kernel_is_psd(method: str, kind: str) -> None:
    model, x = tiny_cnn()
    ntk = empirical_ntk(model, x, kind=kind, method=method)
    torch.testing.assert_close(sum(ntk.groups.values()), ntk.kernel, rtol=0, atol=0)
    for k in [ntk.kernel, *ntk.groups.values()]:
        torch.testing.assert_close(k, k.T, rtol=1e-12, atol=1e-14)
        scale = float(k.diagonal().abs().max())
        assert float(torch.linalg.eigvalsh(k).min()) >= -1e-10 * scale


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["trace", "full"])
def test_blocked_equals_unblocked(method: str, kind: str) -> None:
    model, x = tiny_mlp()
    x = torch.cat([x, x.flip(0) * 0.5])  # n = 18
    whole = empirical_ntk(model, x, kind=kind, method=method)
    big = plan_ntk(model, x, kind=kind)
    assert big.block_jacobian == big.n and big.block_vp == big.n
    small = plan_ntk(model, x, kind=kind, memory_budget=40_000 if kind == "trace" else 130_000)
    assert 1 < small.block_jacobian < small.n and small.block_vp < small.n
    blocked = empirical_ntk(model, x, kind=kind, method=method, plan=small)
    torch.testing.assert_close(blocked.kernel, whole.kernel, rtol=1e-12, atol=1e-13)
    for g in whole.groups:
        torch.testing.assert_close(blocked.groups[g], whole.groups[g], rtol=1e-12, atol=1e-13)


def test_plan_measures_flops_and_refuses_a_tiny_budget() -> None:
    model = MLP(784, 2, width=1024)
    plan = plan_ntk(model, torch.zeros(512, 784))
    assert plan.num_params == 784 * 1024 + 1024 + 2 * 1024 + 2
    assert plan.forward_flops == 2 * (784 * 1024 + 1024 * 2)
    # 512 x 6.4 MB > 1 GiB: the contraction would recompute Jacobians; the products do not.
    assert not plan.resident and plan.method == "vp"
    assert plan_ntk(model, torch.zeros(128, 784)).method == "jacobian"  # resident
    resnet = ResNet((3, 32, 32), 10, width=4)  # convolutions: slow under vmap, contraction wins
    assert plan_ntk(resnet, torch.zeros(64, 3, 32, 32), kind="full").method == "jacobian"
    assert plan.block_jacobian * 2 * 2 * plan.num_params * 4 < plan.memory_budget
    wide_out = MLP(20, 50, width=64)  # many outputs, cheap forward: products win the full NTK
    assert plan_ntk(wide_out, torch.zeros(64, 20), kind="full").method == "vp"
    assert plan_ntk(wide_out, torch.zeros(64, 20), kind="trace").method == "jacobian"
    with pytest.raises(ValueError, match=r"memory_budget .* too small"):
        plan_ntk(model, torch.zeros(8, 784), memory_budget=1 << 20)


def _counted(fn: Any) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


class _Bilinear(nn.Module):
    """A model with a product outside any leaf module (the cost model must count it)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(5, 4)
        self.mix = nn.Parameter(torch.ones(4, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.inner(x)) @ self.mix


@pytest.mark.parametrize("make", [tiny_mlp, tiny_cnn, lambda: (_Bilinear(), torch.zeros(3, 5))])
def test_flop_model_matches_the_counted_jacobian_and_jvp(make: Any) -> None:
    from ckalab.ntk import _eval_mode, _Functional, _measure

    model, x = make()
    x1 = x[:1].to(next(model.parameters()).dtype)
    groups = ntk_groups(model)
    with _eval_mode(model), torch.no_grad():
        fun = _Functional(model, groups)
        m = _measure(model, fun, x1)
        o = int(m.output.shape[1])
        assert m.flops.forward == _counted(lambda: fun(fun.trainable, x1)) > 0
        assert m.flops.jacobian(o) == _counted(lambda: fun.jacobian(x1))
        for g, names in groups.items():
            zeros = {n: torch.zeros_like(fun.trainable[n]).unsqueeze(0) for n in names}
            jvp_flops = _counted(lambda g=g, z=zeros: fun.jvp_group(g, x1, z))
            if g == "mix":  # a parameter used outside any leaf module: an upper bound
                assert 2 * m.flops.tail[g] >= jvp_flops - m.flops.forward
            else:
                assert 2 * m.flops.tail[g] == jvp_flops - m.flops.forward, g


# ----------------------------------------------------------------------------------------------
# Neutrality
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_batchnorm_model_state_is_untouched(method: str) -> None:
    model, x = tiny_cnn()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.random.get_rng_state()
    ntk = empirical_ntk(model, x, kind="full", method=method)
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(torch.random.get_rng_state(), rng)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())
    # Running statistics are used whatever the mode: the same kernel as in eval mode.
    ref = reference_ntk(model, x, ntk_groups(model))  # switches the model to eval mode
    torch.testing.assert_close(ntk.kernel, sum(ref.values()), rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Alignment and distance
# ----------------------------------------------------------------------------------------------


def test_alignment_of_the_target_kernel_is_one() -> None:
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 2, 0])
    y = one_hot(labels, 3, dtype=torch.float64)
    k = target_kernel(y)
    assert float(ntk_alignment(k, y)) == pytest.approx(1.0)
    assert float(ntk_alignment(3.0 * k, y, centered=False)) == pytest.approx(1.0)
    signed = (2.0 * (labels[:6] % 2) - 1).double()
    assert float(ntk_alignment(target_kernel(signed), signed.unsqueeze(1))) == pytest.approx(1.0)


def test_kernel_distance() -> None:
    model, x = tiny_mlp()
    k = empirical_ntk(model, x).kernel
    assert float(kernel_distance(k, 2.5 * k)) == pytest.approx(0.0, abs=1e-12)
    a, b = torch.eye(4), torch.ones(4, 4)
    expected = 1 - 4 / (2 * 4)  # <I, 11^T> = 4, ||I|| = 2, ||11^T|| = 4
    assert float(kernel_distance(a, b)) == pytest.approx(expected)


# ----------------------------------------------------------------------------------------------
# Tracking
# ----------------------------------------------------------------------------------------------


def digits_config(**sections: dict[str, Any]) -> dict[str, Any]:
    base: dict[str, dict[str, Any]] = {
        "data": {"dataset": "digits", "classes": [0, 1], "n_train": 96, "n_test": 40},
        "model": {"arch": "mlp", "depth": 1, "width": 32},
        "optim": {"lr": 0.05},
        "train": {"batch_size": 32, "steps": 8, "device": "cpu"},
        "tracking": {"schedule": "final", "ntk": {"probe_size": 24}},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return base


def ntk_rows(result: Any, metric: str, layer: str = "") -> list[tuple[int, float]]:
    return [(r.step, r.value) for r in result.metrics if r.metric == metric and r.layer == layer]


def test_tracking_records_ntk_rows_and_does_not_change_training() -> None:
    on = train(digits_config())
    off = train(digits_config(tracking={"schedule": "final", "ntk": None}))
    assert on.state_dict.keys() == off.state_dict.keys()
    for k, v in on.state_dict.items():
        assert torch.equal(v, off.state_dict[k]), k
    steps = [s for s, _ in ntk_rows(on, "ntk_alignment")]
    assert steps == [0, 1, 2, 4, 8]  # geometric by default
    for layer in ("", "hidden1", "readout"):
        for metric in ("ntk_alignment", "ntk_alignment_uncentered", "ntk_distance_init"):
            values = ntk_rows(on, metric, layer)
            assert [s for s, _ in values] == steps
            assert all(math.isfinite(v) for _, v in values)
        assert [s for s, _ in ntk_rows(on, "ntk_distance_prev", layer)] == steps[1:]
    assert ntk_rows(on, "ntk_distance_init")[0][1] == pytest.approx(0.0, abs=1e-12)
    assert all(r.split == "train" for r in on.metrics if r.metric.startswith("ntk_"))
    assert on.summaries["train_ntk_alignment"] == ntk_rows(on, "ntk_alignment")[-1][1]
    assert not any(r.metric.startswith("ntk_") for r in off.metrics)


def test_tracked_values_match_the_library() -> None:
    cfg = digits_config(
        tracking={"schedule": "none", "ntk": {"probe_size": 10, "schedule": "final"}}
    )
    result = train(cfg)
    model = MLP(64, 2, width=32)
    model.load_state_dict(result.state_dict)
    from ckalab.data import make_task

    task = make_task("digits", [0, 1], n_train=96, n_test=40, seed=0)
    probe = balanced_subset(task.probe_train, 10, 2)
    ntk = empirical_ntk(model, probe.x)
    final = dict(ntk_rows(result, "ntk_alignment"))[8]
    assert final == pytest.approx(float(ntk_alignment(ntk.kernel, probe.y)), rel=1e-6)
    readout = dict(ntk_rows(result, "ntk_alignment_uncentered", "readout"))[8]
    expected = float(ntk_alignment(ntk.groups["readout"], probe.y, centered=False))
    assert readout == pytest.approx(expected, rel=1e-6)


def test_lazy_and_rich_regimes() -> None:
    """A wide network at a small learning rate keeps its kernel; at a large one it moves."""

    def distance(lr: float) -> float:
        cfg = digits_config(
            model={"width": 1024},
            optim={"lr": lr},
            train={"steps": 12},
            tracking={"schedule": "none", "ntk": {"probe_size": 16, "schedule": "final"}},
        )
        result = train(cfg)
        assert result.status == "done"
        return ntk_rows(result, "ntk_distance_init")[-1][1]

    lazy, rich = distance(0.002), distance(1.0)
    assert lazy < 1e-3
    assert rich > 20 * lazy and rich > 1e-2


@pytest.mark.slow
def test_resumed_run_keeps_the_reference_kernels(tmp_path: Path) -> None:
    cfg = digits_config(
        train={"steps": None, "epochs": 3},
        tracking={"schedule": "final", "ntk": {"probe_size": 12, "schedule": "epochs"}},
        checkpoint={"dir": str(tmp_path)},
    )
    plain = train({**cfg, "checkpoint": {}})

    class Killed(Exception):
        pass

    def kill(rows: list[Any]) -> None:
        if any(r.step == 9 and r.metric == "ntk_alignment" for r in rows):
            raise Killed

    with pytest.raises(Killed):
        train(cfg, on_metrics=kill)
    resumed = train(cfg)
    assert resumed.metrics == plain.metrics


def test_balanced_subset_takes_the_first_of_each_class() -> None:
    labels = torch.tensor([1, 1, 0, 1, 0, 0, 1, 0])
    split = Split(torch.arange(8.0).unsqueeze(1), labels.clone(), labels)
    sub = balanced_subset(split, 4, 2)
    assert sub.x[:, 0].tolist() == [0.0, 1.0, 2.0, 4.0]
    assert len(balanced_subset(split, 100, 2)) == 8


def test_tracker_alone() -> None:
    model, x = tiny_mlp()
    y = one_hot(torch.arange(9) % 3, 3, dtype=torch.float64)
    tracker = NTKTracker(x, y, [0, 5])
    assert tracker.due(0) and not tracker.due(1)
    first = tracker(model, 0, 0.0)
    assert not tracker.due(0) and tracker.due(5)
    state = tracker.state_dict()
    other = NTKTracker(x, y, [0, 5])
    other.load_state_dict(state)
    assert not other.due(0)
    with torch.no_grad():
        model.readout.weight.mul_(2.0)
    rows = other(model, 5, 1.0)
    assert {r.metric for r in rows} == {
        "ntk_alignment",
        "ntk_alignment_uncentered",
        "ntk_distance_init",
        "ntk_distance_prev",
    }
    assert {r.layer for r in first} == {"", "hidden1", "hidden2", "readout"}


def test_config_section() -> None:
    cfg = RunConfig.model_validate({"tracking": {"ntk": {}}})
    assert cfg.tracking.ntk == NTKTrackingConfig()
    assert cfg.tracking.ntk.schedule == "geometric" and cfg.tracking.ntk.probe_size == 256
    assert RunConfig().tracking.ntk is None
    from ckalab.config import parse_run_config

    with pytest.raises(ConfigError, match=r"tracking\.ntk\.probe_size"):
        parse_run_config({"tracking": {"ntk": {"probe_size": 100_000}}})
    with pytest.raises(ConfigError, match=r"tracking\.ntk\.bogus: unknown field"):
        parse_run_config({"tracking": {"ntk": {"bogus": 1}}})
    with pytest.raises(ConfigError, match=r"tracking\.ntk\.schedule"):
        parse_run_config({"tracking": {"ntk": {"schedule": "none"}}})
