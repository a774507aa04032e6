"""Reading IDX files (the MNIST / Fashion-MNIST format) with numpy.

Format: two zero bytes, a dtype code byte, the number of dimensions ``ndim``, then ``ndim``
big-endian uint32 sizes, then the data in C order (big-endian for multi-byte types). Files may be
gzipped (detected from the content, not the name).
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from ckalab.data.errors import CorruptFileError

__all__ = ["IDX_DTYPES", "parse_idx", "read_idx"]

IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise CorruptFileError(
            f"{path}: corrupt or truncated gzip stream ({exc}); delete the file so it can be "
            "downloaded again"
        ) from exc


def parse_idx(data: bytes, source: str = "<bytes>", *, ndim: int | None = None) -> np.ndarray:
    """Parse the bytes of an (uncompressed) IDX file; ``source`` names it in error messages.

    Args:
        data: the file content.
        source: name used in error messages.
        ndim: if given, the number of dimensions the file must have.

    Returns:
        A new (writable) numpy array in native byte order with the file's shape.

    Raises:
        CorruptFileError: (a ``ValueError``) naming ``source`` and what was expected, on any
            malformation (bad magic number, unknown dtype code, wrong ndim, truncated header or
            data, trailing bytes).
    """
    if len(data) < 4:
        raise CorruptFileError(
            f"{source}: not an IDX file: expected a 4-byte header, found {len(data)} bytes"
        )
    if data[0] != 0 or data[1] != 0:
        raise CorruptFileError(
            f"{source}: not an IDX file: expected the magic number to start with two zero "
            f"bytes, found 0x{data[0]:02x} 0x{data[1]:02x}"
        )
    code, file_ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02x}" for c in IDX_DTYPES)
        raise CorruptFileError(
            f"{source}: unknown IDX dtype code 0x{code:02x}; expected one of {known}"
        )
    if ndim is not None and file_ndim != ndim:
        raise CorruptFileError(
            f"{source}: expected an IDX file with {ndim} dimensions, found {file_ndim}"
        )
    header = 4 + 4 * file_ndim
    if len(data) < header:
        raise CorruptFileError(
            f"{source}: truncated IDX header: expected {header} bytes for {file_ndim} "
            f"dimensions, found {len(data)}"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=file_ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    found = len(data) - header
    if found != expected:
        what = "truncated" if found < expected else "trailing bytes in"
        shape = " x ".join(str(d) for d in dims)
        raise CorruptFileError(
            f"{source}: {what} IDX data: expected {expected} bytes of data "
            f"({shape} {dtype.name}), found {found}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike[str], *, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file, gzipped or not (see :func:`parse_idx`)."""
    path = Path(path)
    return parse_idx(_read_bytes(path), str(path), ndim=ndim)
