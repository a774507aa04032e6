"""Constant representations: NaN and one DegenerateRepresentationWarning on every code path."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import pytest
import torch

from ckalab import alignment as A
from ckalab.alignment import DegenerateRepresentationWarning
from ckalab.alignment.degenerate import constant_tolerance


def _accumulated(x: torch.Tensor, y: torch.Tensor, debiased: bool) -> torch.Tensor:
    acc = A.LinearCKAAccumulator()
    cuts = [0, 1, 7, x.shape[0] // 2, x.shape[0]]
    for lo, hi in itertools.pairwise(cuts):
        acc.update([x[lo:hi]], [y[lo:hi]])
    return acc.cka(debiased)[0, 0]


def _streamed(x: torch.Tensor, y: torch.Tensor, debiased: bool) -> torch.Tensor:
    stream = A.StreamingCKA()
    step = max(4, x.shape[0] // 4)
    for lo in range(0, x.shape[0] - step + 1, step):
        stream.update(x[lo : lo + step], y[lo : lo + step])
    return stream.compute()


#: Every estimator and route; ``debiased`` is ignored where the estimator has only one form.
PATHS: dict[str, Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor]] = {
    "cka": lambda x, y, d: A.cka(x, y, debiased=d),
    "cka_swapped": lambda x, y, d: A.cka(y, x, debiased=d),
    "cka_rbf": lambda x, y, d: A.cka(x, y, kernel="rbf", debiased=d),
    "stats_feature": lambda x, y, d: A.linear_gram_stats(x, y, allow_gram=False).cka(d)[0, 0],
    "stats_gram": lambda x, y, d: A.linear_gram_stats(x, y, allow_gram=True).cka(d)[0, 0],
    "cka_matrix": lambda x, y, d: A.cka_matrix([x], [y], debiased=d)[0, 0],
    "cka_matrix_sym": lambda x, y, d: A.cka_matrix([y, x], debiased=d)[0, 1],
    "cka_matrix_rbf": lambda x, y, d: A.cka_matrix([x], [y], kernel="rbf", debiased=d)[0, 0],
    "gram": lambda x, y, d: A.centered_alignment(x @ x.T, y @ y.T, debiased=d),
    "accumulator": _accumulated,
    "streaming": lambda x, y, d: _streamed(x, y, d),
}

CONSTANTS = {
    "0.1": lambda n, p: torch.full((n, p), 0.1),
    "1e3+0.1": lambda n, p: torch.full((n, p), 1e3 + 0.1),
    "columns": lambda n, p: torch.linspace(-3.3, 7e3, p).expand(n, p).clone(),
    "f64_0.1": lambda n, p: torch.full((n, p), 0.1, dtype=torch.float64),
    "bf16_0.1": lambda n, p: torch.full((n, p), 0.1, dtype=torch.bfloat16),
}

#: narrow (p < n: feature space), wide (p >= n: the Gram route), and the reported example.
SHAPES = {"narrow": (120, 16), "wide": (40, 300), "issue": (500, 64)}


def _targets(n: int) -> torch.Tensor:
    return A.one_hot(torch.arange(n) % 2, 2)


CASES = [
    (path, const, shape)
    for path in PATHS
    for const in CONSTANTS
    for shape in SHAPES
    if not (path in ("gram", "cka_rbf", "cka_matrix_rbf") and shape == "issue")
]


@pytest.mark.parametrize(("path", "const", "shape"), CASES, ids=["-".join(c) for c in CASES])
def test_constant_representation_is_nan_with_one_warning(path, const, shape):
    n, p = SHAPES[shape]
    x = CONSTANTS[const](n, p)
    y = _targets(n).to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    for debiased in (False, True):
        with pytest.warns(DegenerateRepresentationWarning) as record:
            value = PATHS[path](x, y, debiased)
        assert math.isnan(float(value)), debiased
        assert len(record) == 1, [str(r.message) for r in record]


@pytest.mark.parametrize("shape", ["narrow", "wide"])
@pytest.mark.parametrize("path", list(PATHS), ids=list(PATHS))
def test_low_variance_data_is_not_constant(path, shape):
    """float32 ``1e3 + 1e-2 randn`` (relative spread 1e-5) is data, not rounding: no warning
    (pyproject turns the warning into an error) and the float64 value of the same input.

    The uncentered float32 Gram matrix ``x x^T`` of such data is excluded: its entries
    (``~1e6 p``) round at ``0.06 p``, far above the centered signal (``~1e-4 p``), so that kernel
    really is constant within its precision (its float64 form is checked).
    """
    n, p = SHAPES[shape]
    g = torch.Generator().manual_seed(11)
    noise = torch.randn(n, p, generator=g)
    x = 1e3 + 1e-2 * noise
    y = _targets(n) + 0.5 * noise[:, :2]  # related to x, so the value is not ~0
    for debiased in (False, True):
        ref = float(PATHS[path](x.double(), y.double(), debiased))
        if path == "gram":
            continue
        got = float(PATHS[path](x, y, debiased))
        # 1e-3: the minibatch path sees batches of 10 rows at p = 300 (float32 error 1.1e-4).
        assert math.isfinite(got) and got == pytest.approx(ref, abs=1e-3), debiased


def test_constant_tolerance_separates_rounding_from_spread():
    """rho(n) covers the measured rounding of float32 means and stays below a 1e-5 spread."""
    for n in (4, 500, 10**6, 2**40):
        assert constant_tolerance(n, torch.float32) ** 2 < 1e-10
    for n in (500, 4097, 10**5):
        for v in (0.1, 3.3, 1 / 3, 7e-5):
            x = torch.full((n, 2), v)
            rel = float(((x[0] - x.mean(0)).abs() / v).max())
            assert rel <= constant_tolerance(n, torch.float32)


def test_only_the_constant_entries_are_nan():
    g = torch.Generator().manual_seed(12)
    live = torch.randn(60, 5, generator=g)
    dead = torch.full((60, 7), 0.1)
    y = live[:, :2] + torch.randn(60, 2, generator=g)
    for debiased in (False, True):
        with pytest.warns(DegenerateRepresentationWarning) as record:
            m = A.cka_matrix([live, dead], [y, dead], debiased=debiased)
        assert len(record) == 1
        assert math.isfinite(float(m[0, 0]))
        assert torch.isnan(m[1]).all() and torch.isnan(m[:, 1]).all()


def test_constant_column_next_to_live_column_is_not_flagged():
    """A column constant at 1e6 does not make the representation constant."""
    g = torch.Generator().manual_seed(13)
    live = torch.randn(200, 1, generator=g, dtype=torch.float64)
    x = torch.cat([live, torch.full((200, 1), 1e6, dtype=torch.float64)], 1)
    assert float(A.cka(x, live)) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("debiased", [False, True])
def test_constant_kernel_is_nan(debiased):
    """The reported case: a constant kernel gave 3e-10 (debiased) with no warning."""
    k = torch.randn(50, 8, dtype=torch.float64)
    with pytest.warns(DegenerateRepresentationWarning) as record:
        value = A.centered_alignment(k @ k.T, torch.ones(50, 50), debiased=debiased)
    assert math.isnan(float(value)) and len(record) == 1
    with pytest.warns(DegenerateRepresentationWarning):
        value = A.centered_alignment(k @ k.T, torch.full((50, 50), 0.1), debiased=debiased)
    assert math.isnan(float(value))
