"""Seeded, vectorized data augmentation on image tensors ``(n, C, H, W)``, on any device.

Random numbers are drawn from the given ``torch.Generator`` on the generator's own device and
then moved to the data's device, so a CPU generator drives augmentation of CUDA data and its
state (saved in a checkpoint) fully determines the result.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable

import torch
from torch import Tensor

from ckalab.data.registry import get_info

__all__ = ["Augmentation", "default_augmentation", "random_crop_flip", "random_translate"]

Augmentation = Callable[[Tensor, torch.Generator], Tensor]


def _check_images(x: Tensor, fn: str) -> None:
    if not isinstance(x, Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{fn} expects images shaped (n, C, H, W), got {shape}")


def _check_nonneg_int(name: str, value: object) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _randint(high: int, n: int, generator: torch.Generator, device: torch.device) -> Tensor:
    return torch.randint(0, high, (n,), generator=generator, device=generator.device).to(device)


def _shift_gather(x: Tensor, dy: Tensor, dx: Tensor, flip: Tensor | None, pad: int) -> Tensor:
    """``out[i, c, h, w] = x[i, c, h + dy[i], w' + dx[i]]``, zero outside the image.

    ``w' = W - 1 - w`` where ``flip[i]``, else ``w' = w``.

    Requires ``|dy|, |dx| <= pad``. One advanced-indexing gather over a copy zero-padded by
    ``pad``; no Python loop over examples and no device synchronization.
    """
    n, _, h, w = x.shape
    pad_y = pad_x = pad
    xp = torch.nn.functional.pad(x, (pad_x, pad_x, pad_y, pad_y))
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = ar_h.unsqueeze(0) + (dy + pad_y).unsqueeze(1)  # (n, H)
    cols_src = ar_w.unsqueeze(0).expand(n, w)
    if flip is not None:
        cols_src = torch.where(flip.unsqueeze(1), (w - 1) - cols_src, cols_src)
    cols = cols_src + (dx + pad_x).unsqueeze(1)  # (n, W)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    channel = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    return xp[batch, channel, rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]


def random_crop_flip(
    x: Tensor, generator: torch.Generator, *, padding: int = 4, flip: bool = True
) -> Tensor:
    """Random crop after zero padding, plus random horizontal flip (the CIFAR-10 recipe).

    Each example is padded by ``padding`` pixels of zeros on every side and an ``H x W`` window
    is cut at a uniformly random offset (``0 .. 2*padding`` in each direction, i.e. a shift of
    ``-padding .. padding``); with ``flip`` it is then mirrored left-right with probability 1/2.
    Draws, in order: vertical offsets, horizontal offsets, flips (``n`` each) from ``generator``.

    Returns a new tensor of the same shape, dtype and device as ``x``.
    """
    _check_images(x, "random_crop_flip")
    padding = _check_nonneg_int("padding", padding)
    n = x.shape[0]
    dy = _randint(2 * padding + 1, n, generator, x.device) - padding
    dx = _randint(2 * padding + 1, n, generator, x.device) - padding
    flips = _randint(2, n, generator, x.device).bool() if flip else None
    return _shift_gather(x, dy, dx, flips, padding)


def random_translate(x: Tensor, generator: torch.Generator, *, max_shift: int = 2) -> Tensor:
    """Random integer translation by ``-max_shift .. max_shift`` pixels per axis, zero fill.

    No flips (digits are not mirror-symmetric). ``max_shift=0`` returns an identical copy.
    Draws, in order: vertical shifts, horizontal shifts (``n`` each) from ``generator``.
    """
    _check_images(x, "random_translate")
    max_shift = _check_nonneg_int("max_shift", max_shift)
    return random_crop_flip(x, generator, padding=max_shift, flip=False)


def default_augmentation(dataset: str) -> Augmentation | None:
    """The standard augmentation for ``dataset``.

    ``cifar10``: :func:`random_crop_flip` (padding 4, flips). ``mnist``, ``mnist-5k`` and
    ``fashion-mnist``: :func:`random_translate` with ``max_shift=2``. ``digits`` (8x8):
    :func:`random_translate` with ``max_shift=1``.
    """
    info = get_info(dataset)
    if info.name == "cifar10":
        return random_crop_flip
    if info.name == "digits":
        return functools.partial(random_translate, max_shift=1)
    return random_translate
