"""Tracking CKA streamed over evaluation chunks equals CKA of the concatenated features."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from ckalab.alignment import one_hot
from ckalab.models import MLP
from ckalab.tracking import EvalSet, Evaluator, layer_cka


def _data(n: int, d: int, dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, d, generator=g) + 2.0).to(dtype)
    labels = (x[:, 0] + 0.3 * x[:, 1] > 2.0).long()
    y = one_hot(labels, 2, dtype=dtype)
    return x, y, labels


def _concatenated(model, x: torch.Tensor, targets: torch.Tensor) -> dict[tuple[str, str], float]:
    """The old path: features of the whole probe set at once, then :func:`layer_cka`."""
    with torch.no_grad():
        _, probes = model.eval().forward_with_probes(x, model.probe_layers)
    model.train()
    biased, debiased = layer_cka([probes[name] for name in model.probe_layers], targets)
    out = {}
    for metric, vals in (("cka", biased), ("cka_debiased", debiased)):
        for name, v in zip(model.probe_layers, vals, strict=True):
            out[metric, name] = float(v)
        out[metric + "_avg", ""] = float(torch.stack(vals).mean())
    return out


def _evaluated(evaluator: Evaluator, model, split: str) -> dict[tuple[str, str], float]:
    return {(r.metric, r.layer): r.value for r in evaluator(model, 1, 0.5) if r.split == split}


@pytest.mark.parametrize(
    ("dtype", "tol"), [(torch.float64, 1e-9), (torch.float32, 1e-6)], ids=["f64", "f32"]
)
@pytest.mark.parametrize(
    "batch_size", [pytest.param(1, marks=pytest.mark.slow), 7, 64, 500]
)  # batch size 1: one accumulator update per example
def test_streamed_equals_concatenated(dtype: torch.dtype, tol: float, batch_size: int) -> None:
    torch.manual_seed(0)
    model = MLP(12, 2, depth=3, width=24).to(dtype)
    x, y, labels = _data(157, 12, dtype, 1)
    xp, yp, _ = _data(61, 12, dtype, 2)  # a separate probe set
    sets = [EvalSet("train", x, y, labels, None, y), EvalSet("test", x, y, labels, xp, yp)]
    evaluator = Evaluator(sets, loss="mse", layers=model.probe_layers, batch_size=batch_size)
    for split, (px, py) in (("train", (x, y)), ("test", (xp, yp))):
        got = _evaluated(evaluator, model, split)
        expected = _concatenated(model, px, py)
        assert expected.keys() <= got.keys()
        for key, value in expected.items():
            assert math.isfinite(value)
            assert got[key] == pytest.approx(value, abs=tol), (split, key)
    assert model.training


class _TwoWidths(nn.Module):
    """A probed model with a narrow (5) and a wide (40) ReLU layer."""

    probe_layers = ("narrow", "wide")

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.randn(8, 40, generator=torch.Generator().manual_seed(9), dtype=torch.float64)

    def forward_with_probes(self, x, layers, *, spatial="flatten"):
        h = torch.relu(x @ self.w)
        probes = {"narrow": h[:, :5], "wide": h}
        return h[:, :2], {name: probes[name] for name in layers}


def test_layers_wider_than_the_probe_set_and_tiny_probe_sets() -> None:
    """Width 40 >= n = 30: that layer is collected (n x n route) while the other streams."""
    model = _TwoWidths()
    x, y, labels = _data(30, 8, torch.float64, 3)
    both = torch.cat([torch.nonzero(labels == 0)[:2, 0], torch.nonzero(labels == 1)[:1, 0]])
    for rows, debiased_defined in ((torch.arange(30), True), (both, False)):
        s = EvalSet("train", x[rows], y[rows], labels[rows], None, y[rows])
        evaluator = Evaluator([s], loss="mse", layers=model.probe_layers, batch_size=4)
        got = _evaluated(evaluator, model, "train")
        expected = _concatenated(model, x[rows], y[rows])
        for name in model.probe_layers:
            assert got["cka", name] == pytest.approx(expected["cka", name], abs=1e-9)
            assert math.isfinite(got["cka_debiased", name]) == debiased_defined
            if debiased_defined:
                value = expected["cka_debiased", name]
                assert got["cka_debiased", name] == pytest.approx(value, abs=1e-9)


class _Handmade(nn.Module):
    """A probed model whose layers are chosen columns: finite, non-finite in one chunk, dead."""

    probe_layers = ("good", "broken", "dead")

    def forward_with_probes(self, x, layers, *, spatial="flatten"):
        broken = x[:, :3].clone()
        broken[x[:, 4] == 99.0] = math.inf
        probes = {"good": x[:, :3], "broken": broken, "dead": torch.zeros_like(x[:, :4])}
        return x[:, :2], {name: probes[name] for name in layers}


def test_non_finite_and_dead_layers_give_nan_quietly() -> None:
    x, y, labels = _data(200, 5, torch.float32, 4)
    x[120:126, 4] = 99.0  # the "broken" layer is infinite there, in the third chunk only
    s = EvalSet("train", x, y, labels, None, y)
    model = _Handmade()
    evaluator = Evaluator([s], loss="mse", layers=model.probe_layers, batch_size=50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = _evaluated(evaluator, model, "train")
    reference = layer_cka([x[:, :3]], y)
    for metric, ref in zip(("cka", "cka_debiased"), reference, strict=True):
        assert got[metric, "good"] == pytest.approx(float(ref[0]), abs=1e-6)
        assert math.isnan(got[metric, "broken"]) and math.isnan(got[metric, "dead"])
        # The average skips the undefined layers and says how many it averaged.
        assert got[metric + "_avg", ""] == got[metric, "good"]
        assert got[metric + "_layers", ""] == 1
    assert math.isfinite(got["loss", ""])


def test_non_finite_targets_are_not_hidden() -> None:
    x, y, labels = _data(40, 5, torch.float32, 5)
    bad = y.clone()
    bad[10, 0] = math.nan
    s = EvalSet("train", x, y, labels, None, bad)
    evaluator = Evaluator([s], loss="mse", layers=("good",), batch_size=16)
    with pytest.raises(ValueError, match=r"ys\[0\] contains 1 NaN"):
        evaluator(_Handmade(), 0, 0.0)


class _Constant(nn.Module):
    """Constant layers (every row 0.1) narrower and wider than the probe set, and a live one."""

    probe_layers = ("live", "narrow", "wide")

    def forward_with_probes(self, x, layers, *, spatial="flatten"):
        n = x.shape[0]
        probes = {
            "live": x[:, :3],
            "narrow": torch.full((n, 4), 0.1, dtype=x.dtype),
            "wide": torch.full((n, 80), 1e3 + 0.1, dtype=x.dtype),
        }
        return x[:, :2], {name: probes[name] for name in layers}


def test_constant_layers_give_nan_on_both_routes() -> None:
    """Width 4 < n = 60 streams (accumulator), width 80 >= n is collected (n x n route)."""
    x, y, labels = _data(60, 5, torch.float32, 6)
    s = EvalSet("train", x, y, labels, None, y)
    evaluator = Evaluator([s], loss="mse", layers=_Constant.probe_layers, batch_size=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = _evaluated(evaluator, _Constant(), "train")
    for metric in ("cka", "cka_debiased"):
        assert math.isfinite(got[metric, "live"])
        assert math.isnan(got[metric, "narrow"]) and math.isnan(got[metric, "wide"]), metric
