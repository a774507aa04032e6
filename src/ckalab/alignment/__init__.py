r"""Kernel alignment: HSIC, centered kernel alignment (CKA) and kernel-target alignment.

This package depends on torch alone and can be used without the rest of ckalab; everything is
re-exported here (``from ckalab.alignment import cka``).

Notation
--------
``x`` is an ``(n, p)`` representation and ``y`` an ``(n, q)`` representation or target matrix
(rows are examples; a 1-D ``y`` of shape ``(n,)`` is a column). ``H = I - 11^T / n`` is the
centering matrix, ``Xc = H X``, ``Yc = H Y``, ``K = X X^T`` and ``L = Y Y^T``.

- Linear CKA (Kornblith et al. 2019), in feature space, no n x n matrix for ``p, q < n``::

      CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)
                = <HKH, HLH>_F / (||HKH||_F ||HLH||_F)

- Debiased CKA: the same ratio with the unbiased HSIC_1 of Song et al. (2012) (n >= 4).
- Gram form for explicit kernels and the Gaussian kernel (bandwidth: median nonzero distance).
- Minibatch CKA (Nguyen et al. 2021) and the exact full-data CKA streamed over row chunks.
- Kernel-target alignment (Cristianini et al. 2001), uncentered.

Modules (one idea each)
-----------------------
- :mod:`~ckalab.alignment.checks`: argument checks and centering;
- :mod:`~ckalab.alignment.degenerate`: when a representation is constant within rounding, and
  :class:`DegenerateRepresentationWarning` (its CKA is NaN);
- :mod:`~ckalab.alignment.products`: float32 products summed in float64;
- :mod:`~ckalab.alignment.linear`: :class:`LinearGramStats`, :func:`linear_gram_stats`;
- :mod:`~ckalab.alignment.gram`: :func:`hsic_gram`, :func:`centered_alignment`,
  :func:`kernel_alignment`, :func:`rbf_kernel`;
- :mod:`~ckalab.alignment.estimators`: :func:`hsic`, :func:`cka`, :func:`cka_matrix`;
- :mod:`~ckalab.alignment.accumulator`: :class:`LinearCKAAccumulator` (exact, streamed);
- :mod:`~ckalab.alignment.streaming`: :class:`StreamingCKA` (minibatch estimator);
- :mod:`~ckalab.alignment.targets`: :func:`one_hot`, :func:`signed_targets`,
  :func:`check_labels`.

Numerics
--------
Inputs are centered before any product (this removes the float32 cancellation of
``X^T X - n mu mu^T``), matrix products run in the input's precision (float32 for float32,
bfloat16 and float16 inputs; float64 for float64) over bounded chunks, and every reduction is
accumulated in float64. Results are 0-dim (or matrix) float64 tensors on the input's device.
Representations of at most 64 columns (targets) form their self-products in float64, and
packed Gram matrices are multiplied from exact float64 products, because the repeated values of
class targets make float32 sums round systematically. Float32 inputs then give values within
1e-6 of float64 for n >= 10 (random ReLU features against one-hot targets, both estimators:
``tests/test_alignment_numerics.py``); the debiased estimator at a handful of rows (the
minibatch estimator on batches of ~10) is less well conditioned.
"""

from __future__ import annotations

from ckalab.alignment.accumulator import LinearCKAAccumulator
from ckalab.alignment.degenerate import DegenerateRepresentationWarning
from ckalab.alignment.estimators import cka, cka_matrix, hsic
from ckalab.alignment.gram import centered_alignment, hsic_gram, kernel_alignment, rbf_kernel
from ckalab.alignment.linear import LinearGramStats, linear_gram_stats
from ckalab.alignment.streaming import StreamingCKA
from ckalab.alignment.targets import check_labels, one_hot, signed_targets

__all__ = [
    "DegenerateRepresentationWarning",
    "LinearCKAAccumulator",
    "LinearGramStats",
    "StreamingCKA",
    "centered_alignment",
    "check_labels",
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
