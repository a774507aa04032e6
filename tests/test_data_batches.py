"""BatchStream (seeded epochs by indexing) and tensor augmentations."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ckalab.data import (
    BatchStream,
    Split,
    default_augmentation,
    random_crop_flip,
    random_translate,
)


def make_split(n: int, d: int = 3) -> Split:
    x = torch.arange(n, dtype=torch.float32).unsqueeze(1).repeat(1, d)  # row i is all i
    labels = torch.arange(n) % 2
    return Split(x, labels.to(torch.float32).unsqueeze(1), labels)


def epoch_ids(stream: BatchStream) -> list[list[int]]:
    return [xb[:, 0].long().tolist() for xb, _ in stream]


# --------------------------------------------------------------------------- BatchStream


@given(n=st.integers(1, 60), batch=st.integers(1, 70), drop_last=st.booleans())
def test_epoch_covers_every_example_once(n, batch, drop_last):
    if drop_last and batch > n:
        return
    split = make_split(n)
    stream = BatchStream(split, batch, generator=torch.Generator().manual_seed(0),
                         drop_last=drop_last)  # fmt: skip
    batches = epoch_ids(stream)
    assert len(batches) == len(stream)
    seen = [i for b in batches for i in b]
    assert len(set(seen)) == len(seen)
    if drop_last:
        assert all(len(b) == batch for b in batches)
        assert len(seen) == (n // batch) * batch
    else:
        assert sorted(seen) == list(range(n))
        assert all(len(b) == batch for b in batches[:-1])


def test_targets_follow_inputs():
    split = make_split(50)
    for xb, yb in BatchStream(split, 7, generator=torch.Generator().manual_seed(3)):
        assert torch.equal(yb[:, 0], (xb[:, 0].long() % 2).float())


def test_same_seed_same_batches_different_seed_differ():
    split = make_split(100)

    def run(seed: int, epochs: int = 3) -> list:
        g = torch.Generator().manual_seed(seed)
        stream = BatchStream(split, 16, generator=g)
        return [epoch_ids(stream) for _ in range(epochs)]

    a, b, c = run(0), run(0), run(1)
    assert a == b
    assert a != c
    assert a[0] != a[1]  # a fresh permutation every epoch


def test_generator_state_restores_batches():
    split = make_split(64)
    g = torch.Generator().manual_seed(5)
    aug = functools.partial(random_translate, max_shift=1)
    stream = BatchStream(split, 8, generator=g, augment=aug, image_shape=(1, 1, 3))
    next(iter(stream))
    state = g.get_state()  # "checkpoint" at an epoch boundary
    first = [(x.clone(), y.clone()) for x, y in stream]
    g.set_state(state)
    second = list(stream)
    assert all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for a, b in zip(first, second, strict=True)
    )


def test_permutation_drawn_when_epoch_starts():
    split = make_split(10)
    g = torch.Generator().manual_seed(0)
    stream = BatchStream(split, 4, generator=g)
    before = g.get_state()
    it = iter(stream)
    assert not torch.equal(g.get_state(), before)
    ref = torch.Generator().manual_seed(0)
    assert next(it)[0][:, 0].long().tolist() == torch.randperm(10, generator=ref)[:4].tolist()


def test_flattened_inputs_augmented_as_images():
    x = torch.rand(6, 2 * 4 * 5)
    split = Split(x, torch.zeros(6, 1), torch.zeros(6, dtype=torch.long))
    shapes = []

    def spy(images, generator):
        shapes.append(tuple(images.shape))
        return images.flip(-1)

    stream = BatchStream(split, 4, generator=torch.Generator(), augment=spy, image_shape=(2, 4, 5))
    out = list(stream)
    assert shapes == [(4, 2, 4, 5), (2, 2, 4, 5)]
    assert out[0][0].shape == (4, 40)
    got = torch.cat([b[0] for b in out])
    # every output row is the flipped image of some input row
    flipped = x.view(6, 2, 4, 5).flip(-1).reshape(6, -1)
    assert torch.equal(got.sort(0).values, flipped.sort(0).values)


def test_image_inputs_augmented_directly():
    x = torch.rand(5, 1, 6, 6)
    split = Split(x, torch.zeros(5, 1), torch.zeros(5, dtype=torch.long))
    stream = BatchStream(split, 5, generator=torch.Generator().manual_seed(0),
                         augment=random_translate)  # fmt: skip
    ((xb, _),) = list(stream)
    assert xb.shape == (5, 1, 6, 6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
        ({"batch_size": 2.5}, "batch_size must be a positive integer, got 2.5"),
        ({"batch_size": 20, "drop_last": True}, "exceeds the 10 examples"),
        ({"generator": 0}, "generator must be a torch.Generator"),
        ({"augment": random_translate}, r"needs image_shape=\(C, H, W\)"),
        ({"augment": random_translate, "image_shape": (1, 2, 2)}, "does not match inputs"),
        ({"augment": "flip"}, "augment must be callable"),
    ],
)
def test_batch_stream_bad_input(kwargs, message):
    args = {"batch_size": 4, "generator": torch.Generator(), **kwargs}
    batch_size = args.pop("batch_size")
    with pytest.raises(ValueError, match=message):
        BatchStream(make_split(10), batch_size, **args)


def test_empty_split_rejected():
    empty = Split(torch.zeros(0, 2), torch.zeros(0, 1), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match=r"empty split"):
        BatchStream(empty, 4, generator=torch.Generator())


# --------------------------------------------------------------------------- augmentations


def images(n=8, c=3, h=6, w=7, seed=0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed)) + 0.5


def test_shapes_dtype_device_and_determinism():
    x = images()
    for fn in (random_crop_flip, random_translate):
        a = fn(x, torch.Generator().manual_seed(1))
        b = fn(x, torch.Generator().manual_seed(1))
        c = fn(x, torch.Generator().manual_seed(2))
        assert a.shape == x.shape and a.dtype == x.dtype
        assert torch.equal(a, b)
        assert not torch.equal(a, c)


def test_translate_zero_is_identity_and_crop_zero_noflip_identity():
    x = images()
    assert torch.equal(random_translate(x, torch.Generator(), max_shift=0), x)
    assert torch.equal(random_crop_flip(x, torch.Generator(), padding=0, flip=False), x)


def test_flip_only_is_a_flip():
    x = images(n=64)
    out = random_crop_flip(x, torch.Generator().manual_seed(0), padding=0)
    flipped = [torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x, strict=True)]
    same = [torch.equal(o, xi) for o, xi in zip(out, x, strict=True)]
    assert all(f or s for f, s in zip(flipped, same, strict=True))
    assert 10 < sum(flipped) < 54  # about half are flipped


@given(seed=st.integers(0, 10_000), max_shift=st.integers(0, 3))
def test_translate_is_a_shift_with_zero_fill(seed, max_shift):
    x = images(n=4, c=2, h=5, w=6, seed=seed)  # values in [0.5, 1.5): never zero
    out = random_translate(x, torch.Generator().manual_seed(seed), max_shift=max_shift)
    for o, xi in zip(out, x, strict=True):
        matches = []
        for dy in range(-max_shift, max_shift + 1):
            for dx in range(-max_shift, max_shift + 1):
                ref = torch.zeros_like(xi)
                h, w = xi.shape[1:]
                ys, yd = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h + min(-dy, 0))
                xs, xd = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w + min(-dx, 0))
                ref[:, yd, xd] = xi[:, ys, xs]  # out[h, w] = x[h + dy, w + dx]
                matches.append(torch.equal(o, ref))
        assert any(matches)


def test_crop_flip_covers_all_offsets():
    x = torch.zeros(400, 1, 5, 5)
    x[:, :, 2, 2] = 1.0  # a single centre pixel reveals the shift
    out = random_crop_flip(x, torch.Generator().manual_seed(0), padding=2, flip=False)
    pos = out.view(400, -1).argmax(1)
    assert set(pos.tolist()) == {r * 5 + c for r in range(5) for c in range(5)}


def test_augmentation_with_cpu_generator_on_other_device():
    x = images().to("meta")
    out = random_crop_flip(x, torch.Generator())
    assert out.is_meta and out.shape == x.shape


def test_augmentation_bad_input():
    with pytest.raises(ValueError, match=r"expects images shaped \(n, C, H, W\), got \(8, 42\)"):
        random_crop_flip(torch.zeros(8, 42), torch.Generator())
    with pytest.raises(ValueError, match=r"padding must be a non-negative integer, got -1"):
        random_crop_flip(images(), torch.Generator(), padding=-1)
    with pytest.raises(ValueError, match=r"max_shift must be a non-negative integer, got 1.5"):
        random_translate(images(), torch.Generator(), max_shift=1.5)


def test_default_augmentation():
    assert default_augmentation("cifar10") is random_crop_flip
    assert default_augmentation("mnist") is random_translate
    assert default_augmentation("mnist-5k") is random_translate
    digits = default_augmentation("digits")
    assert digits.func is random_translate and digits.keywords == {"max_shift": 1}
    with pytest.raises(ValueError, match=r"unknown dataset 'svhn'"):
        default_augmentation("svhn")
