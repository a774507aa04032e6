r"""Estimators on explicit ``(n, n)`` Gram matrices, and the Gaussian (RBF) kernel.

``K`` and ``L`` are symmetric ``(n, n)`` kernels on the same n examples, ``H = I - 11^T / n``.

- Centered kernel alignment (Gram form)::

      CKA(K, L) = <HKH, HLH>_F / (||HKH||_F ||HLH||_F)

  biased HSIC ``<HKH, HLH>_F / (n-1)^2``; debiased: the unbiased HSIC_1 of Song et al. (2012)
  (see :mod:`ckalab.alignment.linear`) on ``HKH`` and ``HLH``. HSIC_1 is invariant to double
  centering (its off-diagonal entries change by ``a_i + a_j``), so both estimators start from
  the double-centered kernels: an offset kernel ``K + c 11^T`` loses no precision to
  cancellation, and a constant kernel centres to zero instead of leaving rounding noise.
  A kernel with ``||HKH||_F^2 <= rho^2 ||K||_F^2`` is constant
  (:mod:`ckalab.alignment.degenerate`): its CKA is NaN with a warning.
- Kernel-target alignment (Cristianini et al. 2001), uncentered::

      A(K, L) = <K, L>_F / (||K||_F ||L||_F)

- Gaussian kernel of an ``(n, p)`` representation ``x``::

      K_ij = exp(-||x_i - x_j||^2 / (2 (sigma m)^2))

  with bandwidth ``m^2`` the median of the **nonzero** squared distances over the
  ``n (n-1) / 2`` distinct pairs (the lower middle value for an even count). Squared distances
  below the rounding error of their computation, ``4 p eps_64 (||x_i||^2 + ||x_j||^2)`` for the
  centered rows, count as zero. Duplicated rows (e.g. class targets, most pairs at distance 0)
  therefore do not collapse the bandwidth to zero; a representation without two distinct rows
  (constant within rounding, :mod:`ckalab.alignment.degenerate`) gives the all-ones kernel,
  whose CKA is NaN with one warning.

All results are float64.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from ckalab.alignment.checks import (
    _as_matrix,
    _center,
    _check_debiased_n,
    _check_grams,
    _compute_dtype,
)
from ckalab.alignment.degenerate import (
    DegenerateRepresentationWarning,
    _normalize,
    constant_columns,
    constant_kernel,
)


def _double_center(k: Tensor) -> Tensor:
    """``H K H`` computed as K minus row means, column means, plus the grand mean (float64)."""
    k = k.double()
    row = k.mean(1, keepdim=True)
    col = k.mean(0, keepdim=True)
    return k - row - col + row.mean()


def _gram_dtype(k: Tensor) -> torch.dtype:
    return torch.float64 if k.dtype == torch.float64 else torch.float32


def _centered_kernel(k: Tensor) -> tuple[Tensor, Tensor]:
    """``(H k H, constant)`` of a validated Gram matrix: float64 and a 0-dim bool."""
    c = _double_center(k)
    return c, constant_kernel(k, c, _gram_dtype(k))


def _hsic_centered(kc: Tensor, lc: Tensor, debiased: bool) -> Tensor:
    """HSIC of two double-centered (n, n) float64 Gram matrices (0-dim float64)."""
    n = kc.shape[0]
    if not debiased:
        return (kc * lc).sum() / (n - 1) ** 2
    _check_debiased_n(n, True)
    kt = kc.clone()
    lt = lc.clone()
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
    on the double-centered kernels (see the module docstring); needs ``n >= 4``. Returns a
    0-dim float64 tensor.
    """
    k1, k2 = _check_grams(k1, k2, ("k1", "k2"))
    _check_debiased_n(k1.shape[0], debiased)
    return _hsic_centered(_double_center(k1), _double_center(k2), debiased)


def _cka_centered(
    kx: list[tuple[Tensor, Tensor]], ky: list[tuple[Tensor, Tensor]] | None, debiased: bool
) -> Tensor:
    """CKA matrix (len(kx), len(ky)) from ``(HKH, constant)`` pairs; ``ky=None`` means kx."""
    hx = torch.stack([_hsic_centered(c, c, debiased) for c, _ in kx])
    hy = hx if ky is None else torch.stack([_hsic_centered(c, c, debiased) for c, _ in ky])
    ky_ = kx if ky is None else ky
    h = torch.stack([torch.stack([_hsic_centered(a, b, debiased) for b, _ in ky_]) for a, _ in kx])
    cx = torch.stack([f for _, f in kx])
    cy = torch.stack([f for _, f in ky_])
    return _normalize(h, hx, hy, cx, cy)


def centered_alignment(k1: Tensor, k2: Tensor, *, debiased: bool = False) -> Tensor:
    """Centered kernel alignment of two explicit (n, n) Gram matrices (CKA, Gram form).

    ``<H K1 H, H K2 H>_F / (||H K1 H||_F ||H K2 H||_F)``; with ``debiased=True`` the unbiased HSIC
    replaces the Frobenius inner products. Returns a 0-dim float64 tensor (NaN with a
    :class:`DegenerateRepresentationWarning` when a kernel is constant within rounding or a
    self-HSIC is not > 0).
    """
    k1, k2 = _check_grams(k1, k2, ("k1", "k2"))
    _check_debiased_n(k1.shape[0], debiased)
    return _cka_centered([_centered_kernel(k1)], [_centered_kernel(k2)], debiased).reshape(())


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
    """Gaussian kernel ``exp(-||x_i - x_j||^2 / (2 (sigma * m)^2))`` of ``x`` (n, p), (n, n).

    ``m^2`` is the median of the nonzero squared distances over the ``n (n-1) / 2`` distinct
    pairs (distances within rounding count as zero; see the module docstring), so duplicated
    rows do not shrink the bandwidth to zero. Without two distinct rows (constant ``x``) the
    kernel is all ones. Returns a float64 matrix.
    """
    return _rbf("x", x, sigma)


def _rbf(name: str, x: Tensor, sigma: float) -> Tensor:
    """:func:`rbf_kernel` with the argument name to use in error messages."""
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive finite number, got {sigma!r}")
    x = _as_matrix(name, x)
    n, p = x.shape
    xc, mean = _center(name, x, torch.float64)
    ones = xc.new_ones(n, n)
    if bool(constant_columns(xc, mean, _compute_dtype(x))):
        return ones
    sq = xc.square().sum(1)
    norms = sq[:, None] + sq[None, :]
    d2 = (norms - 2.0 * (xc @ xc.T)).clamp_min(0.0)
    rounding = 4.0 * p * torch.finfo(torch.float64).eps
    d2 = torch.where(d2 <= rounding * norms.detach(), torch.zeros_like(d2), d2)
    d2.fill_diagonal_(0.0)
    iu = torch.triu_indices(n, n, offset=1, device=x.device)
    pairs = d2[iu[0], iu[1]]
    nonzero = pairs[pairs > 0]
    if nonzero.numel() == 0:
        return ones
    bandwidth_sq = sigma**2 * nonzero.median()
    return torch.exp(-d2 / (2.0 * bandwidth_sq))


def _rbf_centered(name: str, x: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
    """``(H K H, constant)`` of the Gaussian kernel of ``x`` (a float64 kernel)."""
    return _centered_kernel(_rbf(name, x, sigma))
