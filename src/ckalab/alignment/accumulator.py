r"""Exact linear CKA over data streamed in row chunks (memory independent of n).

Shapes: every chunk holds the same ``n_c`` rows of representations ``x_i`` (n_c, p_i) and
``y_j`` (n_c, q_j); after all chunks the statistics are those of the ``(n, p_i)`` and
``(n, q_j)`` concatenations, as :func:`ckalab.alignment.linear_gram_stats` computes them, from
uncentered sums of shifted rows (the algebra is in :class:`LinearCKAAccumulator`). This is the
full-dataset estimator, not the minibatch one of :mod:`ckalab.alignment.streaming`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ckalab.alignment.checks import (
    _as_list,
    _as_matrix,
    _check_debiased_n,
    _check_same_n,
    _compute_dtype,
    _raise_if_not_finite,
)
from ckalab.alignment.degenerate import _constant_from_energies
from ckalab.alignment.linear import LinearGramStats
from ckalab.alignment.products import _NARROW, _STREAM_ROWS, _blocks, _panels, _row_norms_sq


def _offsets(sizes: Sequence[int]) -> list[slice]:
    """Consecutive slices of the given sizes: where each representation sits in a stack."""
    out, start = [], 0
    for s in sizes:
        out.append(slice(start, start + s))
        start += s
    return out


def _panel_layout(p: int) -> list[tuple[slice, slice]]:
    """``(columns, flat range)`` of the upper-triangle panels of a (p, p) product, in order.

    Panel ``k`` is rows ``s_k`` and columns ``s_k.start:`` of ``x^T x`` (its leading square is a
    diagonal block, the rest lies above it), stored row-major in the flat range.
    """
    out, start = [], 0
    for s in _panels(p):
        size = (s.stop - s.start) * (p - s.start)
        out.append((s, slice(start, start + size)))
        start += size
    return out


class _Side:
    """Stacked sums of one side's representations (all x, or all y) in float64."""

    def __init__(self, shifts: list[Tensor]) -> None:
        widths = [c.shape[0] for c in shifts]
        self.widths = widths
        self.cols = _offsets(widths)
        self.layouts = [_panel_layout(p) for p in widths]
        sizes = [lay[-1][1].stop for lay in self.layouts]
        self.grams = _offsets(sizes)  # where each representation's panels sit in ``gram``
        f64 = {"dtype": torch.float64, "device": shifts[0].device}
        self.shift = torch.cat(shifts)  # (P,), compute dtype: c
        self.gram = torch.zeros(sum(sizes), **f64)  # B = sum b b^T, upper panels, flat
        self.total = torch.zeros(sum(widths), **f64)  # S = sum b (P,)
        self.norm_vec = torch.zeros(sum(widths), **f64)  # sum a_i b_i (P,)
        self.norm_sum = torch.zeros(len(widths), **f64)  # sum a_i
        self.norm_sq = torch.zeros(len(widths), **f64)  # sum a_i^2

    def add_gram(self, k: int, b: Tensor, a: Tensor) -> None:
        """Add the upper-triangle panels of ``b^T b`` and the row-norm sums of one chunk."""
        p = self.widths[k]
        flat = self.gram[self.grams[k]]
        for s, r in self.layouts[k]:
            g = (b[:, s].T @ b[:, s.start :]).double()
            flat[r].view(s.stop - s.start, p - s.start).add_(g)
        self.norm_sum[k] += a.sum()
        self.norm_sq[k] += a.square().sum()

    def centered(self, k: int, n: int, dtype: torch.dtype) -> tuple[Tensor, ...]:
        """``(u, ||B - n u u^T||_F^2, sum k, sum k^2, constant)`` of representation ``k``."""
        p = self.widths[k]
        cols = self.cols[k]
        u = self.total[cols] / n
        flat = self.gram[self.grams[k]]
        frob = u.new_zeros(())
        ubu = u.new_zeros(())
        diag = []
        for s, r in self.layouts[k]:
            w = s.stop - s.start
            g = flat[r].view(w, p - s.start)
            c = g - n * torch.outer(u[s], u[s.start :])
            # The panel's leading (w, w) square is a diagonal block; the rest appears twice.
            frob = frob + c[:, :w].square().sum() + 2.0 * c[:, w:].square().sum()
            ubu = ubu + u[s] @ g[:, :w] @ u[s] + 2.0 * (u[s] @ g[:, w:] @ u[s.stop :])
            diag.append(torch.diagonal(c[:, :w]))
        uu = u @ u
        norm_sum = self.norm_sum[k]
        trace = norm_sum - n * uu
        diag_sq = (
            self.norm_sq[k]
            - 4.0 * (u @ self.norm_vec[cols])
            + 4.0 * ubu
            + 2.0 * uu * norm_sum
            - 3.0 * n * uu.square()
        )
        mean = self.shift[cols].double() + u
        constant = _constant_from_energies(torch.cat(diag), mean, n, dtype)
        return u, frob, trace, diag_sq, constant


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

    State: plain float64 tensors (plus the shifts, in the compute precision), each stacking every
    representation of one side along its feature axis (``P = sum p_i``, ``Q = sum q_j``; the
    upper-triangle panels of every ``B_xx`` are concatenated in one flat vector), so that an
    ensemble of accumulators can be batched along a new leading axis. A representation whose
    columns are all constant within rounding (:mod:`ckalab.alignment.degenerate`; centered
    energy ``diag(B_xx) - n u^2`` against ``n (c + u)^2``) gets NaN CKA, as in
    :func:`~ckalab.alignment.linear_gram_stats`.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every chunk seen so far."""
        self._n = 0
        self._dtype: torch.dtype | None = None
        self._signature: tuple[tuple[int, ...], tuple[int, ...]] | None = None
        self._x: _Side | None = None
        self._y: _Side | None = None
        # B_xy = sum b e^T for every pair: block [P_i, Q_j] is (p_i, q_j).
        self._cross: Tensor | None = None
        self._norm_pair: Tensor | None = None  # (len(xs), len(ys)): sum a_i a'_j
        self._norm_x_e: Tensor | None = None  # (len(xs), Q): [i, Q_j] = sum a_i e_j
        self._norm_y_b: Tensor | None = None  # (len(ys), P): [j, P_i] = sum a'_j b_i

    @property
    def n(self) -> int:
        """Number of rows (examples) accumulated since the last reset."""
        return self._n

    def update(self, xs: Sequence[Tensor] | Tensor, ys: Sequence[Tensor] | Tensor) -> None:
        """Accumulate one chunk: ``xs`` (n_c, p_i) and ``ys`` (n_c, q_j) for the same rows."""
        xs_list = _as_list(xs)
        ys_list = _as_list(ys)
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
        if first:
            shifts = [t.mean(0) for t in mats]
        else:
            shifts = [self._x.shift[c] for c in self._x.cols]
            shifts += [self._y.shift[c] for c in self._y.cols]
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
        self._x = _Side(shifts_x)
        self._y = _Side(shifts_y)
        f64 = {"dtype": torch.float64, "device": shifts_x[0].device}
        big_p, big_q = sum(signature[0]), sum(signature[1])
        self._cross = torch.zeros(big_p, big_q, **f64)
        self._norm_pair = torch.zeros(len(shifts_x), len(shifts_y), **f64)
        self._norm_x_e = torch.zeros(len(shifts_x), big_q, **f64)
        self._norm_y_b = torch.zeros(len(shifts_y), big_p, **f64)

    def _add(self, bs: list[Tensor], es: list[Tensor], ax: Tensor, ay: Tensor) -> None:
        """Add one row chunk (shifted rows ``bs``, ``es``; their squared norms ``ax``, ``ay``)."""
        self._norm_pair += ax @ ay.T
        # x side: [1; a_i; a'_1..a'_m; e_j with q_j <= p_i]^T b_i, one narrow^T wide product.
        self._add_side(self._x, self._y, bs, es, ax, ay, x_side=True)
        # y side: [1; a'_j; a_1..a_k; b_i with p_i < q_j]^T e_j.
        self._add_side(self._y, self._x, es, bs, ay, ax, x_side=False)

    def _add_side(
        self,
        side: _Side,
        other: _Side,
        own: list[Tensor],
        others: list[Tensor],
        a_own: Tensor,
        a_other: Tensor,
        *,
        x_side: bool,
    ) -> None:
        """One side of :meth:`_add`: for each representation ``w`` on this side, one product
        ``z^T w`` with ``z = [1; a_w; a_others; the other side's narrower representations]``
        gives its column sum, ``sum a_w w``, ``sum a_other w`` (into ``_norm_y_b`` on the x
        side, ``_norm_x_e`` on the y side) and its cross products with the narrower
        representations (into ``_cross``). "Narrower" means no more columns on the x side and
        fewer on the y side, so each cross product is computed once. A narrow ``w``
        (``_NARROW`` columns or fewer) is multiplied in float64."""
        ones = a_own.new_ones(1, a_own.shape[1])
        norm_acc = self._norm_y_b if x_side else self._norm_x_e
        for k, w in enumerate(own):
            narrow = [
                r
                for r, o in enumerate(others)
                if (o.shape[1] <= w.shape[1] if x_side else o.shape[1] < w.shape[1])
            ]
            z = torch.cat(
                [torch.cat([ones, a_own[k : k + 1], a_other]).T.to(w.dtype)]
                + [others[r] for r in narrow],
                1,
            )
            if w.shape[1] <= _NARROW:  # targets: float64 products (see products._NARROW)
                z, w = z.double(), w.double()
            g = (z.T @ w).double()
            cols = side.cols[k]
            side.total[cols] += g[0]
            side.norm_vec[cols] += g[1]
            norm_acc[:, cols] += g[2 : 2 + len(others)]
            offset = 2 + len(others)
            for r in narrow:
                block = g[offset : offset + others[r].shape[1]]  # others[r]^T w
                if x_side:  # e_r^T b_k = B_xy^T
                    self._cross[cols, other.cols[r]] += block.T
                else:  # b_r^T e_k = B_xy
                    self._cross[other.cols[r], cols] += block
                offset += others[r].shape[1]
            side.add_gram(k, w, a_own[k])

    def stats(self) -> LinearGramStats:
        """The :class:`LinearGramStats` of all rows accumulated so far (needs n >= 2)."""
        n = self._n
        if self._signature is None:
            raise RuntimeError("LinearCKAAccumulator has no data: call update() first")
        if n < 2:
            raise ValueError(f"CKA needs at least 2 rows (examples) in total, got n={n}")
        x, y = self._x, self._y
        cx = [x.centered(i, n, self._dtype) for i in range(len(x.widths))]
        cy = [y.centered(j, n, self._dtype) for j in range(len(y.widths))]
        cross = torch.empty_like(self._norm_pair)
        diag_dot = torch.empty_like(self._norm_pair)
        for i, (u, *_) in enumerate(cx):
            for j, (v, *_) in enumerate(cy):
                g = self._cross[x.cols[i], y.cols[j]]  # B_xy (p_i, q_j)
                cross[i, j] = (g - n * torch.outer(u, v)).square().sum()
                uu, vv = u @ u, v @ v
                diag_dot[i, j] = (
                    self._norm_pair[i, j]
                    - 2.0 * (v @ self._norm_x_e[i, y.cols[j]])
                    - 2.0 * (u @ self._norm_y_b[j, x.cols[i]])
                    + 4.0 * (u @ g @ v)
                    + vv * x.norm_sum[i]
                    + uu * y.norm_sum[j]
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
            constant_x=torch.stack([c[4] for c in cx]),
            constant_y=torch.stack([c[4] for c in cy]),
        )

    def hsic(self, debiased: bool = False) -> Tensor:
        """HSIC matrix (len(xs), len(ys)), float64; debiased needs n >= 4 rows in total."""
        _check_debiased_n(self._n, debiased)
        return self.stats().hsic(debiased)

    def cka(self, debiased: bool = False) -> Tensor:
        """CKA matrix (len(xs), len(ys)), float64; NaN plus a
        :class:`DegenerateRepresentationWarning` where a representation is constant."""
        _check_debiased_n(self._n, debiased)
        return self.stats().cka(debiased)
