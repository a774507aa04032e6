"""Fetching dataset files: use what is already in the data folder, else download with pooch.

Every download is verified against the checksum kept in :mod:`ckalab.data.registry`; pooch
downloads to a temporary file and only moves it into place when the hash matches, so a corrupt
download never lands in the data folder. Files the user put in the folder themselves (gzipped or
not) are used as they are.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pooch

from ckalab.data.errors import ChecksumError, DownloadError
from ckalab.data.registry import ENV_VAR, RemoteFile

__all__ = ["ChecksumError", "DownloadError", "fetch_file", "find_local"]


def _downloader() -> object:
    """The pooch downloader used for every fetch (tests replace this function).

    Shows a progress bar (tqdm, through pooch) when standard error is a terminal.
    """
    return pooch.HTTPDownloader(progressbar=sys.stderr.isatty(), timeout=60)


def find_local(folder: Path, remote: RemoteFile) -> Path | None:
    """The file for ``remote`` already in ``folder`` (as downloaded, or decompressed), if any."""
    for name in (remote.fname, remote.plain_name):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def _offline_hint(folder: Path) -> str:
    return (
        f"Without network, put the files in {folder} (gzipped or not), or point "
        f"`data_dir=` / the {ENV_VAR} environment variable at a folder that holds them, "
        "or use an offline dataset: 'mnist-5k' or 'digits' (pip install ckalab[offline])."
    )


def fetch_file(remote: RemoteFile, folder: str | os.PathLike[str], *, dataset: str = "") -> Path:
    """Return the local path of ``remote`` in ``folder``, downloading it if it is not there.

    Mirrors are tried in order. Raises:
        ChecksumError: a download did not match the known hash (the bad file is removed).
        DownloadError: no mirror could be reached (the message names the URLs and how to work
            offline).
    """
    import requests  # pooch's own dependency; imported lazily

    folder = Path(folder)
    local = find_local(folder, remote)
    if local is not None:
        return local
    target = folder / remote.fname
    label = f"dataset {dataset!r}, " if dataset else ""
    failures: list[str] = []
    for url in remote.urls:
        try:
            path = pooch.retrieve(
                url,
                known_hash=remote.known_hash,
                fname=remote.fname,
                path=folder,
                downloader=_downloader(),
                progressbar=False,
            )
        except ValueError as exc:
            if "hash" not in str(exc).lower():
                raise
            target.unlink(missing_ok=True)  # pooch never moves a bad download in; be sure
            raise ChecksumError(
                f"checksum mismatch for {url} ({label}file {remote.fname}): expected "
                f"{remote.known_hash}; the bad download was removed and nothing was saved "
                f"to {folder}. Try again, or place a verified copy of the file there. "
                f"({exc})"
            ) from exc
        except requests.exceptions.RequestException as exc:
            failures.append(f"{url}: {type(exc).__name__}: {exc}")
            continue
        except OSError as exc:  # not a network problem: the folder cannot be written, ...
            raise DownloadError(
                f"could not save {remote.fname} ({label}from {url}) in {folder}: {exc}. "
                f"Choose a writable folder with `data_dir=` or the {ENV_VAR} environment variable."
            ) from exc
        return Path(path)
    tried = "\n  ".join(failures)
    raise DownloadError(
        f"could not download {remote.fname} ({label}from {', '.join(remote.urls)}); "
        f"is the network reachable?\n  {tried}\n{_offline_hint(folder)}"
    )
