"""Atomic checkpoint files.

A checkpoint is a plain dictionary of tensors, numbers, strings, lists and dicts (loadable with
``torch.load(weights_only=True)``: no pickled code). It is written to a hidden temporary file
``.<name>.<random>.tmp`` in the same folder, flushed to disk, then moved over the old one with
:func:`os.replace`, so a crash leaves either the previous checkpoint or the new one, never a
partial file. The file is created with the permissions of any other output file (``0666``
minus the umask).

A save killed mid-write leaves its temporary file behind. Every save and load removes the
temporary files of that checkpoint that have not been written to for :data:`STALE_AFTER`
seconds (a live writer writes continuously and renames its file as soon as it is done).

A checkpoint that cannot be read raises :class:`CheckpointError` saying what is wrong (empty,
truncated or not a checkpoint, foreign objects) and how to recover.
"""

from __future__ import annotations

import os
import pickle
import secrets
import time
import zipfile
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CHECKPOINT_NAME",
    "STALE_AFTER",
    "CheckpointError",
    "checkpoint_path",
    "load_checkpoint",
    "remove_stale_temporaries",
    "save_checkpoint",
]

CHECKPOINT_NAME = "checkpoint.pt"
#: Seconds without a write after which a checkpoint's temporary file is left over from a
#: killed save and removed.
STALE_AFTER = 60.0

_RECOVER = (
    "delete it to start the run over, or set checkpoint.resume = false to ignore it (the run "
    "then starts from scratch and overwrites it)"
)


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be used; the message says why and how to recover."""


def checkpoint_path(directory: str | os.PathLike[str]) -> Path:
    """The checkpoint file inside ``directory``."""
    return Path(directory) / CHECKPOINT_NAME


def _temporaries(path: Path) -> list[Path]:
    if not path.parent.is_dir():
        return []
    return list(path.parent.glob(f".{path.name}.*.tmp"))


def remove_stale_temporaries(
    path: str | os.PathLike[str], *, older_than: float = STALE_AFTER
) -> int:
    """Remove the temporary files of checkpoint ``path`` not modified for ``older_than``
    seconds (left by a save that was killed); returns how many were removed."""
    removed = 0
    now = time.time()
    for tmp in _temporaries(Path(path)):
        try:
            if now - tmp.stat().st_mtime > older_than:
                tmp.unlink()
                removed += 1
        except FileNotFoundError:  # removed meanwhile (another process cleaning up)
            continue
    return removed


def _create_temporary(path: Path) -> tuple[int, Path]:
    """Create ``.<name>.<random>.tmp`` next to ``path`` with mode 0666 minus the umask."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file + fsync + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors land on the CPU).

    Raises FileNotFoundError when there is none, and :class:`CheckpointError` (one line: what
    is wrong with the file and how to recover) when it cannot be read.
    """
    path = Path(path)
    remove_stale_temporaries(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); {_RECOVER}")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            zip_start = f.read(4) == b"PK\x03\x04"
        reason = (
            "it is truncated (the end of the file is missing)"
            if zip_start
            else "it is not a checkpoint file (it does not start like one)"
        )
        raise CheckpointError(
            f"checkpoint {path} cannot be read: {reason}, {size} bytes; {_RECOVER}"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"checkpoint {path} holds objects other than tensors, numbers and strings (it was "
            f"not written by ckalab, and is not loaded for safety); {_RECOVER}"
        ) from None
    except Exception as exc:
        detail = (str(exc).strip() or type(exc).__name__).splitlines()[0].split(". ")[0]
        raise CheckpointError(
            f"checkpoint {path} cannot be read: it is damaged ({detail}), {size} bytes; {_RECOVER}"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(state).__name__}, not a checkpoint; {_RECOVER}"
        )
    return state
