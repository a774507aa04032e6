"""Datasets, tasks, batches and augmentations.

* :data:`DATASETS`, :func:`load_dataset`, :func:`load_split`: raw datasets as numpy arrays
  (downloaded with checksums, read from local folders, or shipped offline sets).
* :func:`make_task` -> :class:`Task`: class subsets with encoded targets as tensors, plus
  class-balanced probe subsets for alignment tracking.
* :class:`BatchStream`: seeded epoch batches by indexing in-memory tensors.
* :func:`random_crop_flip`, :func:`random_translate`, :func:`default_augmentation`.
"""

from __future__ import annotations

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
from ckalab.data.sources import RawDataset, clear_cache, is_available, load_dataset, load_split
from ckalab.data.tasks import (
    ENCODINGS,
    Split,
    Task,
    encode,
    make_task,
    one_hot,
    signed,
)

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
