"""IDX parsing on small files written by the tests (raw and gzipped, good and malformed)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ckalab.data import parse_idx, read_idx

CODES = {np.uint8: 0x08, np.int8: 0x09, ">i2": 0x0B, ">i4": 0x0C, ">f4": 0x0D, ">f8": 0x0E}


def idx_bytes(arr: np.ndarray, code: int) -> bytes:
    header = struct.pack(">BBBB", 0, 0, code, arr.ndim)
    header += struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.tobytes()


def write(path: Path, data: bytes, gz: bool) -> Path:
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_images_and_labels_roundtrip(tmp_path, gz):
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    suffix = ".gz" if gz else ""
    ip = write(tmp_path / f"images-idx3-ubyte{suffix}", idx_bytes(images, 0x08), gz)
    lp = write(tmp_path / f"labels-idx1-ubyte{suffix}", idx_bytes(labels, 0x08), gz)
    np.testing.assert_array_equal(read_idx(ip, ndim=3), images)
    np.testing.assert_array_equal(read_idx(lp, ndim=1), labels)
    assert read_idx(ip).dtype == np.uint8


def test_gzip_detected_from_content_not_name(tmp_path):
    arr = np.ones((2, 2), dtype=np.uint8)
    p = write(tmp_path / "no-suffix", idx_bytes(arr, 0x08), gz=True)
    np.testing.assert_array_equal(read_idx(p), arr)


@given(
    dtype=st.sampled_from(list(CODES)),
    shape=st.lists(st.integers(0, 4), min_size=1, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_parse_idx_roundtrip_property(dtype, shape, seed):
    rng = np.random.default_rng(seed)
    arr = (rng.standard_normal(shape) * 50).astype(np.dtype(dtype))
    out = parse_idx(idx_bytes(arr, CODES[dtype]))
    assert out.shape == tuple(shape)
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, arr)
    assert out.flags.writeable


def test_truncated_data_names_file_and_expected_bytes(tmp_path):
    images = np.zeros((10, 28, 28), dtype=np.uint8)
    data = idx_bytes(images, 0x08)[: 16 + 1234]
    p = write(tmp_path / "t10k-images-idx3-ubyte", data, gz=False)
    with pytest.raises(ValueError, match=r"expected 7840 bytes of data.*found 1234") as e:
        read_idx(p)
    assert "t10k-images-idx3-ubyte" in str(e.value)
    assert "truncated" in str(e.value)


def test_trailing_bytes_rejected():
    data = idx_bytes(np.zeros(3, dtype=np.uint8), 0x08) + b"\x00\x00"
    with pytest.raises(ValueError, match=r"expected 3 bytes of data.*found 5"):
        parse_idx(data, "lbl")


def test_truncated_gzip_stream(tmp_path):
    raw = gzip.compress(idx_bytes(np.zeros((50, 28, 28), dtype=np.uint8), 0x08))
    p = tmp_path / "x.gz"
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"x.gz.*truncated gzip"):
        read_idx(p)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00", "expected a 4-byte header, found 2 bytes"),
        (b"\x01\x00\x08\x01" + b"\x00" * 8, "magic number.*two zero bytes.*0x01 0x00"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "unknown IDX dtype code 0x07"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x01", "truncated IDX header: expected 16 bytes"),
    ],
)
def test_malformed_headers(data, message):
    with pytest.raises(ValueError, match=message) as e:
        parse_idx(data, "bad-file")
    assert "bad-file" in str(e.value)


def test_wrong_ndim(tmp_path):
    p = write(tmp_path / "lbl", idx_bytes(np.zeros((2, 2), dtype=np.uint8), 0x08), gz=False)
    with pytest.raises(ValueError, match=r"lbl: expected an IDX file with 1 dimensions, found 2"):
        read_idx(p, ndim=1)
