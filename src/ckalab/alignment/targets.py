"""Target encodings of class labels, and the one check of class labels in ckalab.

``labels`` is a 1-D integer tensor ``(n,)`` of class indices in ``0..k-1``.

- :func:`one_hot`: ``(n, k)`` with ``Y[i, labels[i]] = 1``;
- :func:`signed_targets`: ``(n, 1)`` with ``-1`` for class 0 and ``+1`` for class 1.

:func:`check_labels` is the label check used everywhere (``ckalab.data.tasks`` included).
Boolean tensors are refused, not read as classes 0/1: a mask is more often a selection than a
labelling, and the encoding of ``True`` should be a visible choice (``mask.long()``).
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_labels(labels: Tensor, num_classes: int | None = None) -> Tensor:
    """Check class labels and return them as int64.

    ``labels`` must be a 1-D tensor of an integer dtype (not bool, float or complex) with values
    ``>= 0`` and, when ``num_classes`` is given, ``< num_classes``. Raises ``TypeError`` for a
    non-tensor and ``ValueError`` otherwise, naming what is wrong.
    """
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dtype == torch.bool:
        raise ValueError(
            "labels must be a 1-D integer tensor, got dtype torch.bool; boolean masks are not "
            "read as classes: convert explicitly, e.g. mask.long() (False -> 0, True -> 1)"
        )
    if labels.ndim != 1 or labels.is_floating_point() or labels.is_complex():
        raise ValueError(
            f"labels must be a 1-D integer tensor, got shape {tuple(labels.shape)} and dtype "
            f"{labels.dtype}"
        )
    if labels.numel():
        lo, hi = int(labels.min()), int(labels.max())
        if num_classes is not None and (lo < 0 or hi >= num_classes):
            raise ValueError(f"labels must lie in 0..{num_classes - 1}, found {lo}..{hi}")
        if lo < 0:
            raise ValueError(f"labels must be >= 0, found minimum {lo}")
    return labels.long()


def one_hot(
    labels: Tensor, num_classes: int | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """One-hot targets (n, num_classes) from integer class labels (n,) in ``0..num_classes-1``.

    ``num_classes`` defaults to ``max(labels) + 1``.
    """
    labels = check_labels(labels, None if num_classes is None else int(num_classes))
    k = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    return torch.nn.functional.one_hot(labels, k).to(dtype)


def signed_targets(labels: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """-1 / +1 targets (n, 1) for two classes: label 0 -> -1, label 1 -> +1."""
    labels = check_labels(labels, 2)
    return (2.0 * labels.to(dtype) - 1.0).unsqueeze(1)
