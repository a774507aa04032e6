r"""Linear HSIC and CKA in feature space (or from packed Gram matrices when that is cheaper).

Shapes: ``X_i`` are ``(n, p_i)`` representations, ``Y_j`` are ``(n, q_j)``; ``Xc = H X`` with
``H = I - 11^T / n``; ``K = Xc Xc^T``, ``L = Yc Yc^T`` (never formed for ``p, q < n``) and their
diagonals ``k = diag(K)``, ``l = diag(L)`` (squared row norms of the centered rows).

Biased (Kornblith et al. 2019)::

    HSIC_0(X, Y) = <K, L>_F / (n-1)^2 = ||Yc^T Xc||_F^2 / (n-1)^2
    CKA(X, Y)    = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)

Debiased (the unbiased HSIC of Song et al. 2012, ``K~`` = K with a zero diagonal)::

    HSIC_1(K, L) = [tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1]
                   / (n (n-3))

It is invariant to adding ``a 1^T + 1 a^T`` to K, so features may be centered first; then
``K~ 1 = -k``, ``tr(K~ L~) = <K, L> - k . l``, ``1^T K~ 1 = -tr K`` and ``1^T K~ L~ 1 = k . l``,
so everything reduces to ``<K, L>``, ``||K||_F^2``, ``k . l`` and ``tr K`` (feature space too).
It can be negative and needs ``n >= 4``.

Routes: the feature-space products ``X_i^T Y_j`` or the packed ``n x n`` Gram matrices,
whichever takes fewer multiply-adds (Gram matrices only while their float32 storage stays under
2 GiB). A constant representation (see :mod:`ckalab.alignment.degenerate`) is flagged from its
columns, the same way on both routes, and its CKA is NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ckalab.alignment.checks import (
    _as_list,
    _as_matrix,
    _center,
    _check_debiased_n,
    _check_same_n,
    _compute_dtype,
)
from ckalab.alignment.degenerate import _normalize, constant_columns
from ckalab.alignment.products import (
    _GRAM_MEMORY_LIMIT_BYTES,
    _cross_frobenius_sq,
    _inner_products,
    _packed_grams,
    _row_norms_sq,
    _squared_norms,
    _sym_frobenius_sq,
)


@dataclass(frozen=True)
class LinearGramStats:
    r"""Sufficient statistics for linear HSIC/CKA between two lists of representations.

    For centered representations ``X_i`` (n, p_i) and ``Y_j`` (n, q_j), with ``K_i = X_i X_i^T``,
    ``L_j = Y_j Y_j^T`` and their diagonals (squared row norms) ``k_i = diag(K_i)``,
    ``l_j = diag(L_j)``:

    - ``cross[i, j] = <K_i, L_j>_F = ||Y_j^T X_i||_F^2``, shape (len(xs), len(ys));
    - ``self_x[i] = ||K_i||_F^2 = ||X_i^T X_i||_F^2``, ``self_y[j] = ||L_j||_F^2``;
    - ``diag_dot[i, j] = k_i . l_j``, shape (len(xs), len(ys));
    - ``trace_x[i] = 1^T k_i = tr(K_i)``, ``trace_y[j] = tr(L_j)``;
    - ``diag_sq_x[i] = k_i . k_i``, ``diag_sq_y[j] = l_j . l_j``;
    - ``constant_x[i]``, ``constant_y[j]``: bool, the representation is constant within rounding
      (:mod:`ckalab.alignment.degenerate`); ``None`` means none is.

    All float64. The biased estimator needs ``cross``, ``self_*`` and ``n``; the debiased one
    (see :mod:`ckalab.alignment.linear`: with centered features ``K~ 1 = -k``, so
    ``tr(K~ L~) = <K, L> - k . l``, ``1^T K~ 1 = -tr K`` and ``1^T K~ L~ 1 = k . l``) needs the
    diagonal terms too. A caller who needs both estimators computes the expensive products
    once. Built by :func:`linear_gram_stats` (all rows at once) or
    :class:`~ckalab.alignment.LinearCKAAccumulator` (streamed over row chunks).
    """

    n: int
    cross: Tensor
    self_x: Tensor
    self_y: Tensor
    diag_dot: Tensor
    trace_x: Tensor
    trace_y: Tensor
    diag_sq_x: Tensor
    diag_sq_y: Tensor
    constant_x: Tensor | None = None
    constant_y: Tensor | None = None

    def hsic(self, debiased: bool = False) -> Tensor:
        """HSIC matrix (len(xs), len(ys)): biased ``<HKH, HLH> / (n-1)^2`` or unbiased HSIC_1."""
        if debiased:
            _check_debiased_n(self.n, True)
            sums = self.trace_x[:, None] * self.trace_y[None, :]
            return _hsic_unbiased(self.cross, self.diag_dot, sums, self.n)
        return self.cross / (self.n - 1) ** 2

    def self_hsic(self, debiased: bool = False) -> tuple[Tensor, Tensor]:
        """HSIC of every representation with itself: vectors (len(xs),) and (len(ys),)."""
        if debiased:
            _check_debiased_n(self.n, True)
            return (
                _hsic_unbiased(self.self_x, self.diag_sq_x, self.trace_x.square(), self.n),
                _hsic_unbiased(self.self_y, self.diag_sq_y, self.trace_y.square(), self.n),
            )
        return self.self_x / (self.n - 1) ** 2, self.self_y / (self.n - 1) ** 2

    def cka(self, debiased: bool = False) -> Tensor:
        """CKA matrix (len(xs), len(ys)); NaN (with one warning) where a representation is
        constant or a self-HSIC is not > 0."""
        h = self.hsic(debiased)
        hx, hy = self.self_hsic(debiased)
        return _normalize(h, hx, hy, self.constant_x, self.constant_y)


def _hsic_unbiased(inner: Tensor, diag_dot: Tensor, trace_prod: Tensor, n: int) -> Tensor:
    """Unbiased HSIC (Song et al. 2012) from ``<K, L>``, ``k . l`` and ``tr(K) tr(L)``.

    ``[<K, L> - k.l + tr(K) tr(L) / ((n-1)(n-2)) - 2 k.l / (n-2)] / (n (n-3))``, elementwise
    over tensors of any (common) shape.
    """
    return (inner - diag_dot + trace_prod / ((n - 1) * (n - 2)) - 2.0 * diag_dot / (n - 2)) / (
        n * (n - 3)
    )


def _diag_stats(diag: Tensor) -> tuple[Tensor, Tensor]:
    """``(trace, diag_sq)`` of stacked diagonals (m, n): row sums and row sums of squares."""
    return diag.sum(1), diag.square().sum(1)


def _flops_feature(n: int, ps: Sequence[int], qs: Sequence[int], symmetric: bool) -> float:
    """Multiply-adds of the feature-space route (self terms use half the blocks)."""
    self_cost = sum(n * p * p / 2 for p in ps) + (
        0 if symmetric else sum(n * q * q / 2 for q in qs)
    )
    if symmetric:
        cross = sum(n * ps[i] * ps[j] for i in range(len(ps)) for j in range(i + 1, len(ps)))
    else:
        cross = sum(n * p * q for p in ps for q in qs)
    return self_cost + cross


def _flops_gram(n: int, ps: Sequence[int], qs: Sequence[int], symmetric: bool) -> float:
    reps = list(ps) if symmetric else list(ps) + list(qs)
    pairs = len(ps) * (len(ps) + 1) / 2 if symmetric else len(ps) * len(qs) + len(reps)
    return sum(n * n * p / 2 for p in reps) + pairs * n * n / 2


def linear_gram_stats(
    xs: Sequence[Tensor] | Tensor,
    ys: Sequence[Tensor] | Tensor | None = None,
    *,
    allow_gram: bool = True,
) -> LinearGramStats:
    """Compute :class:`LinearGramStats` for all pairs between ``xs`` and ``ys``.

    ``xs`` and ``ys`` are lists of (n, p_i) / (n, q_j) tensors (or single tensors); ``ys=None``
    means ``ys = xs`` and every product is computed once (the result is symmetric). Each
    representation is validated, centered once and its self-term computed once. The feature-space
    products (``X_i^T Y_j``) or the packed n x n Gram matrices are used, whichever takes fewer
    multiply-adds; Gram matrices only when ``allow_gram`` and their storage stays under 2 GiB.
    """
    xs_list = _as_list(xs)
    ys_list = None if ys is None else _as_list(ys)
    names_x = [f"xs[{i}]" for i in range(len(xs_list))]
    names_y = None if ys_list is None else [f"ys[{j}]" for j in range(len(ys_list))]
    return _linear_stats(xs_list, ys_list, names_x, names_y, allow_gram)


def _linear_stats(
    xs_list: list[Tensor],
    ys_list: list[Tensor] | None,
    names_x: list[str],
    names_y: list[str] | None,
    allow_gram: bool,
) -> LinearGramStats:
    """:func:`linear_gram_stats` with the argument names to use in error messages."""
    symmetric = ys_list is None
    if not xs_list or (ys_list is not None and not ys_list):
        raise ValueError("xs and ys must each hold at least one representation")
    named = [(nm, _as_matrix(nm, t)) for nm, t in zip(names_x, xs_list, strict=True)]
    if ys_list is not None:
        named += [(nm, _as_matrix(nm, t)) for nm, t in zip(names_y, ys_list, strict=True)]
    n = _check_same_n(named)
    mats = [t for _, t in named]
    dtype = _compute_dtype(*mats)
    centered_means = [_center(nm, t, dtype) for nm, t in named]
    centered = [c for c, _ in centered_means]
    diags = torch.stack([_row_norms_sq(t) for t in centered])  # diag(K) (m, n)
    energies = diags.sum(1)  # ||Xc||_F^2
    pairs = zip(centered_means, energies, strict=True)
    constant = torch.stack([constant_columns(c, m, dtype, e) for (c, m), e in pairs])
    nx = len(xs_list)
    cx = centered[:nx]
    cy = cx if symmetric else centered[nx:]
    constant_x = constant[:nx]
    constant_y = constant_x if symmetric else constant[nx:]
    ps = [t.shape[1] for t in cx]
    qs = [t.shape[1] for t in cy]

    diag_x = diags[:nx]
    diag_y = diag_x if symmetric else diags[nx:]

    n_reps = len(cx) if symmetric else len(cx) + len(cy)
    gram_bytes = n_reps * n * n * 4
    use_gram = (
        allow_gram
        and gram_bytes <= _GRAM_MEMORY_LIMIT_BYTES
        and _flops_gram(n, ps, qs, symmetric) < _flops_feature(n, ps, qs, symmetric)
    )
    if use_gram:
        packed_x = _packed_grams(cx)
        packed_y = packed_x if symmetric else _packed_grams(cy)
        cross = _inner_products(packed_x, packed_y)
        if symmetric:
            cross = 0.5 * (cross + cross.T)
            self_x = self_y = _squared_norms(packed_x)
            cross = cross - torch.diag(cross.diagonal()) + torch.diag(self_x)
        else:
            self_x = _squared_norms(packed_x)
            self_y = _squared_norms(packed_y)
    else:
        self_x = torch.stack([_sym_frobenius_sq(t) for t in cx])
        self_y = self_x if symmetric else torch.stack([_sym_frobenius_sq(t) for t in cy])
        rows = []
        for i, a in enumerate(cx):
            row = []
            for j, b in enumerate(cy):
                if symmetric and i == j:
                    row.append(self_x[i])
                elif symmetric and j < i:
                    row.append(rows[j][i])
                else:
                    row.append(_cross_frobenius_sq(a, b))
            rows.append(row)
        cross = torch.stack([torch.stack(row) for row in rows])
    trace_x, diag_sq_x = _diag_stats(diag_x)
    trace_y, diag_sq_y = (trace_x, diag_sq_x) if symmetric else _diag_stats(diag_y)
    return LinearGramStats(
        n=n,
        cross=cross,
        self_x=self_x,
        self_y=self_y,
        diag_dot=diag_x @ diag_y.T,
        trace_x=trace_x,
        trace_y=trace_y,
        diag_sq_x=diag_sq_x,
        diag_sq_y=diag_sq_y,
        constant_x=constant_x,
        constant_y=constant_y,
    )
