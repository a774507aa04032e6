"""Exceptions raised by :mod:`ckalab.data`.

:class:`DataError` is the base of every failure to obtain or read a dataset's files: a broken
or missing cache, not a wrong setting. It is never a :class:`ckalab.config.ConfigError`, so a
caller can tell "fix the configuration" from "repair or re-download the data". Argument
mistakes (an unknown dataset, a class that does not exist) stay plain :class:`ValueError`.
"""

from __future__ import annotations

__all__ = [
    "ChecksumError",
    "CorruptFileError",
    "DataError",
    "DownloadError",
    "MissingPackageError",
]


class DataError(Exception):
    """A dataset's files could not be obtained or read (the data, not the configuration)."""


class CorruptFileError(DataError, ValueError):
    """A dataset file is corrupt, truncated or malformed; the message names the file (delete
    it so that it is downloaded again)."""


class DownloadError(DataError, RuntimeError):
    """A file could not be downloaded (no network, or every mirror failed)."""


class ChecksumError(DataError, ValueError):
    """A downloaded file did not match its known checksum (the bad file was removed)."""


class MissingPackageError(DataError, ImportError, RuntimeError):
    """The package shipping an offline dataset is missing (``pip install ckalab[offline]``)."""
