r"""Kernel alignment: HSIC, centered kernel alignment (CKA) and kernel-target alignment.

This module depends on torch alone and can be used without the rest of ckalab.

Notation
--------
``x`` is an ``(n, p)`` representation and ``y`` an ``(n, q)`` representation or target matrix
(rows are examples; a 1-D ``y`` of shape ``(n,)`` is a column). ``H = I - 11^T / n`` is the
centering matrix, ``Xc = H X`` and ``Yc = H Y``.

Linear CKA (biased, Kornblith et al. 2019), computed in feature space::

    CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)

which equals the Gram form ``<HKH, HLH>_F / (||HKH||_F ||HLH||_F)`` with ``K = X X^T`` and
``L = Y Y^T``; the n x n Gram form is used only when it takes fewer floating-point operations
(p or q large relative to n, or many pairs sharing representations in :func:`cka_matrix`).
For a single pair with ``p, q < n`` no n x n matrix is ever allocated.

Debiased CKA replaces the biased HSIC by the unbiased estimator of Song et al. (2012)::

    HSIC_1(K, L) = [tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1]
                   / (n (n-3))

with ``K~`` = K with its diagonal set to zero. It is invariant to adding row- or column-constant
matrices to K, so features may be centered first; with centered features ``K~ 1 = -diag(K)`` and
everything reduces to ``<K, L>_F = ||Yc^T Xc||_F^2`` and the row norms ``diag(K)``, so the
debiased estimator is computed in feature space too. It can be negative and needs ``n >= 4``.

Data seen in row chunks: :class:`LinearCKAAccumulator` gives exactly the full-data linear CKA
above (both estimators) with memory independent of n; :class:`StreamingCKA` is the minibatch
estimator (a mean over batches).

Numerics: inputs are centered before any product (this removes the float32 cancellation of
``X^T X - n mu mu^T``), matrix products run in the input's precision (float32 for float32,
bfloat16 and float16 inputs; float64 for float64), and every reduction is accumulated in
float64. Results are 0-dim (or matrix) float64 tensors on the input's device.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "DegenerateRepresentationWarning",
    "LinearCKAAccumulator",
    "LinearGramStats",
    "StreamingCKA",
    "centered_alignment",
    "cka",
    "cka_matrix",
    "hsic",
    "hsic_gram",
    "kernel_alignment",
    "linear_gram_stats",
    "one_hot",
    "rbf_kernel",
    "signed_targets",
]

#: Square blocks of this many rows are used for packed n x n Gram matrices (upper triangle only).
_SYMMETRIC_BLOCK = 256
#: Products over more rows than this are accumulated chunk by chunk in float64.
_ROW_CHUNK = 4096
#: Float32 rows per product in :class:`LinearCKAAccumulator` (bounds the float32 rounding like
#: ``_ROW_CHUNK``; a 2,048 x 1,024 chunk stays in cache while all its panels are multiplied).
_STREAM_ROWS = 2048
#: Rows of the upper-triangle panels of ``x^T x`` (feature-space self terms): 128 does ``9/16`` of
#: the full product's multiply-adds for p = 1,024 (256: ``10/16``) at the same rate.
_PANEL = 128
#: Gram matrices are built for :func:`cka_matrix` only when their float32 storage stays below this.
_GRAM_MEMORY_LIMIT_BYTES = 2 * 1024**3


class DegenerateRepresentationWarning(RuntimeWarning):
    """A representation with zero variance (e.g. a dead ReLU layer): its CKA is NaN."""


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


def _as_matrix(name: str, t: Tensor, min_rows: int = 2) -> Tensor:
    """Check one representation and return it as an (n, p) floating-point matrix."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype in (torch.bool,) or not (t.is_floating_point()):
        raise ValueError(
            f"{name} has dtype {t.dtype}; alignment needs floating-point values. Class labels "
            "are not guessed: encode them with ckalab.alignment.one_hot(labels) or "
            "signed_targets(labels)."
        )
    if t.ndim == 1:
        t = t.unsqueeze(1)
    elif t.ndim != 2:
        raise ValueError(
            f"{name} must have shape (n, features) or (n,), got shape {tuple(t.shape)} "
            f"({t.ndim} dimensions); flatten per-example features first, e.g. {name}.flatten(1)"
        )
    if t.shape[0] < min_rows:
        rows = "row" if min_rows == 1 else "rows"
        raise ValueError(
            f"{name} needs at least {min_rows} {rows} (examples), got shape {tuple(t.shape)}"
        )
    if t.shape[1] < 1:
        raise ValueError(f"{name} has no features: shape {tuple(t.shape)}")
    return t


def _raise_if_not_finite(name: str, t: Tensor) -> None:
    """Full scan for NaN/Inf; raises a ValueError that counts them."""
    bad = int((~torch.isfinite(t)).sum())
    if bad:
        raise ValueError(f"{name} contains {bad} NaN or Inf values (shape {tuple(t.shape)})")


def _check_same_n(names_shapes: Sequence[tuple[str, Tensor]]) -> int:
    n = names_shapes[0][1].shape[0]
    for name, t in names_shapes:
        if t.shape[0] != n:
            listing = ", ".join(f"{nm} {tuple(tt.shape)}" for nm, tt in names_shapes)
            raise ValueError(
                f"all inputs must have the same number of rows (examples); got {listing} "
                f"({name} differs)"
            )
    return n


def _check_debiased_n(n: int, debiased: bool) -> None:
    if debiased and n < 4:
        raise ValueError(f"the debiased (unbiased HSIC) estimator needs n >= 4 examples, got n={n}")


def _compute_dtype(*ts: Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (half precisions are upcast)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in ts) else torch.float32


def _center(name: str, t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t - column_mean(t)`` in ``dtype``, refusing NaN/Inf values.

    NaN or Inf anywhere makes its column mean non-finite, so the mean that centering needs
    anyway doubles as the finiteness check; the full scan runs only when it fails. For float32
    the mean uses torch's pairwise summation; its rounding leaves a common offset of at most
    one ulp of the mean, whose effect on CKA is second order (below 1e-9 for a shift of 1e3).
    """
    t = t.to(dtype)
    mean = t.mean(dim=0, keepdim=True)
    if not bool(torch.isfinite(mean).all()):
        _raise_if_not_finite(name, t)
    return t - mean


# ----------------------------------------------------------------------------------------------
# Products
# ----------------------------------------------------------------------------------------------


def _blocks(size: int, block: int) -> list[slice]:
    return [slice(i, min(i + block, size)) for i in range(0, size, block)]


def _row_norms_sq(a: Tensor) -> Tensor:
    """``diag(a a^T)``: squared row norms of ``a`` (n, p) as a float64 vector (n,)."""
    return torch.linalg.vector_norm(a, dim=1).double().square()


def _row_chunks(n: int, dtype: torch.dtype) -> list[slice]:
    """Row chunks over which float32 products are accumulated in float64 (one chunk for float64)."""
    return [slice(0, n)] if dtype == torch.float64 else _blocks(n, _ROW_CHUNK)


def _panels(p: int) -> list[slice]:
    """Row panels of the upper triangle of a (p, p) product: panel ``k`` is rows ``s_k`` and
    columns ``s_k.start:`` (its leading square is a diagonal block, the rest lies above it)."""
    return _blocks(p, _PANEL)


def _add_panels(acc: list[Tensor | None], chunk: Tensor, panels: list[slice]) -> None:
    """Add the upper-triangle panels of ``chunk^T chunk`` (input precision) to ``acc`` (float64)."""
    for k, s in enumerate(panels):
        g = (chunk[:, s].T @ chunk[:, s.start :]).double()
        acc[k] = g if acc[k] is None else acc[k] + g


def _sym_frobenius_sq(a: Tensor) -> Tensor:
    """``||a^T a||_F^2`` in float64 from the upper-triangle panels of ``a^T a`` only.

    ``a`` is ``(n, p)``. Row panels ``a[:, s]^T a[:, s.start:]`` of ``a^T a`` are computed (about
    ``n p^2 / 2`` multiply-adds for large ``p`` instead of ``n p^2``); each is accumulated in
    float64 over chunks of rows (bounding the float32 rounding by the chunk length, not by n),
    the chunk staying in cache while all its panels are multiplied.
    """
    panels = _panels(a.shape[1])
    acc: list[Tensor | None] = [None] * len(panels)
    for rows in _row_chunks(a.shape[0], a.dtype):
        _add_panels(acc, a[rows], panels)
    out = a.new_zeros((), dtype=torch.float64)
    for s, g in zip(panels, acc, strict=True):
        w = s.stop - s.start  # the leading (w, w) square is on the diagonal, the rest appears twice
        out = out + g[:, :w].square().sum() + 2.0 * g[:, w:].square().sum()
    return out


def _cross_frobenius_sq(a: Tensor, b: Tensor) -> Tensor:
    """``||a^T b||_F^2`` in float64 (row chunks accumulated in float64); a (n, p), b (n, q)."""
    if a.shape[1] > b.shape[1]:
        a, b = b, a  # same norm; (narrow^T wide) reads the wide matrix row by row, ~10x faster
    acc = None
    for rows in _row_chunks(a.shape[0], a.dtype):
        g = (a[rows].T @ b[rows]).double()
        acc = g if acc is None else acc + g
    return acc.square().sum()


def _packed_gram_size(n: int, block: int = _SYMMETRIC_BLOCK) -> int:
    sizes = [s.stop - s.start for s in _blocks(n, block)]
    return sum(sizes[i] * sj for i in range(len(sizes)) for sj in sizes[i:])


def _packed_gram_into(out: Tensor, a: Tensor, block: int = _SYMMETRIC_BLOCK) -> None:
    """Write ``K = a a^T`` into ``out``, packed so that dot products of packings are ``<K, L>_F``.

    Only the upper-triangle blocks of K are computed (``n^2 p / 2`` multiply-adds); off-diagonal
    blocks are scaled by ``sqrt(2)`` so that ``packed(K) . packed(L) = <K, L>_F``. ``a`` is
    ``(n, p)``; ``out`` is a contiguous vector of ``_packed_gram_size(n)`` entries, same dtype.
    """
    slices = _blocks(a.shape[0], block)
    offset = 0
    for i, si in enumerate(slices):
        ai = a[si]
        for sj in slices[i:]:
            size = (si.stop - si.start) * (sj.stop - sj.start)
            view = out[offset : offset + size].view(si.stop - si.start, sj.stop - sj.start)
            torch.mm(ai, a[sj].T, out=view)
            if sj != si:
                view.mul_(math.sqrt(2.0))
            offset += size


def _packed_grams(reps: Sequence[Tensor]) -> Tensor:
    """Packed Gram matrices of several (n, p_i) representations as rows of one (m, N) matrix."""
    n = reps[0].shape[0]
    if torch.is_grad_enabled() and any(a.requires_grad for a in reps):
        return torch.stack([_packed_gram_differentiable(a) for a in reps])
    out = reps[0].new_empty(len(reps), _packed_gram_size(n))
    for i, a in enumerate(reps):
        _packed_gram_into(out[i], a)
    return out


def _packed_gram_differentiable(a: Tensor, block: int = _SYMMETRIC_BLOCK) -> Tensor:
    """The packing of :func:`_packed_gram_into` built out of place, so autograd can follow it."""
    slices = _blocks(a.shape[0], block)
    parts = []
    for i, si in enumerate(slices):
        for sj in slices[i:]:
            g = (a[si] @ a[sj].T).reshape(-1)
            parts.append(g if sj == si else g * math.sqrt(2.0))
    return torch.cat(parts)


def _inner_products(a: Tensor, b: Tensor, chunk: int = 1 << 16) -> Tensor:
    """``a @ b.T`` for long rows (m, N) x (k, N), chunks of N summed in float64 -> (m, k)."""
    if a.dtype == torch.float64:
        return a @ b.T
    acc = None
    for cols in _blocks(a.shape[1], chunk):
        g = (a[:, cols] @ b[:, cols].T).double()
        acc = g if acc is None else acc + g
    return acc


# ----------------------------------------------------------------------------------------------
# Linear statistics shared by every linear estimator
# ----------------------------------------------------------------------------------------------


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
    - ``diag_sq_x[i] = k_i . k_i``, ``diag_sq_y[j] = l_j . l_j``.

    All float64. The biased estimator needs ``cross``, ``self_*`` and ``n``; the debiased one
    (see the module docstring: with centered features ``K~ 1 = -k``, so
    ``tr(K~ L~) = <K, L> - k . l``, ``1^T K~ 1 = -tr K`` and ``1^T K~ L~ 1 = k . l``) needs the
    diagonal terms too. A caller who needs both estimators computes the expensive products
    once. Built by :func:`linear_gram_stats` (all rows at once) or
    :class:`LinearCKAAccumulator` (streamed over row chunks).
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
        """CKA matrix (len(xs), len(ys)); NaN (with a warning) where a self-HSIC is not > 0."""
        h = self.hsic(debiased)
        hx, hy = self.self_hsic(debiased)
        return _normalize(h, hx, hy)


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


def _normalize(h: Tensor, hx: Tensor, hy: Tensor) -> Tensor:
    """``h[i, j] / sqrt(hx[i] hy[j])``, NaN plus one warning where the denominator is not > 0."""
    denom = hx[:, None] * hy[None, :]
    bad = ~(denom > 0)
    if bool(bad.any()):
        warnings.warn(
            "a representation has zero variance (constant features, e.g. a dead ReLU layer) or a "
            "non-positive self-HSIC estimate; its CKA is NaN",
            DegenerateRepresentationWarning,
            stacklevel=3,
        )
        denom = torch.where(bad, torch.full_like(denom, math.nan), denom)
    return h / denom.sqrt()


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
    xs_list = [xs] if isinstance(xs, Tensor) else list(xs)
    ys_list = None if ys is None else ([ys] if isinstance(ys, Tensor) else list(ys))
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
    centered = [_center(nm, t, dtype) for nm, t in named]
    cx = centered[: len(xs_list)]
    cy = cx if symmetric else centered[len(xs_list) :]
    ps = [t.shape[1] for t in cx]
    qs = [t.shape[1] for t in cy]

    diag_x = torch.stack([_row_norms_sq(t) for t in cx])
    diag_y = diag_x if symmetric else torch.stack([_row_norms_sq(t) for t in cy])

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
            self_x = self_y = torch.diagonal(cross).clone()
        else:
            self_x = _inner_products(packed_x, packed_x).diagonal().clone()
            self_y = _inner_products(packed_y, packed_y).diagonal().clone()
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
    )


# ----------------------------------------------------------------------------------------------
# Gram-form estimators (explicit kernels)
# ----------------------------------------------------------------------------------------------


def _as_gram(name: str, k: Tensor) -> Tensor:
    if not isinstance(k, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(k).__name__}")
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"{name} must be a square (n, n) Gram matrix, got shape {tuple(k.shape)}")
    if not k.is_floating_point():
        raise ValueError(f"{name} has dtype {k.dtype}; a Gram matrix must be floating-point")
    if k.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 examples, got shape {tuple(k.shape)}")
    if not bool(torch.isfinite(k).all()):
        raise ValueError(f"{name} contains NaN or Inf values (shape {tuple(k.shape)})")
    return k


def _check_grams(k1: Tensor, k2: Tensor, names: tuple[str, str]) -> tuple[Tensor, Tensor]:
    k1 = _as_gram(names[0], k1)
    k2 = _as_gram(names[1], k2)
    if k1.shape != k2.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, got {tuple(k1.shape)} and "
            f"{tuple(k2.shape)}"
        )
    return k1, k2


def _double_center(k: Tensor) -> Tensor:
    """``H K H`` computed as K minus row means, column means, plus the grand mean (float64)."""
    k = k.double()
    row = k.mean(1, keepdim=True)
    col = k.mean(0, keepdim=True)
    return k - row - col + k.mean()


def _hsic_gram_pair(k1: Tensor, k2: Tensor, debiased: bool) -> Tensor:
    """HSIC of two validated (n, n) Gram matrices, float64."""
    n = k1.shape[0]
    if not debiased:
        return (_double_center(k1) * _double_center(k2)).sum() / (n - 1) ** 2
    _check_debiased_n(n, True)
    kt = k1.double().clone()
    lt = k2.double().clone()
    kt.fill_diagonal_(0.0)
    lt.fill_diagonal_(0.0)
    k1 = kt.sum(1)
    l1 = lt.sum(1)
    trace = (kt * lt).sum()
    return (trace + k1.sum() * l1.sum() / ((n - 1) * (n - 2)) - 2.0 * (k1 @ l1) / (n - 2)) / (
        n * (n - 3)
    )


def hsic_gram(k1: Tensor, k2: Tensor, *, debiased: bool = False) -> Tensor:
    """HSIC between two explicit (n, n) Gram matrices.

    Biased: ``<HKH, HLH>_F / (n-1)^2``. Debiased: the unbiased estimator of Song et al. (2012)
    (see the module docstring); needs ``n >= 4``. Returns a 0-dim float64 tensor.
    """
    k1, k2 = _check_grams(k1, k2, ("k1", "k2"))
    return _hsic_gram_pair(k1, k2, debiased)


def _gram_cka(k1: Tensor, k2: Tensor, debiased: bool) -> Tensor:
    hkl = _hsic_gram_pair(k1, k2, debiased)
    hkk = _hsic_gram_pair(k1, k1, debiased)
    hll = _hsic_gram_pair(k2, k2, debiased)
    return _normalize(hkl.reshape(1, 1), hkk.reshape(1), hll.reshape(1)).reshape(())


def centered_alignment(k1: Tensor, k2: Tensor, *, debiased: bool = False) -> Tensor:
    """Centered kernel alignment of two explicit (n, n) Gram matrices (CKA, Gram form).

    ``<H K1 H, H K2 H>_F / (||H K1 H||_F ||H K2 H||_F)``; with ``debiased=True`` the unbiased HSIC
    replaces the Frobenius inner products. Returns a 0-dim float64 tensor (NaN with a
    :class:`DegenerateRepresentationWarning` when a centered kernel is zero).
    """
    k1, k2 = _check_grams(k1, k2, ("k1", "k2"))
    return _gram_cka(k1, k2, debiased)


def kernel_alignment(k1: Tensor, k2: Tensor) -> Tensor:
    """Uncentered kernel-target alignment (Cristianini et al. 2001).

    ``A(K1, K2) = <K1, K2>_F / (||K1||_F ||K2||_F)``, for comparison with the centered version.
    Returns a 0-dim float64 tensor.
    """
    k1, k2 = _check_grams(k1, k2, ("k1", "k2"))
    a = k1.double()
    b = k2.double()
    norms = a.square().sum().sqrt() * b.square().sum().sqrt()
    if not bool(norms > 0):
        warnings.warn(
            "a Gram matrix is zero; its kernel alignment is NaN",
            DegenerateRepresentationWarning,
            stacklevel=2,
        )
        return torch.full((), math.nan, dtype=torch.float64, device=a.device)
    return (a * b).sum() / norms


def rbf_kernel(x: Tensor, *, sigma: float = 1.0) -> Tensor:
    """Gaussian kernel ``exp(-||x_i - x_j||^2 / (2 (sigma * m)^2))``, m = median pairwise distance.

    ``x`` is (n, p); the median is taken over the ``n (n-1) / 2`` distinct pairs. Returns an
    (n, n) float64 matrix. A constant ``x`` (median 0) gives the all-ones kernel.
    """
    return _rbf("x", x, sigma)


def _rbf(name: str, x: Tensor, sigma: float) -> Tensor:
    """:func:`rbf_kernel` with the argument name to use in error messages."""
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive finite number, got {sigma!r}")
    x = _as_matrix(name, x)
    xc = _center(name, x, torch.float64)
    sq = xc.square().sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (xc @ xc.T)).clamp_min(0.0)
    d2.fill_diagonal_(0.0)
    n = x.shape[0]
    iu = torch.triu_indices(n, n, offset=1, device=x.device)
    median_d2 = d2[iu[0], iu[1]].median()
    if float(median_d2.detach()) == 0.0:
        return torch.ones_like(d2)
    bandwidth_sq = sigma**2 * median_d2
    return torch.exp(-d2 / (2.0 * bandwidth_sq))


# ----------------------------------------------------------------------------------------------
# Public feature-space API
# ----------------------------------------------------------------------------------------------


def _check_kernel(kernel: str) -> None:
    if kernel not in ("linear", "rbf"):
        raise ValueError(f"kernel must be 'linear' or 'rbf', got {kernel!r}")


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
        return _hsic_gram_pair(_rbf("x", x, sigma), _rbf("y", y, sigma), debiased)
    return _pair_stats(x, y).hsic(debiased).reshape(())


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


def cka(
    x: Tensor, y: Tensor, *, kernel: str = "linear", debiased: bool = False, sigma: float = 1.0
) -> Tensor:
    """Centered kernel alignment between ``x`` (n, p) and ``y`` (n, q) or (n,).

    ``CKA = HSIC(X, Y) / sqrt(HSIC(X, X) HSIC(Y, Y))``.

    - ``kernel="linear"`` (default), biased: ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)``
      in feature space; the Gram form only if p or q >= n and it takes fewer multiply-adds.
    - ``debiased=True``: the unbiased HSIC estimator (Song et al. 2012); may be negative,
      needs n >= 4.
    - ``kernel="rbf"``: Gaussian kernels with bandwidth ``sigma`` times the median pairwise
      distance, applied to both ``x`` and ``y`` (n x n matrices).

    Returns a 0-dim float64 tensor on the input's device; differentiable with respect to the
    inputs. A constant representation gives NaN and a :class:`DegenerateRepresentationWarning`.
    Integer ``y`` is refused: build targets with :func:`one_hot` or :func:`signed_targets`.
    """
    x, y = _check_pair(x, y, kernel, debiased)
    if kernel == "rbf":
        return _gram_cka(_rbf("x", x, sigma), _rbf("y", y, sigma), debiased)
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
    kx = [_rbf(f"xs[{i}]", t, sigma) for i, t in enumerate(xs_list)]
    ky = kx if ys is None else [_rbf(f"ys[{j}]", t, sigma) for j, t in enumerate(ys_list)]
    hx = torch.stack([_hsic_gram_pair(k, k, debiased) for k in kx])
    hy = hx if ys is None else torch.stack([_hsic_gram_pair(k, k, debiased) for k in ky])
    h = torch.stack([torch.stack([_hsic_gram_pair(a, b, debiased) for b in ky]) for a in kx])
    return _normalize(h, hx, hy)


# ----------------------------------------------------------------------------------------------
# Exact linear CKA streamed over row chunks
# ----------------------------------------------------------------------------------------------


class _Moments:
    """Shifted moments of one representation (see :class:`LinearCKAAccumulator`), float64."""

    def __init__(self, shift: Tensor) -> None:
        p = shift.shape[0]
        self.shift = shift  # (p,), compute dtype
        self.panels = _panels(p)
        self.gram: list[Tensor | None] = [None] * len(self.panels)  # B = sum b b^T, upper panels
        self.total = shift.new_zeros(p, dtype=torch.float64)  # S = sum b
        self.norm_sum = shift.new_zeros((), dtype=torch.float64)  # sum a
        self.norm_sq = shift.new_zeros((), dtype=torch.float64)  # sum a^2
        self.norm_vec = shift.new_zeros(p, dtype=torch.float64)  # sum a_i b_i

    def add(self, b: Tensor, a: Tensor) -> None:
        """Add the upper-triangle panels of ``b^T b`` and the row-norm sums of one chunk."""
        _add_panels(self.gram, b, self.panels)
        self.norm_sum += a.sum()
        self.norm_sq += a.square().sum()

    def centered(self, n: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(u, ||B - n u u^T||_F^2, sum k, sum k^2)`` after ``n`` rows (class docstring)."""
        u = self.total / n
        frob = u.new_zeros(())
        ubu = u.new_zeros(())
        for s, g in zip(self.panels, self.gram, strict=True):
            w = s.stop - s.start
            c = g - n * torch.outer(u[s], u[s.start :])
            # The panel's leading (w, w) square is a diagonal block; the rest appears twice.
            frob = frob + c[:, :w].square().sum() + 2.0 * c[:, w:].square().sum()
            ubu = ubu + u[s] @ g[:, :w] @ u[s] + 2.0 * (u[s] @ g[:, w:] @ u[s.stop :])
        uu = u @ u
        trace = self.norm_sum - n * uu
        diag_sq = (
            self.norm_sq
            - 4.0 * (u @ self.norm_vec)
            + 4.0 * ubu
            + 2.0 * uu * self.norm_sum
            - 3.0 * n * uu.square()
        )
        return u, frob, trace, diag_sq


class LinearCKAAccumulator:
    r"""Exact linear CKA (biased and debiased) over data streamed in row chunks.

    ``update(xs, ys)`` takes the same rows (examples) of several representations ``xs``
    ((n_c, p_i) chunks, e.g. every probed layer of a network on one batch) and of targets or
    other representations ``ys`` ((n_c, q_j) chunks); after the last chunk, :meth:`cka`,
    :meth:`hsic` and :meth:`stats` give exactly (up to float rounding) what
    ``linear_gram_stats(all_xs, all_ys)`` gives on the concatenated n rows. This is the
    full-dataset estimator, not the minibatch estimator of :class:`StreamingCKA`. Memory is
    ``O(sum p_i^2 + sum p_i q_j)`` float64 numbers, independent of n; the cost is about
    ``n p^2 / 2`` multiply-adds per representation (upper-triangle panels) plus ``n p q`` per
    pair, as for the feature-space route of :func:`linear_gram_stats` — use that on the
    concatenated rows instead when ``p >= n`` (its n x n Gram route is then cheaper).

    Shifted accumulation. The shift ``c`` of a representation is the column mean of its first
    chunk (``d`` for a ``y``); every row is used as ``b = x - c`` (``e = y - d``), which keeps the
    uncentered sums small, so that centering at the end does not cancel (float32 features
    shifted by 1e3 lose nothing). In float32 the first chunk should therefore be a fair sample
    of the data (hundreds of rows, not one): the further ``c`` lies from the overall mean, the
    more the float32 products round. Over all chunks, in float64 (products in the input
    precision over at most 2,048 float32 rows, each result added in float64), with
    ``a = ||b||^2`` and ``a' = ||e||^2`` per row::

        S_x = sum b (p,)          B_xx = sum b b^T (p, p; upper-triangle panels only)
        S_y = sum e (q,)          B_yy = sum e e^T (q, q)      B_xy = sum b e^T (p, q)
        sum a, sum a^2, sum a b (p,), sum a e (q,), sum a', sum a'^2, sum a' e (q,),
        sum a' b (p,), sum a a'

    (``S_x``, ``sum a b``, ``sum a' b`` and, for ``q <= p``, ``B_xy^T`` are the rows of one
    narrow-transpose-wide product ``[1, a, a', e]^T b``.) With ``u = S_x / n``, ``v = S_y / n``
    (the centered rows are ``b - u``)::

        Xc^T Xc = B_xx - n u u^T      Yc^T Yc = B_yy - n v v^T      Xc^T Yc = B_xy - n u v^T

    give ``<K, L> = ||Xc^T Yc||_F^2``, ``||K||_F^2 = ||Xc^T Xc||_F^2`` and ``||L||_F^2``. The
    squared row norms of the centered rows, ``k = ||b - u||^2 = a - 2 b.u + |u|^2`` and
    ``l = a' - 2 e.v + |v|^2``, enter the debiased estimator only through::

        sum k   = sum a - n |u|^2
        sum k^2 = sum a^2 - 4 u.(sum a b) + 4 u^T B_xx u + 2 |u|^2 sum a - 3 n |u|^4
        sum k l = sum a a' - 2 v.(sum a e) - 2 u.(sum a' b) + 4 u^T B_xy v
                  + |v|^2 sum a + |u|^2 sum a' - 3 n |u|^2 |v|^2

    (using ``sum b.u = n |u|^2``, ``sum (b.u)^2 = u^T B_xx u``, ``sum (b.u)(e.v) =
    u^T B_xy v``), which :class:`LinearGramStats` turns into the biased and debiased HSIC and
    CKA. The compute precision (float64 if a first-chunk input is float64, else float32) and
    the device are those of the first chunk.

    Every chunk is validated like the inputs of :func:`linear_gram_stats` (the same number of
    rows in every input, floating-point, no NaN/Inf, at least one row) and must have the same
    number of representations with the same feature counts as the first; a rejected chunk
    leaves the accumulator unchanged. :meth:`reset` starts over.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every chunk seen so far."""
        self._n = 0
        self._dtype: torch.dtype | None = None
        self._signature: tuple[tuple[int, ...], tuple[int, ...]] | None = None
        self._mx: list[_Moments] = []
        self._my: list[_Moments] = []
        # [i][j]: B_xy^T (q_j, p_i) if q_j <= p_i, else B_xy (p_i, q_j): narrow^T wide.
        self._cross: list[list[Tensor | None]] = []
        self._norm_pair: Tensor | None = None  # (len(xs), len(ys)): sum a_i a'_j
        self._norm_x_e: list[list[Tensor | None]] = []  # [i][j]: sum a_i e_j (q_j,)
        self._norm_y_b: list[list[Tensor | None]] = []  # [i][j]: sum a'_j b_i (p_i,)

    @property
    def n(self) -> int:
        """Number of rows (examples) accumulated since the last reset."""
        return self._n

    def update(self, xs: Sequence[Tensor] | Tensor, ys: Sequence[Tensor] | Tensor) -> None:
        """Accumulate one chunk: ``xs`` (n_c, p_i) and ``ys`` (n_c, q_j) for the same rows."""
        xs_list = [xs] if isinstance(xs, Tensor) else list(xs)
        ys_list = [ys] if isinstance(ys, Tensor) else list(ys)
        if not xs_list or not ys_list:
            raise ValueError("xs and ys must each hold at least one representation")
        named = [(f"xs[{i}]", _as_matrix(f"xs[{i}]", t, 1)) for i, t in enumerate(xs_list)]
        named += [(f"ys[{j}]", _as_matrix(f"ys[{j}]", t, 1)) for j, t in enumerate(ys_list)]
        n_c = _check_same_n(named)
        nx = len(xs_list)
        signature = (
            tuple(t.shape[1] for _, t in named[:nx]),
            tuple(t.shape[1] for _, t in named[nx:]),
        )
        if self._signature is not None and signature != self._signature:
            raise ValueError(
                f"update() got representations with feature counts (xs, ys) = {signature}, but "
                f"earlier chunks had {self._signature}; call reset() to start a new computation"
            )
        first = self._signature is None
        dtype = _compute_dtype(*(t for _, t in named)) if first else self._dtype
        mats = [t.to(dtype) for _, t in named]
        shifts = [t.mean(0) for t in mats] if first else [m.shift for m in self._mx + self._my]
        shifted = [t - c for t, c in zip(mats, shifts, strict=True)]
        norms = torch.stack([_row_norms_sq(t) for t in shifted])  # (nx + ny, n_c) float64
        # Validate before changing any state: a NaN/Inf anywhere makes its row norm non-finite.
        if not bool(torch.isfinite(norms.sum())):
            for (name, _), t in zip(named, mats, strict=True):
                _raise_if_not_finite(name, t)
        if first:
            self._start(dtype, signature, shifts[:nx], shifts[nx:])
        for rows in _blocks(n_c, n_c if dtype == torch.float64 else _STREAM_ROWS):
            self._add(
                [t[rows] for t in shifted[:nx]],
                [t[rows] for t in shifted[nx:]],
                norms[:nx, rows],
                norms[nx:, rows],
            )
        self._n += n_c

    def _start(self, dtype, signature, shifts_x: list[Tensor], shifts_y: list[Tensor]) -> None:
        self._dtype = dtype
        self._signature = signature
        self._mx = [_Moments(c) for c in shifts_x]
        self._my = [_Moments(d) for d in shifts_y]
        self._cross = [[None] * len(shifts_y) for _ in shifts_x]
        self._norm_x_e = [[None] * len(shifts_y) for _ in shifts_x]
        self._norm_y_b = [[None] * len(shifts_y) for _ in shifts_x]

    @staticmethod
    def _add_to(acc: list[list[Tensor | None]], i: int, j: int, value: Tensor) -> None:
        old = acc[i][j]
        acc[i][j] = value if old is None else old + value

    def _add(self, bs: list[Tensor], es: list[Tensor], ax: Tensor, ay: Tensor) -> None:
        """Add one row chunk (shifted rows ``bs``, ``es``; their squared norms ``ax``, ``ay``)."""
        pair = ax @ ay.T
        self._norm_pair = pair if self._norm_pair is None else self._norm_pair + pair
        # x side: [1; a_i; a'_1..a'_m; e_j with q_j <= p_i]^T b_i, one narrow^T wide product.
        self._add_side(self._mx, bs, es, ax, ay, self._norm_y_b, strict=False, x_side=True)
        # y side: [1; a'_j; a_1..a_k; b_i with p_i < q_j]^T e_j.
        self._add_side(self._my, es, bs, ay, ax, self._norm_x_e, strict=True, x_side=False)

    def _add_side(
        self,
        moments: list[_Moments],
        own: list[Tensor],
        others: list[Tensor],
        a_own: Tensor,
        a_other: Tensor,
        norm_acc: list[list[Tensor | None]],
        *,
        strict: bool,
        x_side: bool,
    ) -> None:
        """One side of :meth:`_add`: for each representation ``w`` on this side, one product
        ``z^T w`` with ``z = [1; a_w; a_others; the other side's narrower representations]``
        gives its column sum, ``sum a_w w``, ``sum a_other w`` (into ``norm_acc``) and its cross
        products with the narrower representations (into ``_cross``). ``strict``: "narrower"
        means fewer columns (y side) rather than no more (x side), so each cross product is
        computed once."""
        ones = a_own.new_ones(1, a_own.shape[1])
        for k, (m, w) in enumerate(zip(moments, own, strict=True)):
            narrow = [
                r
                for r, o in enumerate(others)
                if (o.shape[1] < w.shape[1] if strict else o.shape[1] <= w.shape[1])
            ]
            z = torch.cat(
                [torch.cat([ones, a_own[k : k + 1], a_other]).T.to(w.dtype)]
                + [others[r] for r in narrow],
                1,
            )
            g = (z.T @ w).double()
            m.total += g[0]
            m.norm_vec += g[1]
            for r in range(len(others)):
                i, j = (k, r) if x_side else (r, k)
                self._add_to(norm_acc, i, j, g[2 + r])
            offset = 2 + len(others)
            for r in narrow:
                width = others[r].shape[1]
                i, j = (k, r) if x_side else (r, k)
                self._add_to(self._cross, i, j, g[offset : offset + width])
                offset += width
            m.add(w, a_own[k])

    def stats(self) -> LinearGramStats:
        """The :class:`LinearGramStats` of all rows accumulated so far (needs n >= 2)."""
        n = self._n
        if self._norm_pair is None:
            raise RuntimeError("LinearCKAAccumulator has no data: call update() first")
        if n < 2:
            raise ValueError(f"CKA needs at least 2 rows (examples) in total, got n={n}")
        cx = [m.centered(n) for m in self._mx]
        cy = [m.centered(n) for m in self._my]
        cross = torch.empty_like(self._norm_pair)
        diag_dot = torch.empty_like(self._norm_pair)
        for i, (mx, (u, *_)) in enumerate(zip(self._mx, cx, strict=True)):
            for j, (my, (v, *_)) in enumerate(zip(self._my, cy, strict=True)):
                g = self._cross[i][j]
                if v.shape[0] <= u.shape[0]:  # B_xy^T (q, p)
                    centered = g - n * torch.outer(v, u)
                    ubv = v @ g @ u
                else:  # B_xy (p, q)
                    centered = g - n * torch.outer(u, v)
                    ubv = u @ g @ v
                cross[i, j] = centered.square().sum()
                uu, vv = u @ u, v @ v
                diag_dot[i, j] = (
                    self._norm_pair[i, j]
                    - 2.0 * (v @ self._norm_x_e[i][j])
                    - 2.0 * (u @ self._norm_y_b[i][j])
                    + 4.0 * ubv
                    + vv * mx.norm_sum
                    + uu * my.norm_sum
                    - 3.0 * n * uu * vv
                )
        return LinearGramStats(
            n=n,
            cross=cross,
            self_x=torch.stack([c[1] for c in cx]),
            self_y=torch.stack([c[1] for c in cy]),
            diag_dot=diag_dot,
            trace_x=torch.stack([c[2] for c in cx]),
            trace_y=torch.stack([c[2] for c in cy]),
            diag_sq_x=torch.stack([c[3] for c in cx]),
            diag_sq_y=torch.stack([c[3] for c in cy]),
        )

    def hsic(self, debiased: bool = False) -> Tensor:
        """HSIC matrix (len(xs), len(ys)), float64; debiased needs n >= 4 rows in total."""
        _check_debiased_n(self._n, debiased)
        return self.stats().hsic(debiased)

    def cka(self, debiased: bool = False) -> Tensor:
        """CKA matrix (len(xs), len(ys)), float64; NaN plus a
        :class:`DegenerateRepresentationWarning` where a representation has zero variance."""
        _check_debiased_n(self._n, debiased)
        return self.stats().cka(debiased)


# ----------------------------------------------------------------------------------------------
# Minibatch (streaming) CKA
# ----------------------------------------------------------------------------------------------


class StreamingCKA:
    r"""Minibatch CKA (Nguyen, Raghu & Kornblith 2021) for data that does not fit in memory.

    For batches ``b = 1..B`` the unbiased HSIC of every pair is accumulated::

        CKA_mb(X_i, Y_j) = mean_b HSIC_1(K_i^b, L_j^b)
                           / sqrt(mean_b HSIC_1(K_i^b, K_i^b) * mean_b HSIC_1(L_j^b, L_j^b))

    which is an unbiased ratio of unbiased estimators (exact in expectation, not a mean of
    per-batch CKAs). Each batch needs at least 4 examples.

    ``update(xs, ys)`` takes a list of representations of the batch (e.g. every layer) and either
    a list (or single tensor) of targets/other representations, or ``None`` for the matrix of
    ``xs`` against themselves. Every call must pass the same number of representations with
    the same feature counts. :meth:`compute` returns the (len(xs), len(ys)) float64 matrix
    (a 0-dim tensor if single tensors were passed for both).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen so far."""
        self._sum_xy: Tensor | None = None
        self._sum_xx: Tensor | None = None
        self._sum_yy: Tensor | None = None
        self._batches = 0
        self._signature: tuple | None = None
        self._scalar = False

    @property
    def num_batches(self) -> int:
        """Number of batches accumulated since the last reset."""
        return self._batches

    def update(
        self, xs: Sequence[Tensor] | Tensor, ys: Sequence[Tensor] | Tensor | None = None
    ) -> None:
        """Accumulate the unbiased HSIC terms of one batch (n >= 4 examples)."""
        scalar = isinstance(xs, Tensor) and isinstance(ys, Tensor)
        xs_list = [xs] if isinstance(xs, Tensor) else list(xs)
        ys_list = None if ys is None else ([ys] if isinstance(ys, Tensor) else list(ys))
        signature = (
            tuple(tuple(t.shape[1:]) for t in xs_list),
            None if ys_list is None else tuple(tuple(t.shape[1:]) for t in ys_list),
        )
        if self._signature is not None and signature != self._signature:
            raise ValueError(
                f"update() got representations with feature shapes {signature}, but earlier "
                f"batches had {self._signature}; call reset() to start a new computation"
            )
        stats = linear_gram_stats(xs_list, ys_list)
        _check_debiased_n(stats.n, True)
        h = stats.hsic(debiased=True)
        hx, hy = stats.self_hsic(debiased=True)
        if self._sum_xy is None:
            self._sum_xy, self._sum_xx, self._sum_yy = h, hx, hy
        else:
            self._sum_xy = self._sum_xy + h
            self._sum_xx = self._sum_xx + hx
            self._sum_yy = self._sum_yy + hy
        self._batches += 1
        self._signature = signature
        self._scalar = scalar

    def compute(self) -> Tensor:
        """The minibatch CKA matrix from all batches so far (NaN + warning where degenerate)."""
        if self._sum_xy is None:
            raise RuntimeError("StreamingCKA.compute() called before any update()")
        b = self._batches
        out = _normalize(self._sum_xy / b, self._sum_xx / b, self._sum_yy / b)
        return out.reshape(()) if self._scalar else out


# ----------------------------------------------------------------------------------------------
# Target encodings
# ----------------------------------------------------------------------------------------------


def _check_labels(labels: Tensor) -> Tensor:
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.ndim != 1 or labels.is_floating_point() or labels.is_complex():
        raise ValueError(
            f"labels must be a 1-D integer tensor, got shape {tuple(labels.shape)} and dtype "
            f"{labels.dtype}"
        )
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(f"labels must be >= 0, got minimum {int(labels.min())}")
    return labels.long()


def one_hot(
    labels: Tensor, num_classes: int | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """One-hot targets (n, num_classes) from integer class labels (n,) in ``0..num_classes-1``."""
    labels = _check_labels(labels)
    k = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    if labels.numel() and int(labels.max()) >= k:
        raise ValueError(f"labels contain {int(labels.max())}, not below num_classes={k}")
    return torch.nn.functional.one_hot(labels, k).to(dtype)


def signed_targets(labels: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """-1 / +1 targets (n, 1) for two classes: label 0 -> -1, label 1 -> +1."""
    labels = _check_labels(labels)
    if labels.numel() and int(labels.max()) > 1:
        raise ValueError(
            f"signed targets need two classes labelled 0 and 1, got label {int(labels.max())}"
        )
    return (2.0 * labels.to(dtype) - 1.0).unsqueeze(1)
