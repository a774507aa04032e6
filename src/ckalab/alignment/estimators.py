r"""The public pairwise estimators: :func:`hsic`, :func:`cka` and :func:`cka_matrix`.

``x`` is an ``(n, p)`` representation and ``y`` an ``(n, q)`` representation or target matrix
(a 1-D ``(n,)`` tensor is a column). ``CKA = HSIC(X, Y) / sqrt(HSIC(X, X) HSIC(Y, Y))`` with

- ``kernel="linear"``: :mod:`ckalab.alignment.linear` (feature space; the packed Gram form only
  when a feature count reaches n and it takes fewer multiply-adds, so a single pair with
  ``p, q < n`` never allocates an n x n matrix);
- ``kernel="rbf"``: Gaussian kernels (:func:`ckalab.alignment.rbf_kernel`) and the Gram form
  of :mod:`ckalab.alignment.gram`.

``debiased=True`` uses the unbiased HSIC (needs n >= 4). Results are float64 on the input's
device; NaN with one :class:`~ckalab.alignment.DegenerateRepresentationWarning` for a constant
representation (:mod:`ckalab.alignment.degenerate`).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from ckalab.alignment.checks import (
    _as_matrix,
    _check_debiased_n,
    _check_kernel,
    _check_same_n,
)
from ckalab.alignment.gram import _cka_centered, _hsic_centered, _rbf_centered
from ckalab.alignment.linear import LinearGramStats, _linear_stats, linear_gram_stats


def _check_pair(x: Tensor, y: Tensor, kernel: str, debiased: bool) -> tuple[Tensor, Tensor]:
    """Validate the arguments of :func:`cka` / :func:`hsic`; x and y as (n, p), (n, q)."""
    _check_kernel(kernel)
    x = _as_matrix("x", x)
    y = _as_matrix("y", y)
    n = _check_same_n([("x", x), ("y", y)])
    _check_debiased_n(n, debiased)
    return x, y


def _pair_stats(x: Tensor, y: Tensor) -> LinearGramStats:
    """Linear statistics of one pair; n x n Gram matrices only when a feature count reaches n."""
    allow_gram = max(x.shape[1], y.shape[1]) >= x.shape[0]
    return _linear_stats([x], [y], ["x"], ["y"], allow_gram=allow_gram)


def hsic(
    x: Tensor, y: Tensor, *, kernel: str = "linear", debiased: bool = False, sigma: float = 1.0
) -> Tensor:
    """HSIC between representations ``x`` (n, p) and ``y`` (n, q) or (n,).

    Linear kernel: biased ``||Yc^T Xc||_F^2 / (n-1)^2`` (feature space) or the unbiased
    estimator (``debiased=True``, n >= 4). ``kernel="rbf"``: :func:`rbf_kernel` on both inputs,
    then :func:`hsic_gram`. Returns a 0-dim float64 tensor.
    """
    x, y = _check_pair(x, y, kernel, debiased)
    if kernel == "rbf":
        kx, _ = _rbf_centered("x", x, sigma)
        ky, _ = _rbf_centered("y", y, sigma)
        return _hsic_centered(kx, ky, debiased)
    return _pair_stats(x, y).hsic(debiased).reshape(())


def cka(
    x: Tensor, y: Tensor, *, kernel: str = "linear", debiased: bool = False, sigma: float = 1.0
) -> Tensor:
    """Centered kernel alignment between ``x`` (n, p) and ``y`` (n, q) or (n,).

    ``CKA = HSIC(X, Y) / sqrt(HSIC(X, X) HSIC(Y, Y))``.

    - ``kernel="linear"`` (default), biased: ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)``
      in feature space; the Gram form only if p or q >= n and it takes fewer multiply-adds.
    - ``debiased=True``: the unbiased HSIC estimator (Song et al. 2012); may be negative,
      needs n >= 4.
    - ``kernel="rbf"``: Gaussian kernels with bandwidth ``sigma`` times the median nonzero
      pairwise distance, applied to both ``x`` and ``y`` (n x n matrices).

    Returns a 0-dim float64 tensor on the input's device; differentiable with respect to the
    inputs. A constant representation (within rounding of its scale) gives NaN and one
    :class:`DegenerateRepresentationWarning`. Integer ``y`` is refused: build targets with
    :func:`one_hot` or :func:`signed_targets`.
    """
    x, y = _check_pair(x, y, kernel, debiased)
    if kernel == "rbf":
        kx, ky = _rbf_centered("x", x, sigma), _rbf_centered("y", y, sigma)
        return _cka_centered([kx], [ky], debiased).reshape(())
    return _pair_stats(x, y).cka(debiased).reshape(())


def cka_matrix(
    xs: Sequence[Tensor],
    ys: Sequence[Tensor] | None = None,
    *,
    kernel: str = "linear",
    debiased: bool = False,
    sigma: float = 1.0,
) -> Tensor:
    """CKA between every representation in ``xs`` and every one in ``ys`` (default: ``xs``).

    ``xs`` is a list of (n, p_i) tensors (e.g. the layers of one network on n inputs), ``ys`` a
    list of (n, q_j) tensors (the layers of another network). Returns a float64 matrix of shape
    (len(xs), len(ys)). Every representation is centered once and every self-term computed once;
    with ``ys=None`` each pair is computed once. For the linear kernel the feature-space products
    or packed, upper-triangle n x n Gram matrices are used, whichever takes fewer multiply-adds.
    """
    _check_kernel(kernel)
    if isinstance(xs, Tensor) or (ys is not None and isinstance(ys, Tensor)):
        raise TypeError("cka_matrix takes lists of tensors; use cka(x, y) for a single pair")
    if kernel == "linear":
        stats = linear_gram_stats(xs, ys)
        _check_debiased_n(stats.n, debiased)
        return stats.cka(debiased)
    xs_list = [_as_matrix(f"xs[{i}]", t) for i, t in enumerate(xs)]
    ys_list = xs_list if ys is None else [_as_matrix(f"ys[{j}]", t) for j, t in enumerate(ys)]
    if not xs_list or not ys_list:
        raise ValueError("xs and ys must each hold at least one representation")
    n = _check_same_n(
        [(f"xs[{i}]", t) for i, t in enumerate(xs_list)]
        + [(f"ys[{j}]", t) for j, t in enumerate(ys_list)]
    )
    _check_debiased_n(n, debiased)
    kx = [_rbf_centered(f"xs[{i}]", t, sigma) for i, t in enumerate(xs_list)]
    ky = None
    if ys is not None:
        ky = [_rbf_centered(f"ys[{j}]", t, sigma) for j, t in enumerate(ys_list)]
    return _cka_centered(kx, ky, debiased)
