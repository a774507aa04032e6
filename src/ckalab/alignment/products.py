r"""Matrix products behind the linear estimators, in the input precision, summed in float64.

Shapes: ``a`` is an ``(n, p)`` centered representation. The products computed here are

- the row norms ``diag(a a^T)`` (n,);
- ``||a^T a||_F^2`` from the upper-triangle row panels of ``a^T a`` (``n p^2 / 2`` multiply-adds);
- ``||a^T b||_F^2`` for ``b`` (n, q) (``n p q``);
- packed Gram matrices ``K = a a^T`` (upper-triangle ``(256, 256)`` blocks, off-diagonal blocks
  scaled by ``sqrt(2)`` so that ``packed(K) . packed(L) = <K, L>_F``; ``n^2 p / 2``) and their
  inner products.

Precision: float32 products run over at most ``_ROW_CHUNK`` rows (feature space) or
``_INNER_CHUNK`` packed entries (Gram inner products) and each partial result is added in
float64, which bounds the float32 rounding by the chunk length rather than by n.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

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
#: Packed Gram entries per float32 inner product in :func:`_inner_products`.
_INNER_CHUNK = 1 << 16
#: Representations with at most this many columns (targets, readouts) form their self-products
#: in float64: their rows repeat few values (one-hot, +-1), so float32 rounding of their sums is
#: systematic, not random (a relative 2e-5 at n = 1,000), and the float64 cost is negligible.
_NARROW = 64


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
    the chunk staying in cache while all its panels are multiplied. A narrow ``a``
    (``p <= _NARROW``) is multiplied in float64.
    """
    if a.shape[1] <= _NARROW:
        a = a.double()
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


def _inner_products(a: Tensor, b: Tensor, chunk: int = _INNER_CHUNK) -> Tensor:
    """``a @ b.T`` for long rows (m, N) x (k, N), chunks of N summed in float64 -> (m, k)."""
    if a.dtype == torch.float64:
        return a @ b.T
    acc = None
    for cols in _blocks(a.shape[1], chunk):
        g = (a[:, cols] @ b[:, cols].T).double()
        acc = g if acc is None else acc + g
    return acc


def _squared_norms(a: Tensor) -> Tensor:
    """``||a_i||^2`` of long rows (m, N) in float64 -> (m,).

    Packed Gram matrices of class targets repeat a few values, so chunked float32 dot products
    of such a row with itself round systematically (a relative 7e-5 at n = 2,048; so does a
    float32 norm reduction); torch's sum adds pairwise (relative error ~2e-7 here) and costs
    less than the product. One row at a time bounds the temporary to one row.
    """
    return torch.stack([row.square().sum() for row in a]).double()
