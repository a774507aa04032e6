r"""Degenerate representations: when CKA is undefined, and the one warning that says so.

CKA divides by ``sqrt(HSIC(X, X) HSIC(Y, Y))``, which is zero for a representation without
variance (every row identical, e.g. a dead ReLU layer). In floating point such a representation
does not centre to exact zeros: the computed column mean is off by a few ulps, so ``Xc = X - mean``
keeps a residue of order ``eps |mean|`` and the self-HSIC of that residue is a tiny positive
number (CKA would then report rounding noise). A representation is therefore declared
**constant** by a test relative to its own scale, taken column by column.

Column rule. For an ``(n, p)`` representation with computed column means ``m_j`` and centered
squared column norms ``s_j = ||x_j - m_j||^2`` (so ``t_j = s_j + n m_j^2`` is the squared norm
before centering), column ``j`` is constant when::

    s_j <= rho^2 t_j,        rho(n, dtype) = (4 + log2 n) * eps(dtype)

i.e. its spread is within ``rho`` of its magnitude; the representation is constant when every
column is. ``eps`` is that of the compute precision (float32 for float32, bfloat16 and float16
inputs; float64 for float64). ``rho`` bounds the relative error of a computed mean of ``n``
equal values (a few ulps in practice; ``log2 n`` covers pairwise summation) with a 4-ulp margin.
It is far below any real spread: float32 columns ``1e3 + 1e-2 * randn`` (relative spread
``1e-5``, ``s / t = 1e-10``) are not constant for any ``n < 2^60`` (``rho^2 < 5.9e-11``).
Working per column means a live unit-variance column next to a column constant at ``1e6`` is
not flagged (a single ratio of Frobenius norms would be).

Kernel rule. An explicit ``(n, n)`` Gram matrix ``K`` is constant when its double-centered form
is within rounding of it: ``||HKH||_F^2 <= rho(n, dtype)^2 ||K||_F^2`` (``dtype``: float64 for a
float64 ``K``, else float32).

Every estimator turns a constant representation, and a non-positive self-HSIC (possible for the
debiased estimator), into NaN with one :class:`DegenerateRepresentationWarning` per call.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

#: Ulps of margin in :func:`constant_tolerance` on top of the ``log2 n`` of the mean's rounding.
_MARGIN_ULPS = 4.0


class DegenerateRepresentationWarning(RuntimeWarning):
    """A representation with zero variance (e.g. a dead ReLU layer): its CKA is NaN."""


def constant_tolerance(n: int, dtype: torch.dtype) -> float:
    """``rho(n, dtype) = (4 + log2 n) eps(dtype)``: relative spread below which data is constant.

    ``dtype`` is the compute precision (anything but float64 counts as float32).
    """
    eps = torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps
    return (_MARGIN_ULPS + math.log2(max(n, 2))) * eps


def constant_columns(
    centered: Tensor, mean: Tensor, dtype: torch.dtype, energy: Tensor | None = None
) -> Tensor:
    """Whether every column of a centered ``(n, p)`` representation is constant (0-dim bool).

    ``centered`` is ``x - mean`` as computed, ``mean`` the ``(1, p)`` (or ``(p,)``) column means
    that were subtracted, ``dtype`` the compute precision; ``energy``, if known, is
    ``||centered||_F^2`` (float64). See the module docstring. If the whole representation has
    more than ``rho^2`` of its squared norm after centering, some column does, and the column
    pass is skipped (one host synchronization).
    """
    n = centered.shape[0]
    m = mean.detach().reshape(-1).double()
    if energy is None:
        energy = torch.linalg.vector_norm(centered.detach()).double().square()
    rho = constant_tolerance(n, dtype)
    if bool(energy.detach() > rho * rho * (energy.detach() + n * m.square().sum())):
        return torch.zeros((), dtype=torch.bool, device=centered.device)
    s = torch.linalg.vector_norm(centered.detach(), dim=0).double().square()
    return _constant_from_energies(s, m, n, dtype)


def _constant_from_energies(s: Tensor, mean: Tensor, n: int, dtype: torch.dtype) -> Tensor:
    """The column rule from float64 centered energies ``s`` (p,) and means ``mean`` (p,)."""
    rho = constant_tolerance(n, dtype)
    return (s <= rho * rho * (s + n * mean.square())).all()


def constant_kernel(k: Tensor, centered: Tensor, dtype: torch.dtype) -> Tensor:
    """Whether the ``(n, n)`` Gram matrix ``k`` is constant given ``centered = H k H`` (0-dim)."""
    rho = constant_tolerance(k.shape[0], dtype)
    kd = k.detach().double()
    return centered.detach().square().sum() <= rho * rho * kd.square().sum()


def _normalize(
    h: Tensor,
    hx: Tensor,
    hy: Tensor,
    constant_x: Tensor | None = None,
    constant_y: Tensor | None = None,
) -> Tensor:
    """``h[i, j] / sqrt(hx[i] hy[j])``; NaN plus one warning where a representation is constant
    (``constant_x[i]`` or ``constant_y[j]``) or the denominator is not > 0."""
    denom = hx[:, None] * hy[None, :]
    bad = ~(denom > 0)
    if constant_x is not None:
        bad = bad | constant_x.to(bad.device)[:, None]
    if constant_y is not None:
        bad = bad | constant_y.to(bad.device)[None, :]
    if bool(bad.any()):
        warnings.warn(
            "a representation has zero variance (constant features, e.g. a dead ReLU layer, "
            "within rounding of its scale) or a non-positive self-HSIC estimate; its CKA is NaN",
            DegenerateRepresentationWarning,
            stacklevel=3,
        )
        denom = torch.where(bad, torch.full_like(denom, math.nan), denom)
    return h / denom.sqrt()
