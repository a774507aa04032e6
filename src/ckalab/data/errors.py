"""Exceptions raised by :mod:`ckalab.data`."""

from __future__ import annotations

__all__ = ["ChecksumError", "DownloadError", "MissingPackageError"]


class DownloadError(RuntimeError):
    """A file could not be downloaded (no network, or every mirror failed)."""


class ChecksumError(ValueError):
    """A downloaded file did not match its known checksum (the bad file was removed)."""


class MissingPackageError(ImportError, RuntimeError):
    """The package shipping an offline dataset is missing (``pip install ckalab[offline]``)."""
