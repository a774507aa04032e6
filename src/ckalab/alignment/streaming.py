r"""Minibatch CKA (Nguyen, Raghu & Kornblith 2021) for data that does not fit in memory.

For batches ``b = 1..B`` of representations ``X_i^b`` (n_b, p_i) and ``Y_j^b`` (n_b, q_j), with
linear kernels ``K_i^b``, ``L_j^b`` and the unbiased HSIC_1 of :mod:`ckalab.alignment.linear`::

    CKA_mb(X_i, Y_j) = mean_b HSIC_1(K_i^b, L_j^b)
                       / sqrt(mean_b HSIC_1(K_i^b, K_i^b) * mean_b HSIC_1(L_j^b, L_j^b))

an unbiased ratio of unbiased estimators (exact in expectation, not a mean of per-batch CKAs).
Each batch needs n_b >= 4. For the exact full-data value use
:class:`ckalab.alignment.LinearCKAAccumulator` instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from ckalab.alignment.checks import _as_list, _check_debiased_n
from ckalab.alignment.degenerate import _normalize
from ckalab.alignment.linear import linear_gram_stats


class StreamingCKA:
    r"""Minibatch CKA (see :mod:`ckalab.alignment.streaming`) accumulated batch by batch.

    ``update(xs, ys)`` takes a list of representations of the batch (e.g. every layer) and either
    a list (or single tensor) of targets/other representations, or ``None`` for the matrix of
    ``xs`` against themselves. Every call must pass the same number of representations with
    the same feature counts. :meth:`compute` returns the (len(xs), len(ys)) float64 matrix
    (a 0-dim tensor if single tensors were passed for both). A representation that is constant
    (within rounding, :mod:`ckalab.alignment.degenerate`) in every batch has no within-batch
    variance for this estimator to see: its CKA is NaN with one warning.

    State: the three HSIC sums (float64 matrices/vectors) and per representation whether it has
    been constant in every batch so far (bool vectors).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen so far."""
        self._sum_xy: Tensor | None = None
        self._sum_xx: Tensor | None = None
        self._sum_yy: Tensor | None = None
        self._constant_x: Tensor | None = None
        self._constant_y: Tensor | None = None
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
        xs_list = _as_list(xs)
        ys_list = None if ys is None else _as_list(ys)
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
            self._constant_x, self._constant_y = stats.constant_x, stats.constant_y
        else:
            self._sum_xy = self._sum_xy + h
            self._sum_xx = self._sum_xx + hx
            self._sum_yy = self._sum_yy + hy
            self._constant_x = self._constant_x & stats.constant_x
            self._constant_y = self._constant_y & stats.constant_y
        self._batches += 1
        self._signature = signature
        self._scalar = scalar

    def compute(self) -> Tensor:
        """The minibatch CKA matrix from all batches so far (NaN + warning where degenerate)."""
        if self._sum_xy is None:
            raise RuntimeError("StreamingCKA.compute() called before any update()")
        b = self._batches
        out = _normalize(
            self._sum_xy / b,
            self._sum_xx / b,
            self._sum_yy / b,
            self._constant_x,
            self._constant_y,
        )
        return out.reshape(()) if self._scalar else out
