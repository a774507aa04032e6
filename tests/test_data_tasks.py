"""Tasks: class subsets and label mapping, subsampling, standardization, encodings, probes."""

from __future__ import annotations

import numpy as np
import pytest
import requests
import torch
from hypothesis import given
from hypothesis import strategies as st

import ckalab.data.download as download_mod
from ckalab.data import (
    Split,
    Task,
    encode,
    load_dataset,
    make_task,
    one_hot,
    signed,
)
from ckalab.data.tasks import MIN_STD, balanced_counts, stratified_counts


class CountingNoNetwork:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, url, output_file, pooch_obj):
        self.calls += 1
        raise requests.exceptions.ConnectionError(url)


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    blocker = CountingNoNetwork()
    monkeypatch.setattr(download_mod, "_downloader", lambda: blocker)
    monkeypatch.setenv("CKALAB_DATA", str(tmp_path / "empty-home"))
    return blocker


def rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x.reshape(len(x), -1)}


# --------------------------------------------------------------------------- classes


def test_class_order_mapping():
    raw = load_dataset("digits")
    task = make_task("digits", [4, 9], encoding="index", flatten=False)
    assert task.classes == (4, 9) and task.num_classes == 2
    expected_x = raw.x_train[np.isin(raw.y_train, [4, 9])] / 16.0
    expected_l = (raw.y_train[np.isin(raw.y_train, [4, 9])] == 9).astype(np.int64)
    np.testing.assert_allclose(task.train.x.numpy(), expected_x, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(task.train.labels.numpy(), expected_l)
    assert torch.equal(task.train.y, task.train.labels)

    reverse = make_task("digits", [9, 4], encoding="index")
    np.testing.assert_array_equal(reverse.train.labels.numpy(), 1 - expected_l)


def test_all_classes_default_and_shapes():
    task = make_task("mnist-5k")
    assert task.classes == tuple(range(10))
    assert task.input_shape == (784,) and task.image_shape == (1, 28, 28)
    assert task.train.x.shape == (4000, 784) and task.train.x.dtype == torch.float32
    assert task.train.y.shape == (4000, 10)
    assert float(task.train.x.min()) == 0.0 and float(task.train.x.max()) == 1.0
    assert task.mean is None and task.std is None
    # default probe: the whole split, capped at 10,000
    assert len(task.probe_train) == 4000 and len(task.probe_test) == 1000
    img = make_task("mnist-5k", [0, 1], flatten=False)
    assert img.input_shape == (1, 28, 28) and img.train.x.shape[1:] == (1, 28, 28)


def test_digits_scaled_by_16():
    task = make_task("digits")
    assert float(task.train.x.max()) == 1.0
    raw = load_dataset("digits")
    np.testing.assert_allclose(task.test.x.numpy(), raw.x_test.reshape(359, -1) / 16, atol=1e-7)


# --------------------------------------------------------------------------- encodings


def test_encodings():
    oh = make_task("digits", [2, 7])
    assert oh.train.y.dtype == torch.float32 and oh.train.y.shape == (len(oh.train), 2)
    assert torch.equal(oh.train.y.argmax(1), oh.train.labels)
    assert torch.equal(oh.train.y.sum(1), torch.ones(len(oh.train)))

    sg = make_task("digits", [2, 7], encoding="signed")
    assert sg.train.y.dtype == torch.float32 and sg.train.y.shape == (len(sg.train), 1)
    assert set(sg.train.y.flatten().tolist()) == {-1.0, 1.0}
    assert torch.equal(sg.train.y[:, 0] > 0, sg.train.labels == 1)  # classes[1] -> +1

    ix = make_task("digits", [2, 7, 3], encoding="index")
    assert ix.test.y.dtype == torch.int64 and ix.test.y.shape == (len(ix.test),)


def test_encoding_functions():
    labels = torch.tensor([0, 2, 1])
    assert one_hot(labels, 3).tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0]]
    assert one_hot(labels, 3).dtype == torch.float32
    assert signed(torch.tensor([0, 1, 1])).tolist() == [[-1.0], [1.0], [1.0]]
    assert torch.equal(encode(labels, "index", 3), labels)
    with pytest.raises(ValueError, match=r"labels must lie in 0..1, found 0..2"):
        signed(labels)
    with pytest.raises(ValueError, match=r"labels must lie in 0..1"):
        one_hot(labels, 2)
    with pytest.raises(ValueError, match=r"integer tensor"):
        one_hot(torch.tensor([0.0, 1.0]), 2)
    with pytest.raises(ValueError, match=r"num_classes must be a positive integer"):
        one_hot(labels, 0)
    with pytest.raises(ValueError, match=r"unknown encoding 'onehot'"):
        encode(labels, "onehot", 3)
    with pytest.raises(ValueError, match=r"'signed' needs exactly two classes, got 3"):
        encode(labels, "signed", 3)


# --------------------------------------------------------------------------- subsampling


def test_stratified_subsampling_counts_and_seed():
    task = make_task("mnist-5k", [4, 9], n_train=101, n_test=20, seed=3)
    assert task.train.class_counts() == [51, 50]
    assert task.test.class_counts() == [10, 10]
    again = make_task("mnist-5k", [4, 9], n_train=101, n_test=20, seed=3)
    assert torch.equal(task.train.x, again.train.x) and torch.equal(task.test.x, again.test.x)
    other = make_task("mnist-5k", [4, 9], n_train=101, n_test=20, seed=4)
    assert not torch.equal(task.train.x, other.train.x)
    full = make_task("mnist-5k", [4, 9])
    assert rows(task.train.x) <= rows(full.train.x)

    digits = make_task("digits", n_train=200)
    counts = np.bincount(load_dataset("digits").y_train, minlength=10)
    assert digits.train.class_counts() == stratified_counts(counts, 200).tolist()
    assert len(digits.train) == 200


@given(
    counts=st.lists(st.integers(0, 60), min_size=2, max_size=10).filter(lambda c: sum(c) > 0),
    frac=st.floats(0, 1),
)
def test_stratified_counts_property(counts, frac):
    n = round(frac * sum(counts))
    alloc = stratified_counts(counts, n)
    assert alloc.sum() == n
    assert np.all(alloc >= 0) and np.all(alloc <= np.array(counts))
    nonempty = sum(c > 0 for c in counts)
    if n >= nonempty:
        assert all(a >= 1 for a, c in zip(alloc, counts, strict=True) if c > 0)
    else:
        quota = np.array(counts) * n / sum(counts)
        assert np.all(np.abs(alloc - quota) < 1)


@given(
    counts=st.lists(st.integers(0, 40), min_size=2, max_size=10).filter(lambda c: sum(c) > 0),
    frac=st.floats(0, 1),
)
def test_balanced_counts_property(counts, frac):
    n = round(frac * sum(counts))
    alloc = balanced_counts(counts, n)
    counts = np.array(counts)
    assert alloc.sum() == n and np.all(alloc >= 0) and np.all(alloc <= counts)
    # water-filling: a class with room left is within one of the largest allocation
    room = alloc < counts
    if room.any():
        assert alloc[room].min() >= alloc.max() - 1


# --------------------------------------------------------------------------- standardization


def test_standardization_uses_train_statistics_only():
    task = make_task("digits", [0, 1, 2], standardize=True, n_train=150)
    plain = make_task("digits", [0, 1, 2], n_train=150)
    x = plain.train.x.double()
    mean, std = x.mean(0), x.std(0, correction=0)
    constant = std == 0
    assert constant.any()  # digits has always-blank border pixels
    std_safe = torch.where(constant, torch.ones_like(std), std.clamp_min(MIN_STD))
    torch.testing.assert_close(task.mean.double(), mean, atol=1e-6, rtol=0)
    torch.testing.assert_close(task.std.double(), std_safe, atol=1e-6, rtol=0)
    assert torch.all(task.std[constant] == 1)
    xs = task.train.x.double()
    assert xs.mean(0).abs().max() < 1e-5
    unit = std >= MIN_STD
    assert (xs.std(0, correction=0)[unit] - 1).abs().max() < 1e-4
    assert torch.all(xs[:, constant] == 0)  # constant features centered, not scaled
    expected_test = (plain.test.x.double() - mean) / std_safe
    torch.testing.assert_close(task.test.x.double(), expected_test, atol=1e-4, rtol=0)
    # the test split's own statistics were not used
    assert task.test.x.double().mean(0).abs().max() > 1e-3


def test_standardization_keeps_nearly_constant_pixels_bounded():
    """A pixel almost never inked in training must not become a huge outlier on test images."""
    task = make_task("mnist-5k", [4, 9], standardize=True)
    assert float(task.std.min()) >= MIN_STD or float(task.std.min()) == 1.0
    assert float(task.test.x.abs().max()) <= 1.0 / MIN_STD + 1e-3


def test_standardization_image_shaped():
    task = make_task("digits", [0, 1], standardize=True, flatten=False)
    assert task.mean.shape == (1, 8, 8) and task.std.shape == (1, 8, 8)
    assert task.train.x.shape[1:] == (1, 8, 8)


# --------------------------------------------------------------------------- probes


def test_probe_subsets_balanced_seeded_subsets():
    task = make_task("digits", probe_size=100, seed=1)
    assert len(task.probe_train) == 100 and len(task.probe_test) == 100
    assert task.probe_train.class_counts(10) == [10] * 10
    assert task.probe_test.class_counts(10) == [10] * 10
    assert rows(task.probe_train.x) <= rows(task.train.x)
    assert rows(task.probe_test.x) <= rows(task.test.x)
    same = make_task("digits", probe_size=100, seed=1)
    assert torch.equal(same.probe_train.x, task.probe_train.x)
    other = make_task("digits", probe_size=100, seed=2)
    assert not torch.equal(other.probe_train.x, task.probe_train.x)
    # probe targets/labels stay consistent with the examples
    assert torch.equal(task.probe_train.y.argmax(1), task.probe_train.labels)


def test_probe_unbalanced_classes_and_whole_split():
    task = make_task("digits", [0, 1], n_train=35, probe_size=20)
    assert task.train.class_counts() == [17, 18]
    assert task.probe_train.class_counts() == [10, 10]
    whole = make_task("digits", [0, 1], probe_size=None)
    assert whole.probe_train is whole.train and whole.probe_test is whole.test
    big = make_task("digits", [0, 1], probe_size=10_000)
    assert len(big.probe_train) == len(big.train)
    small = make_task("digits", [0, 1], probe_size=2)
    assert small.probe_train.class_counts() == [1, 1]


def test_probe_balanced_when_classes_differ():
    split = Split(
        torch.arange(35.0).unsqueeze(1),
        torch.zeros(35, 1),
        torch.tensor([0] * 30 + [1] * 5),
    )
    from ckalab.data.tasks import _probe
    from ckalab.seeds import Stream, numpy_rng

    probe = _probe(split, 30, 2, numpy_rng(0, Stream.PROBE_TRAIN))
    assert probe.class_counts() == [25, 5]


# --------------------------------------------------------------------------- devices


def test_task_and_split_to_device():
    task = make_task("digits", [3, 5], standardize=True, probe_size=20)
    moved = task.to("meta")
    assert isinstance(moved, Task)
    for split in (moved.train, moved.test, moved.probe_train, moved.probe_test):
        assert split.x.is_meta and split.y.is_meta and split.labels.is_meta
    assert moved.mean.is_meta and moved.std.is_meta
    assert task.train.x.device.type == "cpu"  # original untouched (frozen)
    with pytest.raises(ValueError, match=r"same length"):
        Split(torch.zeros(3, 2), torch.zeros(2, 1), torch.zeros(3, dtype=torch.long))


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dataset": "cifar100"}, r"unknown dataset 'cifar100'; known datasets: 'mnist'"),
        ({"classes": [3, 11]}, r"dataset 'mnist' has no class 11; its classes are 0..9"),
        ({"classes": [-1, 2]}, r"has no class -1"),
        ({"classes": [3]}, r"at least two classes, got \[3\]"),
        ({"classes": []}, r"at least two classes"),
        ({"classes": [3, 5, 3]}, r"duplicate classes \[3\] in \[3, 5, 3\]"),
        ({"classes": "49"}, r"classes must be a sequence of integer labels, got '49'"),
        ({"classes": [4, 9.0]}, r"classes must be integer labels, got 9.0"),
        ({"classes": [True, 2]}, r"classes must be integer labels, got True"),
        ({"classes": [4, 9], "n_train": 70_000}, r"n_train=70000 is larger than the 60000"),
        ({"classes": [4, 9], "n_test": 10_001}, r"n_test=10001 is larger than the 10000"),
        ({"classes": [4, 9], "n_train": 1}, r"n_train=1 is too small: .*at least 2"),
        ({"classes": [4, 9], "n_train": "100"}, r"n_train must be an integer or None"),
        ({"classes": [1, 2, 3], "encoding": "signed"}, r"'signed' needs exactly two classes"),
        ({"encoding": "onehot"}, r"unknown encoding 'onehot'; expected one of one_hot"),
        ({"probe_size": 0}, r"probe_size=0 is too small"),
        ({"seed": -1}, r"seed must be a non-negative integer, got -1"),
        ({"seed": 1.5}, r"seed must be a non-negative integer"),
        ({"flatten": "yes"}, r"flatten must be True or False, got 'yes'"),
        ({"device": "gpu0"}, r"invalid device 'gpu0'"),
    ],
)
def test_bad_input_before_any_download(kwargs, message, no_network):
    kwargs = {"dataset": "mnist", **kwargs}
    with pytest.raises(ValueError, match=message):
        make_task(**kwargs)
    assert no_network.calls == 0


def test_n_train_larger_than_class_subset():
    with pytest.raises(ValueError, match=r"n_train=801 is larger than the 800 examples"):
        make_task("mnist-5k", [4, 9], n_train=801)
    with pytest.raises(ValueError, match=r"n_test=201 is larger than the 200 examples"):
        make_task("mnist-5k", [4, 9], n_test=201)


def test_make_task_without_network_fails_with_download_error(no_network):
    from ckalab.data import DownloadError

    with pytest.raises(DownloadError, match=r"train-images-idx3-ubyte.gz"):
        make_task("fashion-mnist", [0, 1])
    assert no_network.calls >= 1
