"""Tasks: class subsets of a dataset as tensors, with targets encoded for a regression loss.

A :class:`Task` holds whole splits as tensors on one device (the training device), plus fixed,
seeded, class-balanced *probe* subsets of both splits on which alignment is tracked.

Conventions:

* ``classes`` are original dataset labels *in the order given*; task label ``i`` is
  ``classes[i]`` (``classes=(4, 9)`` maps 4 -> 0 and 9 -> 1).
* Pixels are scaled to [0, 1] by dividing by the dataset's ``pixel_max`` (255, or 16 for
  ``digits``). With ``standardize=True`` every feature is then centered and divided by its
  standard deviation, both computed on the task's *training split only*; features whose
  training standard deviation is zero are centered but left unscaled, and the others are
  divided by at least :data:`MIN_STD` (5% of the pixel range), so that a pixel that is nearly
  constant in training (a rare stroke at MNIST's border: std 3e-4) does not turn into an
  outlier of 1,000 on a test image.
* Encodings: ``"one_hot"`` -> float32 ``(n, k)``; ``"signed"`` (two classes only) -> float32
  ``(n, 1)`` equal to ``-1`` for ``classes[0]`` and ``+1`` for ``classes[1]``; ``"index"`` ->
  int64 ``(n,)`` task labels.
* Subsampling (``n_train`` / ``n_test``) is stratified: each class keeps its share of the
  split (largest-remainder rounding, at least one example per class), chosen at random with
  ``seed`` (streams ``subsample_train`` / ``subsample_test`` of :mod:`ckalab.seeds`). Probe
  subsets are class-balanced: equal counts per class as far as the classes allow (a class with
  too few examples gives all it has; the rest is shared by the others), drawn from the streams
  ``probe_train`` / ``probe_test``. Selected examples keep dataset order.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from ckalab import alignment
from ckalab.data.registry import _is_int, check_classes, check_size, get_info
from ckalab.data.sources import load_split
from ckalab.seeds import Stream, numpy_rng

__all__ = [
    "DEFAULT_PROBE_SIZE",
    "ENCODINGS",
    "Split",
    "Task",
    "balanced_counts",
    "encode",
    "make_task",
    "one_hot",
    "signed",
    "stratified_counts",
]

ENCODINGS = ("one_hot", "signed", "index")
DEFAULT_PROBE_SIZE = 10_000
#: Smallest divisor of a non-constant feature in standardization (pixels are in [0, 1]).
MIN_STD = 0.05


# --------------------------------------------------------------------------- encodings


def one_hot(labels: Tensor, num_classes: int) -> Tensor:
    """One-hot targets: float32 ``(n, num_classes)`` with a 1 in column ``labels[i]``."""
    if not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    return alignment.one_hot(labels, int(num_classes))


def signed(labels: Tensor) -> Tensor:
    """Signed targets for two classes: float32 ``(n, 1)``, ``-1`` for label 0, ``+1`` for 1."""
    return alignment.signed_targets(labels)


def encode(labels: Tensor, encoding: str, num_classes: int) -> Tensor:
    """Targets for ``labels`` in one of :data:`ENCODINGS`."""
    if encoding == "one_hot":
        return one_hot(labels, num_classes)
    if encoding == "signed":
        if num_classes != 2:
            raise ValueError(
                f"encoding 'signed' needs exactly two classes, got {num_classes}; "
                "use 'one_hot' or 'index'"
            )
        return signed(labels)
    if encoding == "index":
        return alignment.check_labels(labels, num_classes).clone()
    raise ValueError(f"unknown encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}")


# --------------------------------------------------------------------------- containers


@dataclass(frozen=True)
class Split:
    """One split of a task.

    Attributes:
        x: float32 inputs, ``(n, d)`` when flattened, else ``(n, C, H, W)``.
        y: targets: float32 ``(n, k)`` one-hot, float32 ``(n, 1)`` signed, or int64 ``(n,)``.
        labels: int64 ``(n,)`` task class index ``0 .. k-1`` (in the order of ``Task.classes``).
    """

    x: Tensor
    y: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        n = len(self.x)
        if len(self.y) != n or len(self.labels) != n:
            raise ValueError(
                f"x, y and labels must have the same length, got {n}, {len(self.y)}, "
                f"{len(self.labels)}"
            )

    def __len__(self) -> int:
        return len(self.x)

    @property
    def device(self) -> torch.device:
        return self.x.device

    def to(self, device: str | torch.device) -> Split:
        """This split with every tensor on ``device``."""
        return Split(self.x.to(device), self.y.to(device), self.labels.to(device))

    def subset(self, index: Tensor | Sequence[int] | np.ndarray) -> Split:
        """The examples at ``index`` (a new split)."""
        idx = torch.as_tensor(np.asarray(index), dtype=torch.long, device=self.x.device)
        return Split(self.x[idx], self.y[idx], self.labels[idx])

    def class_counts(self, num_classes: int | None = None) -> list[int]:
        """Examples per task class."""
        return torch.bincount(self.labels.cpu(), minlength=num_classes or 0).tolist()


@dataclass(frozen=True)
class Task:
    """A classification task: class subset of a dataset, encoded targets, probe subsets.

    ``mean`` and ``std`` hold the standardization statistics (shape ``input_shape``, computed on
    the training split after pixel scaling) when ``standardize=True``, else None.
    """

    name: str
    classes: tuple[int, ...]
    encoding: str
    input_shape: tuple[int, ...]
    image_shape: tuple[int, int, int]
    train: Split
    test: Split
    probe_train: Split
    probe_test: Split
    mean: Tensor | None = None
    std: Tensor | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def flattened(self) -> bool:
        return len(self.input_shape) == 1

    @property
    def device(self) -> torch.device:
        return self.train.device

    def to(self, device: str | torch.device) -> Task:
        """This task with every tensor on ``device``."""
        return replace(
            self,
            train=self.train.to(device),
            test=self.test.to(device),
            probe_train=self.probe_train.to(device),
            probe_test=self.probe_test.to(device),
            mean=None if self.mean is None else self.mean.to(device),
            std=None if self.std is None else self.std.to(device),
        )


# --------------------------------------------------------------------------- sampling


def stratified_counts(counts: Sequence[int], n: int) -> np.ndarray:
    """How many of each class to keep when taking ``n`` of ``sum(counts)`` proportionally.

    Largest-remainder rounding (ties to the lower class index); every non-empty class keeps at
    least one example when ``n`` is at least the number of non-empty classes.
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if not 0 <= n <= total:
        raise ValueError(f"cannot take {n} of {total} examples")
    quota = counts * n / total if total else np.zeros(len(counts))
    alloc = np.floor(quota).astype(np.int64)
    order = sorted(range(len(counts)), key=lambda c: (-(quota[c] - alloc[c]), c))
    for c in order[: n - int(alloc.sum())]:
        alloc[c] += 1
    nonempty = counts > 0
    if n >= int(nonempty.sum()):
        while True:
            starved = np.flatnonzero(nonempty & (alloc == 0))
            if not len(starved):
                break
            donor = int(np.argmax(alloc))
            alloc[donor] -= 1
            alloc[starved[0]] += 1
    return alloc


def balanced_counts(counts: Sequence[int], n: int) -> np.ndarray:
    """How many of each class to take for a class-balanced sample of ``n`` (water-filling)."""
    counts = np.asarray(counts, dtype=np.int64)
    if not 0 <= n <= int(counts.sum()):
        raise ValueError(f"cannot take {n} of {int(counts.sum())} examples")
    alloc = np.zeros_like(counts)
    remaining = n
    order = np.argsort(counts, kind="stable")
    for i, c in enumerate(order):
        share = remaining // (len(counts) - i)
        alloc[c] = min(int(counts[c]), share)
        remaining -= int(alloc[c])
    # Remainders left by floor division go to classes with room, lowest index first.
    for c in range(len(counts)):
        if remaining == 0:
            break
        extra = min(remaining, int(counts[c] - alloc[c]))
        alloc[c] += extra
        remaining -= extra
    return alloc


def _sample(labels: np.ndarray, alloc: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices taking ``alloc[c]`` random examples of each class ``c``."""
    parts = []
    for c, take in enumerate(alloc):
        idx = np.flatnonzero(labels == c)
        parts.append(idx[rng.permutation(len(idx))[:take]])
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)


# --------------------------------------------------------------------------- building


def _build_split(
    x_raw: np.ndarray,
    y_raw: np.ndarray,
    lut: np.ndarray,
    n: int | None,
    rng: np.random.Generator,
    what: str,
    pixel_max: int,
) -> tuple[Tensor, Tensor]:
    """Scaled float images ``(m, C, H, W)`` and task labels of one split's class subset."""
    mapped = lut[y_raw]
    index = np.flatnonzero(mapped >= 0)
    labels = mapped[index]
    if n is not None:
        if n > len(index):
            raise ValueError(
                f"{what}={n} is larger than the {len(index)} examples of these classes"
            )
        counts = np.bincount(labels, minlength=int(lut.max()) + 1)
        keep = _sample(labels, stratified_counts(counts, n), rng)
        index, labels = index[keep], labels[keep]
    x = torch.from_numpy(x_raw[index]).to(torch.float32).div_(float(pixel_max))
    return x, torch.from_numpy(labels.astype(np.int64))


def _moments(x: Tensor, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """Per-feature mean and population std of ``x`` (float64 accumulation, chunked).

    A zero standard deviation is replaced by 1 (the feature is centered but left unscaled);
    the others are raised to at least :data:`MIN_STD`.
    """
    mean = x.mean(0, dtype=torch.float64)
    sq = torch.zeros_like(mean)
    for start in range(0, len(x), chunk):
        sq += (x[start : start + chunk].to(torch.float64) - mean).square().sum(0)
    std = (sq / max(len(x), 1)).sqrt()
    std = torch.where(std < 1e-8, torch.ones_like(std), std.clamp_min(MIN_STD))
    return mean.to(torch.float32), std.to(torch.float32)


def _probe(split: Split, size: int | None, k: int, rng: np.random.Generator) -> Split:
    if size is None or size >= len(split):
        return split
    labels = split.labels.cpu().numpy()
    alloc = balanced_counts(np.bincount(labels, minlength=k), size)
    return split.subset(_sample(labels, alloc, rng))


def make_task(
    dataset: str,
    classes: Sequence[int] | None = None,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    encoding: str = "one_hot",
    flatten: bool = True,
    standardize: bool = False,
    probe_size: int | None = DEFAULT_PROBE_SIZE,
    seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
) -> Task:
    """Build a :class:`Task` from ``dataset`` (conventions in the module docstring).

    Args:
        dataset: a key of :data:`ckalab.data.DATASETS`.
        classes: original labels to keep, in task order; None keeps all classes.
        n_train, n_test: stratified, seeded subsample sizes; None keeps the whole split.
        encoding: ``"one_hot"``, ``"signed"`` (two classes only) or ``"index"``.
        flatten: inputs ``(n, C*H*W)`` (MLP) if True, else ``(n, C, H, W)`` (CNN).
        standardize: per-feature standardization with training-split statistics.
        probe_size: size of each class-balanced probe subset; None = the whole split. A split
            no larger than ``probe_size`` is used whole (so the default is the whole split
            capped at 10,000).
        seed: seeds subsampling and probe selection (non-negative integer).
        data_dir: root data folder (see :func:`ckalab.data.load_dataset`).
        device: where the tensors live.

    Every argument is validated before any file is read or downloaded; a bad value raises
    ValueError naming it.
    """
    info = get_info(dataset)
    class_tuple = check_classes(info.name, classes)
    k = len(class_tuple)
    if not isinstance(encoding, str) or encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}")
    if encoding == "signed" and k != 2:
        raise ValueError(
            f"encoding 'signed' needs exactly two classes, got {k} ({list(class_tuple)}); "
            "use 'one_hot' or 'index'"
        )
    n_train = check_size(info.name, "n_train", n_train, k)
    n_test = check_size(info.name, "n_test", n_test, k)
    probe_size = check_size(info.name, "probe_size", probe_size, k)
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    for flag_name, flag in (("flatten", flatten), ("standardize", standardize)):
        if not isinstance(flag, (bool, np.bool_)):
            raise ValueError(f"{flag_name} must be True or False, got {flag!r}")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"invalid device {device!r}: {exc}") from exc

    lut = np.full(info.num_classes, -1, dtype=np.int64)
    lut[list(class_tuple)] = np.arange(k)

    x_train_raw, y_train_raw = load_split(info.name, "train", data_dir=data_dir)
    x_test_raw, y_test_raw = load_split(info.name, "test", data_dir=data_dir)
    rng_train = numpy_rng(seed, Stream.SUBSAMPLE_TRAIN)
    rng_test = numpy_rng(seed, Stream.SUBSAMPLE_TEST)
    pmax = info.pixel_max
    x_train, l_train = _build_split(
        x_train_raw, y_train_raw, lut, n_train, rng_train, "n_train", pmax
    )
    x_test, l_test = _build_split(x_test_raw, y_test_raw, lut, n_test, rng_test, "n_test", pmax)

    mean = std = None
    if standardize:
        mean, std = _moments(x_train)
        x_train.sub_(mean).div_(std)
        x_test.sub_(mean).div_(std)

    image_shape = tuple(info.image_shape)
    if flatten:
        x_train = x_train.reshape(len(x_train), -1)
        x_test = x_test.reshape(len(x_test), -1)
        if mean is not None:
            mean, std = mean.reshape(-1), std.reshape(-1)
    input_shape = tuple(x_train.shape[1:])

    train = Split(x_train, encode(l_train, encoding, k), l_train)
    test = Split(x_test, encode(l_test, encoding, k), l_test)
    probe_train = _probe(train, probe_size, k, numpy_rng(seed, Stream.PROBE_TRAIN))
    probe_test = _probe(test, probe_size, k, numpy_rng(seed, Stream.PROBE_TEST))
    task = Task(
        name=info.name,
        classes=class_tuple,
        encoding=encoding,
        input_shape=input_shape,
        image_shape=image_shape,  # type: ignore[arg-type]
        train=train,
        test=test,
        probe_train=probe_train,
        probe_test=probe_test,
        mean=mean,
        std=std,
    )
    return task if device.type == "cpu" else task.to(device)
