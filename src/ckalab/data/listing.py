"""The dataset listing: each dataset, whether it is available offline, and where the cache is
(printed by ``ckalab datasets``)."""

from __future__ import annotations

import os
import sys
from typing import TextIO

from ckalab.data.registry import DATASETS, ENV_VAR, data_home, dataset_dir
from ckalab.data.sources import local_status

__all__ = ["dataset_rows", "print_datasets"]

_STATUS = {
    "offline": "offline",
    "missing-package": "needs pip install ckalab[offline]",
    "cached": "cached",
    "partial": "partly cached; rest downloads on first use",
    "missing": "downloads on first use",
}
_HEADER = ("name", "train", "test", "classes", "image (C,H,W)", "status", "source")


def dataset_rows(data_dir: str | os.PathLike[str] | None = None) -> list[tuple[str, ...]]:
    """One row of strings per dataset, in the order of :data:`_HEADER`."""
    rows = []
    for info in DATASETS.values():
        status = _STATUS[local_status(info.name, data_dir=data_dir)]
        if info.offline:
            source = f"bundled with {info.package}"
        else:
            source = str(dataset_dir(info.name, data_dir))
        rows.append(
            (
                info.name,
                f"{info.n_train:,}",
                f"{info.n_test:,}",
                str(info.num_classes),
                "x".join(str(s) for s in info.image_shape),
                status,
                source,
            )
        )
    return rows


def print_datasets(
    data_dir: str | os.PathLike[str] | None = None, *, file: TextIO | None = None
) -> None:
    """Print a table of the datasets and the data folder in use."""
    out = file if file is not None else sys.stdout
    rows = [_HEADER, *dataset_rows(data_dir)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEADER))]
    for j, row in enumerate(rows):
        print(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=out
        )
        if j == 0:
            print("  ".join("-" * w for w in widths), file=out)
    home = data_home(data_dir)
    if data_dir is not None:
        origin = "--data-dir"
    elif os.environ.get(ENV_VAR):
        origin = f"${ENV_VAR}"
    else:
        origin = f"user cache; set ${ENV_VAR} or pass --data-dir to change"
    print(f"\ndata folder: {home} ({origin})", file=out)
    print("offline sets: " + ", ".join(n for n, i in DATASETS.items() if i.offline), file=out)
