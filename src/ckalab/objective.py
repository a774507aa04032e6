"""The objective a network is trained on: the loss of its outputs against the targets.

Used by the training step and by the evaluation (which sums it over a whole split).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["compute_loss"]


def compute_loss(kind: str, output: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """The training loss (the values ``train.loss`` can name).

    ``mse``: ``(output - target)^2`` averaged over batch and outputs; ``output`` (n, k) and
    ``target`` (n, k) float (one-hot or +-1). ``cross_entropy``: softmax cross-entropy averaged
    over the batch, with ``target`` int64 labels (n,) or class probabilities (n, k) (one-hot).
    ``reduction="sum"`` sums instead of averaging (over the same elements).
    """
    if kind == "mse":
        return F.mse_loss(output, target, reduction=reduction)
    if kind == "cross_entropy":
        return F.cross_entropy(output, target, reduction=reduction)
    raise ValueError(f"train.loss: unknown loss {kind!r}; known: mse, cross_entropy")
