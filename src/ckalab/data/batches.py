"""Epoch batches from in-memory tensors by indexing with a seeded permutation.

For data that fit on the training device, indexing a tensor with a slice of a random
permutation is several times faster than ``torch.utils.data.DataLoader`` (which collates one
example at a time); see ``benchmarks/bench_data.py``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator

import torch
from torch import Tensor

from ckalab.data.augment import Augmentation
from ckalab.data.tasks import Split

__all__ = ["BatchStream"]


class BatchStream:
    """Iterate over one epoch of ``(x_batch, y_batch)`` per ``iter()``.

    Each epoch draws ``torch.randperm(n)`` from ``generator`` (on the generator's device; the
    index is then moved to the data's device), so restoring the generator state restores the
    exact batches. With ``augment``, each batch's images are passed through
    ``augment(images, generator)`` after indexing; flattened inputs are reshaped to
    ``image_shape`` for it and flattened back.

    Args:
        split: the data (any device).
        batch_size: examples per batch (the last batch may be smaller unless ``drop_last``).
        generator: source of all randomness (permutation and augmentation).
        drop_last: skip the final incomplete batch.
        augment: ``augment(x (b, C, H, W), generator) -> x``; None for no augmentation.
        image_shape: ``(C, H, W)``, required with ``augment`` when ``split.x`` is flattened.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        generator: torch.Generator,
        drop_last: bool = False,
        augment: Augmentation | None = None,
        image_shape: tuple[int, ...] | None = None,
    ) -> None:
        if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        if not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        n = len(split)
        if n == 0:
            raise ValueError("cannot stream batches from an empty split")
        if drop_last and batch_size > n:
            raise ValueError(
                f"batch_size={batch_size} with drop_last=True exceeds the {n} examples: "
                "an epoch would have no batches"
            )
        if augment is not None and not callable(augment):
            raise ValueError(f"augment must be callable or None, got {augment!r}")
        self._reshape: tuple[int, ...] | None = None
        if augment is not None and split.x.ndim != 4:
            if image_shape is None:
                raise ValueError(
                    "augment needs image_shape=(C, H, W) when the inputs are flattened "
                    f"(x has shape {tuple(split.x.shape)})"
                )
            image_shape = tuple(int(s) for s in image_shape)
            if math.prod(image_shape) != math.prod(split.x.shape[1:]):
                raise ValueError(
                    f"image_shape {image_shape} does not match inputs of shape "
                    f"{tuple(split.x.shape[1:])}"
                )
            self._reshape = image_shape
        self.split = split
        self.batch_size = int(batch_size)
        self.generator = generator
        self.drop_last = bool(drop_last)
        self.augment = augment

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        # The permutation is drawn here, when the epoch starts (not lazily at the first batch).
        n = len(self.split)
        perm = torch.randperm(n, generator=self.generator, device=self.generator.device)
        return self._batches(perm.to(self.split.x.device))

    def _batches(self, perm: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
        x, y = self.split.x, self.split.y
        n = len(x)
        stop = len(self) * self.batch_size
        for start in range(0, min(stop, n), self.batch_size):
            idx = perm[start : start + self.batch_size]
            xb = x.index_select(0, idx)
            yb = y.index_select(0, idx)
            if self.augment is not None:
                if self._reshape is not None:
                    xb = self.augment(xb.view(len(idx), *self._reshape), self.generator)
                    xb = xb.reshape(len(idx), -1)
                else:
                    xb = self.augment(xb, self.generator)
            yield xb, yb
