"""ckalab.alignment against naive float64 references with explicit n x n kernels."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ckalab import alignment as A
from ckalab.alignment import DegenerateRepresentationWarning

# ----------------------------------------------------------------------------------------------
# Naive references: explicit kernels, explicit centering matrix, numpy float64.
# ----------------------------------------------------------------------------------------------


def _np(t: torch.Tensor) -> np.ndarray:
    a = t.detach().double().cpu().numpy()
    return a[:, None] if a.ndim == 1 else a


def naive_hsic_from_kernels(k: np.ndarray, ell: np.ndarray, debiased: bool) -> float:
    n = k.shape[0]
    if not debiased:
        h = np.eye(n) - np.ones((n, n)) / n
        return float(np.trace(k @ h @ ell @ h)) / (n - 1) ** 2
    kt = k.copy()
    lt = ell.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    one = np.ones(n)
    term1 = np.trace(kt @ lt)
    term2 = (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
    term3 = 2.0 / (n - 2) * (one @ kt @ lt @ one)
    return float(term1 + term2 - term3) / (n * (n - 3))


def naive_cka_from_kernels(k: np.ndarray, ell: np.ndarray, debiased: bool) -> float:
    hxy = naive_hsic_from_kernels(k, ell, debiased)
    hxx = naive_hsic_from_kernels(k, k, debiased)
    hyy = naive_hsic_from_kernels(ell, ell, debiased)
    return hxy / math.sqrt(hxx * hyy)


def naive_linear_cka(x: torch.Tensor, y: torch.Tensor, debiased: bool = False) -> float:
    a, b = _np(x), _np(y)
    return naive_cka_from_kernels(a @ a.T, b @ b.T, debiased)


def naive_rbf(x: torch.Tensor, sigma: float) -> np.ndarray:
    a = _np(x)
    d2 = ((a[:, None, :] - a[None, :, :]) ** 2).sum(-1)
    iu = np.triu_indices(a.shape[0], k=1)
    dists = d2[iu]
    dists = dists[dists > 0]  # the bandwidth comes from the nonzero distances
    # torch.median returns the lower of the two middle values for an even count.
    med = np.sort(dists)[(len(dists) - 1) // 2]
    return np.exp(-d2 / (2.0 * sigma**2 * med))


# ----------------------------------------------------------------------------------------------
# Strategies
# ----------------------------------------------------------------------------------------------


@st.composite
def pair(draw, min_n: int = 4, max_n: int = 40, max_p: int = 60, max_q: int = 8):
    n = draw(st.integers(min_n, max_n))
    p = draw(st.integers(1, max_p))
    q = draw(st.integers(1, max_q))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, p, generator=g, dtype=torch.float64)
    # Make y depend on x so values span (0, 1), not just ~0.
    w = torch.randn(p, q, generator=g, dtype=torch.float64)
    y = x @ w + torch.randn(n, q, generator=g, dtype=torch.float64) * draw(st.floats(0.1, 3.0))
    return x, y


def _random_orthogonal(p: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=torch.float64))
    return q


# ----------------------------------------------------------------------------------------------
# Against the references
# ----------------------------------------------------------------------------------------------


@given(pair(), st.booleans())
def test_linear_cka_matches_naive(xy, debiased):
    x, y = xy
    expected = naive_linear_cka(x, y, debiased)
    got = A.cka(x, y, debiased=debiased)
    assert got.dtype == torch.float64 and got.shape == ()
    assert float(got) == pytest.approx(expected, abs=1e-9, rel=1e-9)


@given(pair(), st.booleans())
def test_hsic_matches_naive(xy, debiased):
    x, y = xy
    a, b = _np(x), _np(y)
    expected = naive_hsic_from_kernels(a @ a.T, b @ b.T, debiased)
    got = float(A.hsic(x, y, debiased=debiased))
    assert got == pytest.approx(expected, abs=1e-9 * max(1.0, abs(expected)), rel=1e-8)


@given(pair(max_n=12, max_p=80), st.booleans())
def test_wide_features_use_gram_form_and_match(xy, debiased):
    """p >= n takes the Gram route for a single pair; the value is unchanged."""
    x, y = xy
    expected = naive_linear_cka(x, y, debiased)
    assert float(A.cka(x, y, debiased=debiased)) == pytest.approx(expected, abs=1e-9)


@given(st.integers(4, 30), st.lists(st.integers(1, 40), min_size=1, max_size=4), st.booleans())
def test_cka_matrix_matches_naive_both_routes(n, widths, debiased):
    g = torch.Generator().manual_seed(n * 1000 + sum(widths))
    xs = [torch.randn(n, p, generator=g, dtype=torch.float64) for p in widths]
    ys = [xs[0] @ torch.randn(widths[0], 3, generator=g, dtype=torch.float64), xs[-1] ** 2]
    expected = np.array(
        [
            [naive_cka_from_kernels(_np(a) @ _np(a).T, _np(b) @ _np(b).T, debiased) for b in ys]
            for a in xs
        ]
    )
    for allow_gram in (True, False):
        got = A.linear_gram_stats(xs, ys, allow_gram=allow_gram).cka(debiased)
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-9)
    np.testing.assert_allclose(A.cka_matrix(xs, ys, debiased=debiased).numpy(), expected, atol=1e-9)
    # Symmetric form: xs against themselves.
    sym = A.cka_matrix(xs, debiased=debiased).numpy()
    ref = np.array(
        [
            [naive_cka_from_kernels(_np(a) @ _np(a).T, _np(b) @ _np(b).T, debiased) for b in xs]
            for a in xs
        ]
    )
    np.testing.assert_allclose(sym, ref, atol=1e-9)
    np.testing.assert_allclose(sym, sym.T, atol=0)


def test_gram_route_blocks_match_feature_route():
    """Sizes above the block size exercise the blockwise upper-triangle products."""
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(700, p, generator=g, dtype=torch.float64) for p in (600, 1100)]
    feat = A.linear_gram_stats(xs, allow_gram=False)
    gram = A.linear_gram_stats(xs, allow_gram=True)
    for debiased in (False, True):
        np.testing.assert_allclose(
            feat.cka(debiased).numpy(), gram.cka(debiased).numpy(), atol=1e-12
        )
    a = xs[0] - xs[0].mean(0)
    assert float(feat.self_x[0]) == pytest.approx(float((a.T @ a).square().sum()), rel=1e-12)


@given(pair(min_n=6, max_n=25, max_p=10, max_q=4), st.floats(0.3, 3.0), st.booleans())
def test_rbf_cka_matches_naive(xy, sigma, debiased):
    x, y = xy
    expected = naive_cka_from_kernels(naive_rbf(x, sigma), naive_rbf(y, sigma), debiased)
    got = float(A.cka(x, y, kernel="rbf", sigma=sigma, debiased=debiased))
    assert got == pytest.approx(expected, abs=1e-9)
    mat = A.cka_matrix([x], [y], kernel="rbf", sigma=sigma, debiased=debiased)
    assert float(mat[0, 0]) == pytest.approx(expected, abs=1e-9)


@given(pair(min_n=4, max_n=20))
def test_explicit_kernel_alignments_match_naive(xy):
    x, y = xy
    k, ell = _np(x) @ _np(x).T, _np(y) @ _np(y).T
    kt, lt = torch.from_numpy(k), torch.from_numpy(ell)
    expected_uncentered = (k * ell).sum() / (np.linalg.norm(k) * np.linalg.norm(ell))
    assert float(A.kernel_alignment(kt, lt)) == pytest.approx(expected_uncentered, abs=1e-12)
    for debiased in (False, True):
        expected = naive_cka_from_kernels(k, ell, debiased)
        got = float(A.centered_alignment(kt, lt, debiased=debiased))
        assert got == pytest.approx(expected, abs=1e-9)
        h = float(A.hsic_gram(kt, lt, debiased=debiased))
        assert h == pytest.approx(naive_hsic_from_kernels(k, ell, debiased), rel=1e-9, abs=1e-12)


# ----------------------------------------------------------------------------------------------
# Invariances and ranges
# ----------------------------------------------------------------------------------------------


@given(pair(), st.booleans())
def test_symmetry(xy, debiased):
    x, y = xy
    assert float(A.cka(x, y, debiased=debiased)) == pytest.approx(
        float(A.cka(y, x, debiased=debiased)), abs=1e-12
    )


@given(pair(min_n=5), st.booleans(), st.sampled_from(["linear", "rbf"]))
def test_self_alignment_is_one(xy, debiased, kernel):
    x, _ = xy
    assert float(A.cka(x, x, debiased=debiased, kernel=kernel)) == pytest.approx(1.0, abs=1e-10)


@given(
    pair(min_n=5),
    st.booleans(),
    st.integers(0, 10_000),
    st.floats(1e-3, 1e3),
    st.floats(-100.0, 100.0),
)
def test_invariance_orthogonal_scale_shift(xy, debiased, seed, scale, shift):
    x, y = xy
    base = float(A.cka(x, y, debiased=debiased))
    q = _random_orthogonal(x.shape[1], seed)
    transformed = scale * (x @ q) + shift
    assert float(A.cka(transformed, y, debiased=debiased)) == pytest.approx(base, abs=1e-9)


@given(pair(min_n=5), st.floats(0.3, 3.0))
def test_rbf_invariant_to_orthogonal_scale_shift(xy, sigma):
    x, y = xy
    base = float(A.cka(x, y, kernel="rbf", sigma=sigma))
    q = _random_orthogonal(x.shape[1], 7)
    moved = 4.0 * (x @ q) - 3.0
    assert float(A.cka(moved, y, kernel="rbf", sigma=sigma)) == pytest.approx(base, abs=1e-9)


@given(pair(min_n=2))
def test_biased_value_in_unit_interval(xy):
    x, y = xy
    value = float(A.cka(x, y))
    assert -1e-12 <= value <= 1 + 1e-12


def test_debiasing_removes_the_high_dimensional_bias():
    """n=200, p=2000, independent Gaussians: biased CKA is large, debiased is ~0."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 2000, generator=g)
    y = torch.randn(200, 2000, generator=g)
    assert float(A.cka(x, y)) > 0.5
    assert abs(float(A.cka(x, y, debiased=True))) < 0.05


# ----------------------------------------------------------------------------------------------
# Numerics
# ----------------------------------------------------------------------------------------------


def shifted_relu_features(n: int, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 ReLU features of random inputs shifted by 1e3 (n, p), and labels (n,) in {0, 1}."""
    g = torch.Generator().manual_seed(1)
    w = torch.randn(100, p, generator=g) / 10
    inputs = torch.randn(n, 100, generator=g)
    return torch.relu(inputs @ w) + 1e3, (inputs[:, 0] > 0).long()


def test_float32_shifted_relu_features_are_accurate():
    """ReLU features shifted by 1e3 in float32: within 1e-6 of the float64 value."""
    x32, labels = shifted_relu_features(4000, 256)
    y32 = A.one_hot(labels, 2)
    for debiased in (False, True):
        ref = float(A.cka(x32.double(), y32.double(), debiased=debiased))
        got = float(A.cka(x32, y32, debiased=debiased))
        assert abs(got - ref) < 1e-6, (debiased, got, ref)
    xs = [x32, x32[:, :50] * 3, torch.relu(x32 - 1e3 - 0.5)]
    ref = A.cka_matrix([t.double() for t in xs], debiased=True)
    got = A.cka_matrix(xs, debiased=True)
    assert float((got - ref).abs().max()) < 1e-6


def test_half_precision_inputs_are_accepted_and_accurate():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(500, 20, generator=g)
    y = x[:, :3] + 0.5 * torch.randn(500, 3, generator=g)
    xb, yb = x.to(torch.bfloat16), y.to(torch.bfloat16)
    ref = float(A.cka(xb.double(), yb.double()))
    assert float(A.cka(xb, yb)) == pytest.approx(ref, abs=1e-6)


def test_result_dtype_and_device():
    x = torch.randn(10, 3)
    out = A.cka(x, x[:, :1])
    assert out.dtype == torch.float64 and out.device == x.device


def test_linear_cka_never_allocates_n_by_n():
    """For p, q < n the feature-space route allocates nothing near n^2 elements."""
    n, p = 6000, 64
    x = torch.randn(n, p)
    y = A.one_hot(torch.randint(0, 2, (n,)), 2)
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
    ) as prof:
        A.cka(x, y)
        A.cka(x, y, debiased=True)
    largest = max(evt.cpu_memory_usage for evt in prof.events())
    assert largest < n * n * 4 / 10, largest


def test_differentiable():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(12, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(12, 2, generator=g, dtype=torch.float64)
    for debiased in (False, True):
        assert torch.autograd.gradcheck(lambda a, d=debiased: A.cka(a, y, debiased=d), (x,))
    big = torch.randn(12, 30, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: A.cka(a, y, debiased=True), (big,))
    assert torch.autograd.gradcheck(lambda a: A.cka(a, y, kernel="rbf"), (x,))


# ----------------------------------------------------------------------------------------------
# Streaming (minibatch) CKA
# ----------------------------------------------------------------------------------------------


def test_streaming_equals_mean_of_batch_hsic_formula():
    g = torch.Generator().manual_seed(4)
    layers = [torch.randn(96, p, generator=g, dtype=torch.float64) for p in (5, 9)]
    target = layers[0][:, :2] + torch.randn(96, 2, generator=g, dtype=torch.float64)
    batches = [slice(0, 32), slice(32, 64), slice(64, 96)]
    stream = A.StreamingCKA()
    for b in batches:
        stream.update([t[b] for t in layers], target[b])
    got = stream.compute()
    assert got.shape == (2, 1) and stream.num_batches == 3

    def mean_hsic(a, c):
        return np.mean(
            [
                naive_hsic_from_kernels(_np(a[b]) @ _np(a[b]).T, _np(c[b]) @ _np(c[b]).T, True)
                for b in batches
            ]
        )

    for i, layer in enumerate(layers):
        expected = mean_hsic(layer, target) / math.sqrt(
            mean_hsic(layer, layer) * mean_hsic(target, target)
        )
        assert float(got[i, 0]) == pytest.approx(expected, abs=1e-12)

    # Matrix of layers against each other; scalar when single tensors are passed.
    stream_m = A.StreamingCKA()
    stream_s = A.StreamingCKA()
    for b in batches:
        stream_m.update([t[b] for t in layers])
        stream_s.update(layers[0][b], target[b])
    m = stream_m.compute()
    assert m.shape == (2, 2) and float(m[0, 0]) == pytest.approx(1.0)
    assert stream_s.compute().shape == ()
    assert float(stream_s.compute()) == pytest.approx(float(got[0, 0]), abs=1e-12)
    stream_s.reset()
    with pytest.raises(RuntimeError, match="before any update"):
        stream_s.compute()


def test_streaming_approaches_full_batch_debiased():
    g = torch.Generator().manual_seed(5)
    n = 20_000
    x = torch.randn(n, 30, generator=g)
    labels = (x[:, 0] + 0.5 * torch.randn(n, generator=g) > 0).long()
    y = A.one_hot(labels, 2)
    full = float(A.cka(x, y, debiased=True))
    stream = A.StreamingCKA()
    for start in range(0, n, 500):
        stream.update(x[start : start + 500], y[start : start + 500])
    assert abs(float(stream.compute()) - full) < 0.01


def test_streaming_rejects_changing_shapes_and_small_batches():
    stream = A.StreamingCKA()
    stream.update(torch.randn(8, 3), torch.randn(8, 1))
    with pytest.raises(ValueError, match="feature shapes"):
        stream.update(torch.randn(8, 4), torch.randn(8, 1))
    with pytest.raises(ValueError, match="n >= 4"):
        A.StreamingCKA().update(torch.randn(3, 2), torch.randn(3, 1))


# ----------------------------------------------------------------------------------------------
# Bad input and degenerate representations
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (torch.randn(10, 3), torch.randn(9, 2), r"same number of rows.*x \(10, 3\).*y \(9, 2\)"),
        (torch.randn(1, 3), torch.randn(1, 2), r"x needs at least 2 rows"),
        (torch.full((5, 2), math.nan), torch.randn(5, 1), r"x contains 10 NaN or Inf"),
        (torch.randn(5, 2), torch.tensor([1.0, 2, math.inf, 4, 5]), r"y contains 1 NaN or Inf"),
        (torch.randn(5, 2, 2), torch.randn(5, 1), r"x must have shape .*\(5, 2, 2\)"),
        (torch.randn(5, 2), torch.tensor([0, 1, 0, 1, 1]), r"y has dtype torch.int64.*one_hot"),
    ],
)
def test_bad_input_is_named(x, y, match):
    with pytest.raises(ValueError, match=match):
        A.cka(x, y)


def test_debiased_needs_four_examples():
    with pytest.raises(ValueError, match="n >= 4 examples, got n=3"):
        A.cka(torch.randn(3, 2), torch.randn(3, 2), debiased=True)


def test_unknown_kernel_and_bad_sigma():
    with pytest.raises(ValueError, match="kernel must be 'linear' or 'rbf', got 'poly'"):
        A.cka(torch.randn(5, 2), torch.randn(5, 2), kernel="poly")
    with pytest.raises(ValueError, match="sigma must be a positive"):
        A.cka(torch.randn(5, 2), torch.randn(5, 2), kernel="rbf", sigma=0.0)


def test_gram_inputs_validated():
    with pytest.raises(ValueError, match=r"k1 must be a square"):
        A.kernel_alignment(torch.randn(3, 4), torch.randn(3, 3))
    with pytest.raises(ValueError, match=r"same shape"):
        A.centered_alignment(torch.eye(3), torch.eye(4))


@pytest.mark.parametrize("debiased", [False, True])
def test_constant_representation_gives_nan_and_one_warning(debiased):
    dead = torch.zeros(20, 8)
    y = torch.randn(20, 2)
    with pytest.warns(DegenerateRepresentationWarning) as record:
        value = A.cka(dead + 3.0, y, debiased=debiased)
    assert math.isnan(float(value))
    assert len(record) == 1
    with pytest.warns(DegenerateRepresentationWarning):
        mat = A.cka_matrix([torch.randn(20, 3), dead], [y], debiased=debiased)
    assert not math.isnan(float(mat[0, 0])) and math.isnan(float(mat[1, 0]))


def test_target_helpers():
    labels = torch.tensor([0, 2, 1, 2])
    assert A.one_hot(labels).tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0], [0, 0, 1]]
    assert A.signed_targets(torch.tensor([0, 1, 1])).flatten().tolist() == [-1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.1, found 0\.\.2"):
        A.signed_targets(labels)
    with pytest.raises(ValueError, match="1-D integer tensor"):
        A.one_hot(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.1"):
        A.one_hot(labels, 2)


def test_float32_gram_route_is_accurate():
    """Packed float32 Gram matrices (p > n) with float64 accumulation stay within 1e-6."""
    g = torch.Generator().manual_seed(6)
    base = torch.randn(600, 40, generator=g)
    xs = [torch.relu(base @ torch.randn(40, p, generator=g)) + 5.0 for p in (700, 1300)]
    ys = [base[:, :1] + 0.1 * torch.randn(600, 1, generator=g), xs[0][:, :10]]
    for debiased in (False, True):
        got = A.cka_matrix(xs, ys, debiased=debiased)
        ref = A.cka_matrix([t.double() for t in xs], [t.double() for t in ys], debiased=debiased)
        assert float((got - ref).abs().max()) < 1e-6


# ----------------------------------------------------------------------------------------------
# Exact linear CKA streamed over row chunks
# ----------------------------------------------------------------------------------------------

_STAT_FIELDS = (
    "cross",
    "self_x",
    "self_y",
    "diag_dot",
    "trace_x",
    "trace_y",
    "diag_sq_x",
    "diag_sq_y",
)


def _accumulate(xs, ys, cuts) -> A.LinearCKAAccumulator:
    acc = A.LinearCKAAccumulator()
    bounds = [0, *cuts, xs[0].shape[0]]
    for lo, hi in itertools.pairwise(bounds):
        acc.update([t[lo:hi] for t in xs], [t[lo:hi] for t in ys])
    return acc


@st.composite
def chunked_reps(draw, max_n: int = 50):
    """Several x and y representations (some wider than the others), shifted, and row cuts."""
    n = draw(st.integers(4, max_n))
    ps = draw(st.lists(st.integers(1, 40), min_size=1, max_size=3))
    qs = draw(st.lists(st.integers(1, 45), min_size=1, max_size=2))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    shift = draw(st.floats(-100.0, 100.0))
    xs = [torch.randn(n, p, generator=g, dtype=torch.float64) + shift for p in ps]
    ys = [
        xs[0][:, :1] @ torch.randn(1, q, generator=g, dtype=torch.float64)
        + torch.randn(n, q, generator=g, dtype=torch.float64)
        - shift
        for q in qs
    ]
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=min(n - 1, 12))))
    if draw(st.booleans()):  # chunks of one row at the start
        cuts = sorted({*cuts, *range(1, min(4, n))})
    return xs, ys, cuts


@given(chunked_reps())
def test_accumulator_equals_full_data_statistics(data):
    xs, ys, cuts = data
    acc = _accumulate(xs, ys, cuts)
    assert acc.n == xs[0].shape[0]
    got = acc.stats()
    ref = A.linear_gram_stats(xs, ys, allow_gram=False)
    for field in _STAT_FIELDS:
        a, b = getattr(got, field), getattr(ref, field)
        scale = float(b.abs().max()) + 1e-300
        assert float((a - b).abs().max()) <= 1e-9 * scale, field
    # The naive kernels of data shifted by up to 100 cancel badly at n = 4; both estimators are
    # invariant to centering, so the reference uses explicitly centered columns.
    cx = [_np(a) - _np(a).mean(0) for a in xs]
    cy = [_np(b) - _np(b).mean(0) for b in ys]
    for debiased in (False, True):
        expected = np.array(
            [[naive_cka_from_kernels(a @ a.T, b @ b.T, debiased) for b in cy] for a in cx]
        )
        np.testing.assert_allclose(acc.cka(debiased).numpy(), expected, atol=1e-9)
        np.testing.assert_allclose(acc.cka(debiased).numpy(), ref.cka(debiased).numpy(), atol=1e-9)
        np.testing.assert_allclose(
            acc.hsic(debiased).numpy(), ref.hsic(debiased).numpy(), rtol=1e-9, atol=1e-12
        )


def test_accumulator_float32_shifted_relu_features_are_accurate():
    """float32 ReLU features shifted by 1e3: uneven chunks (single rows, one chunk above the
    float32 row limit) stay within 1e-6 of the float64 value."""
    x32, labels = shifted_relu_features(6000, 256)
    xs = [x32, x32[:, :50] * 3, torch.relu(x32 - 1e3 - 0.5)]
    ys = [A.one_hot(labels, 2), A.signed_targets(labels)]
    ref = A.linear_gram_stats([t.double() for t in xs], [t.double() for t in ys])
    for cuts in ([700, 701, 702, 1500, 4000], [1, 2, 999, 1500, 5000]):
        acc = _accumulate(xs, ys, cuts)
        for debiased in (False, True):
            assert float((acc.cka(debiased) - ref.cka(debiased)).abs().max()) < 1e-6


def test_accumulator_memory_does_not_grow_with_n():
    def state_numel(acc: A.LinearCKAAccumulator) -> int:
        seen = 0
        stack: list = [vars(acc)]
        while stack:
            item = stack.pop()
            if isinstance(item, torch.Tensor):
                seen += item.numel()
            elif isinstance(item, dict):
                stack.extend(item.values())
            elif isinstance(item, (list, tuple)):
                stack.extend(item)
            elif hasattr(item, "__dict__") and not isinstance(item, (torch.dtype, type)):
                stack.append(vars(item))
        return seen

    sizes = []
    for n in (300, 3000):
        x, y = torch.randn(n, 20), torch.randn(n, 3)
        sizes.append(state_numel(_accumulate([x], [y], list(range(100, n, 100)))))
    assert sizes[0] == sizes[1] < 20 * 20 * 2


@pytest.mark.parametrize(
    ("xs", "ys", "match"),
    [
        ([torch.randn(5, 3)], [torch.randn(4, 2)], r"same number of rows.*xs\[0\] \(5, 3\)"),
        ([torch.randn(0, 3)], [torch.randn(0, 2)], r"xs\[0\] needs at least 1 row"),
        (
            [torch.randn(5, 3), torch.tensor([[1.0], [math.nan], [2], [3], [4]])],
            [torch.randn(5, 2)],
            r"xs\[1\] contains 1 NaN or Inf",
        ),
        (
            [torch.randn(5, 3)],
            [torch.tensor([[1.0, 0], [2, 0], [math.inf, 0], [4, 0], [5, 0]])],
            r"ys\[0\] contains 1 NaN",
        ),
        ([torch.randn(5, 3)], [torch.tensor([0, 1, 0, 1, 1])], r"ys\[0\] has dtype.*one_hot"),
        ([torch.randn(5, 3, 2)], [torch.randn(5, 2)], r"xs\[0\] must have shape .*\(5, 3, 2\)"),
        ([], [torch.randn(5, 2)], r"at least one representation"),
    ],
)
def test_accumulator_bad_chunks_are_named_and_leave_no_trace(xs, ys, match):
    acc = A.LinearCKAAccumulator()
    x0, y0 = torch.randn(6, 3), torch.randn(6, 2)
    if len(xs) == 1 and xs[0].ndim == 2 and xs[0].shape[1] == 3:
        acc.update([x0], [y0])  # a good first chunk, then the bad one
    before = None if acc.n == 0 else acc.cka(debiased=True)
    with pytest.raises(ValueError, match=match):
        acc.update(xs, ys)
    if before is not None:
        assert acc.n == 6 and torch.equal(acc.cka(debiased=True), before)


def test_accumulator_shape_changes_size_limits_and_reset():
    acc = A.LinearCKAAccumulator()
    with pytest.raises(RuntimeError, match="call update"):
        acc.cka()
    acc.update(torch.randn(1, 3), torch.randn(1, 2))
    with pytest.raises(ValueError, match=r"at least 2 rows .* got n=1"):
        acc.cka()
    changed = r"feature counts .* \(\(4,\), \(2,\)\).*\(\(3,\), \(2,\)\)"
    with pytest.raises(ValueError, match=changed):
        acc.update(torch.randn(2, 4), torch.randn(2, 2))
    with pytest.raises(ValueError, match="feature counts"):
        acc.update([torch.randn(2, 3)] * 2, torch.randn(2, 2))
    acc.update(torch.randn(2, 3), torch.randn(2, 2))
    assert acc.cka().shape == (1, 1)
    with pytest.raises(ValueError, match="n >= 4 examples, got n=3"):
        acc.cka(debiased=True)
    with pytest.raises(ValueError, match="n >= 4 examples, got n=3"):
        acc.hsic(debiased=True)
    acc.reset()
    assert acc.n == 0
    acc.update(torch.randn(5, 4), torch.randn(5, 2))  # a new signature after reset
    assert acc.n == 5 and acc.cka(debiased=True).shape == (1, 1)


@pytest.mark.parametrize("debiased", [False, True])
def test_accumulator_degenerate_layer_gives_nan_and_one_warning(debiased):
    g = torch.Generator().manual_seed(8)
    live = torch.randn(30, 4, generator=g)
    dead = torch.zeros(30, 6)
    y = live[:, :2] + torch.randn(30, 2, generator=g)
    acc = _accumulate([live, dead, dead + 3.0], [y], [7, 8, 20])
    with pytest.warns(DegenerateRepresentationWarning) as record:
        value = acc.cka(debiased)
    assert len(record) == 1
    assert math.isfinite(float(value[0, 0]))
    assert math.isnan(float(value[1, 0])) and math.isnan(float(value[2, 0]))
    assert float(value[0, 0]) == pytest.approx(float(A.cka(live, y, debiased=debiased)), abs=1e-6)
