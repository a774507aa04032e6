"""The named random streams: distinct and stable (tests/test_layout.py: the only derivation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ckalab.seeds import Stream, derive_seed, numpy_rng, torch_generator


def test_streams_have_distinct_keys_and_the_expected_names() -> None:
    assert len({int(s) for s in Stream}) == len(Stream)
    names = {s.name.lower() for s in Stream}
    expected = {"weights", "batches", "subsample_train", "subsample_test", "probe_train"}
    assert expected | {"probe_test", "ntk_probe"} <= names


def test_streams_give_distinct_seeds_and_numbers() -> None:
    seeds = {(seed, s): derive_seed(seed, s) for seed in range(50) for s in Stream}
    assert len(set(seeds.values())) == len(seeds)
    assert all(0 <= v < 2**63 for v in seeds.values())
    draws = {s: tuple(numpy_rng(0, s).integers(0, 2**62, size=4)) for s in Stream}
    assert len(set(draws.values())) == len(Stream)
    torch_draws = {
        s: tuple(torch.randint(0, 2**62, (4,), generator=torch_generator(0, s)).tolist())
        for s in Stream
    }
    assert len(set(torch_draws.values())) == len(Stream)


def test_streams_are_stable() -> None:
    assert derive_seed(3, Stream.WEIGHTS) == derive_seed(3, Stream.WEIGHTS)
    a = numpy_rng(3, Stream.PROBE_TEST).permutation(10)
    assert np.array_equal(a, numpy_rng(3, Stream.PROBE_TEST).permutation(10))
    # Pinned: renumbering a stream changes the numbers of every stored run.
    assert derive_seed(0, Stream.WEIGHTS) == (
        int(np.random.SeedSequence([0, 0]).generate_state(1, dtype=np.uint64)[0]) >> 1
    )


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="Stream"):
        derive_seed(0, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative"):
        derive_seed(-1, Stream.WEIGHTS)
