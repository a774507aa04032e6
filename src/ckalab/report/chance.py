r"""Chance levels: what a CKA value or an accuracy means when nothing was learned.

Two reference levels are drawn beside every CKA figure:

- **Untrained network**: the same measure at step 0 (read from the store: the initialization is
  always evaluated).
- **Random-feature floor** of the biased linear CKA, :func:`random_feature_cka`: the value that
  Gaussian random features of the same width ``p`` reach on the same number of examples ``n``
  with targets of the same rank. The biased estimator is positive even for features unrelated to
  the targets; values near this floor are estimator bias, not alignment.

And one test decides whether a finished run learned anything, :func:`did_not_learn`.
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = [
    "LEARNING_ALPHA",
    "LEARNING_MARGIN",
    "did_not_learn",
    "random_feature_cka",
    "target_rank",
]

#: A run "did not learn" unless its train accuracy is significantly above ``1/k + margin``.
LEARNING_MARGIN = 0.05
#: Significance level of the one-sided binomial test of :func:`did_not_learn`.
LEARNING_ALPHA = 1e-3


@functools.lru_cache(maxsize=4096)
def random_feature_cka(n: int, p: int, rank: int) -> float:
    r"""Small-sample floor of biased linear CKA: Gaussian random features against targets.

    ``X`` is ``n x p`` with i.i.d. standard normal entries (independent of the targets), ``Y`` a
    target matrix whose centered form ``Yc`` has ``rank`` equal non-zero singular values (one-hot
    targets of ``k`` balanced classes: ``rank = k - 1``; +-1 targets of two classes: ``rank = 1``).
    With ``m = n - 1`` (the dimension left after centering), ``E[Xc Xc^T] = p H`` gives
    ``E||Yc^T Xc||_F^2 = p tr(Yc^T Yc)``, the Wishart moment ``E tr((Xc Xc^T)^2) = m p (m + p + 1)``
    gives ``||Xc^T Xc||_F``, and ``||Yc^T Yc||_F = tr(Yc^T Yc) / sqrt(rank)``; the ratio of these
    expectations is::

        CKA_floor(n, p, rank) = sqrt(rank * p / (m * (m + p + 1)))

    It matches the Monte-Carlo mean of :func:`ckalab.alignment.cka` on random data to a few
    percent (tested), e.g. 0.068 at n = 200, p = 2000, rank 1, and 0.003 at n = 10,000,
    p = 1,024, rank 1. (Debiased CKA has expectation 0 on random features: no floor.) Cached.
    """
    if n < 2 or p < 1 or rank < 1:
        return math.nan
    m = n - 1
    return math.sqrt(min(1.0, rank * p / (m * (m + p + 1.0))))


def target_rank(num_classes: int, encoding: str = "one_hot") -> int:
    """Rank of the centered target matrix: ``k - 1`` for one-hot (or index) targets of ``k``
    balanced classes, 1 for +-1 (``signed``) targets of two classes."""
    if encoding == "signed":
        return 1
    return max(1, int(num_classes) - 1)


def did_not_learn(
    train_acc: np.ndarray | float,
    num_classes: np.ndarray | int,
    n: np.ndarray | int,
    *,
    margin: float = LEARNING_MARGIN,
    alpha: float = LEARNING_ALPHA,
) -> np.ndarray:
    r"""Whether a finished run's final train accuracy is at chance (vectorized over runs).

    Definition: with ``k`` classes and ``n`` training examples evaluated, a run *did not learn*
    when its final train accuracy ``a`` is not significantly above ``c = 1/k + margin`` (default
    margin 0.05, which absorbs class imbalance: a constant output scores the majority-class
    fraction, up to ~0.54 for an MNIST digit pair), by a one-sided binomial test at level
    ``alpha`` (default 0.001)::

        did_not_learn  <=>  P[Binomial(n, c) >= round(a n)] > alpha

    For n = 10,000 and two classes this is ``a <= ~0.565``. A missing (NaN) accuracy counts as
    not learned: there is no evidence of learning. Such runs are marked in every figure, listed in
    the report and left out of the correlation table unless asked.
    """
    from scipy.special import betainc

    a = np.asarray(train_acc, dtype=float)
    k = np.asarray(num_classes, dtype=float)
    nn = np.maximum(np.asarray(n, dtype=float), 1.0)
    c = np.clip(1.0 / np.maximum(k, 1.0) + margin, 0.0, 1.0)
    successes = np.round(np.nan_to_num(a, nan=0.0) * nn)
    # P[Binomial(n, c) >= s] = I_c(s, n - s + 1) (regularized incomplete beta) for 1 <= s <= n
    # (= scipy.stats.binom.sf(s - 1, n, c); scipy.special imports much faster than scipy.stats)
    s = np.clip(successes, 1.0, nn)
    with np.errstate(invalid="ignore"):
        pvalue = np.where(successes <= 0, 1.0, betainc(s, nn - s + 1.0, c))
    return np.asarray(np.isnan(a) | (pvalue > alpha))
