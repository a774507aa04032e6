"""Argument checks shared by every estimator, and centering.

A representation is an ``(n, p)`` floating-point tensor (rows are examples; a 1-D ``(n,)`` tensor
is one column); a Gram matrix is a square ``(n, n)`` floating-point tensor. Errors name the
argument and its shape. Class labels are never guessed from integer tensors: targets are built
with :func:`ckalab.alignment.one_hot` or :func:`ckalab.alignment.signed_targets`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


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


def _check_kernel(kernel: str) -> None:
    if kernel not in ("linear", "rbf"):
        raise ValueError(f"kernel must be 'linear' or 'rbf', got {kernel!r}")


def _compute_dtype(*ts: Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (half precisions are upcast)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in ts) else torch.float32


def _center(name: str, t: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``(t - column_mean(t), column_mean(t))`` in ``dtype``, refusing NaN/Inf values.

    NaN or Inf anywhere makes its column mean non-finite, so the mean that centering needs
    anyway doubles as the finiteness check; the full scan runs only when it fails. For float32
    the mean uses torch's pairwise summation; its rounding leaves a common offset of at most
    a few ulps of the mean, whose effect on CKA is second order (below 1e-9 for a shift of 1e3)
    and which :func:`ckalab.alignment.degenerate.constant_columns` tells apart from variance.
    The mean is ``(1, p)``.
    """
    t = t.to(dtype)
    mean = t.mean(dim=0, keepdim=True)
    if not bool(torch.isfinite(mean).all()):
        _raise_if_not_finite(name, t)
    return t - mean, mean


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


def _as_list(ts: Sequence[Tensor] | Tensor) -> list[Tensor]:
    """A single tensor as a one-element list; a sequence as a list."""
    return [ts] if isinstance(ts, Tensor) else list(ts)
