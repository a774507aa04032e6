"""Datasets, tasks, batches and augmentations.

* :data:`DATASETS`, :func:`load_dataset`, :func:`load_split`: raw datasets as numpy arrays
  (downloaded with checksums, read from local folders, or shipped offline sets).
* :func:`make_task` -> :class:`Task`: class subsets with encoded targets as tensors, plus
  class-balanced probe subsets for alignment tracking.
* :class:`BatchStream`: seeded epoch batches by indexing in-memory tensors.
* :func:`random_crop_flip`, :func:`random_translate`, :func:`default_augmentation`.

The names are imported lazily (on first use, PEP 562): ``import ckalab.data.registry`` (dataset
metadata, used by the report) loads neither torch nor the download machinery;
``from ckalab.data import make_task`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ckalab.data.augment import (
        Augmentation,
        default_augmentation,
        random_crop_flip,
        random_translate,
    )
    from ckalab.data.batches import BatchStream
    from ckalab.data.errors import (
        ChecksumError,
        CorruptFileError,
        DataError,
        DownloadError,
        MissingPackageError,
    )
    from ckalab.data.idx import parse_idx, read_idx
    from ckalab.data.registry import DATASETS, DatasetInfo, data_home, dataset_dir, get_info
    from ckalab.data.sources import (
        RawDataset,
        clear_cache,
        is_available,
        load_dataset,
        load_split,
    )
    from ckalab.data.tasks import ENCODINGS, Split, Task, encode, make_task, one_hot, signed

#: Public name -> the submodule that defines it.
_SOURCES: dict[str, str] = {
    "Augmentation": "augment",
    "default_augmentation": "augment",
    "random_crop_flip": "augment",
    "random_translate": "augment",
    "BatchStream": "batches",
    "ChecksumError": "errors",
    "CorruptFileError": "errors",
    "DataError": "errors",
    "DownloadError": "errors",
    "MissingPackageError": "errors",
    "parse_idx": "idx",
    "read_idx": "idx",
    "DATASETS": "registry",
    "DatasetInfo": "registry",
    "data_home": "registry",
    "dataset_dir": "registry",
    "get_info": "registry",
    "RawDataset": "sources",
    "clear_cache": "sources",
    "is_available": "sources",
    "load_dataset": "sources",
    "load_split": "sources",
    "ENCODINGS": "tasks",
    "Split": "tasks",
    "Task": "tasks",
    "encode": "tasks",
    "make_task": "tasks",
    "one_hot": "tasks",
    "signed": "tasks",
}

__all__ = [
    "DATASETS",
    "ENCODINGS",
    "Augmentation",
    "BatchStream",
    "ChecksumError",
    "CorruptFileError",
    "DataError",
    "DatasetInfo",
    "DownloadError",
    "MissingPackageError",
    "RawDataset",
    "Split",
    "Task",
    "clear_cache",
    "data_home",
    "dataset_dir",
    "default_augmentation",
    "encode",
    "get_info",
    "is_available",
    "load_dataset",
    "load_split",
    "make_task",
    "one_hot",
    "parse_idx",
    "random_crop_flip",
    "random_translate",
    "read_idx",
    "signed",
]


def __getattr__(name: str) -> Any:
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
