"""The named random streams of a run, all derived from the one run seed (``train.seed``).

Every consumer of randomness draws from its own stream, named in :class:`Stream`, and gets its
generator from :func:`torch_generator` or :func:`numpy_rng` (or a plain integer seed from
:func:`derive_seed`). Nothing else derives seeds, so two consumers cannot share a stream by
accident, and adding a consumer (a new stream) changes no other stream's numbers.

A stream's seed is drawn from ``numpy.random.SeedSequence([stream, seed])``: independent across
streams and seeds, the same on every machine.

Streams:

- ``weights``: weight initialization.
- ``batches``: epoch permutations of the training set and data augmentation (one generator,
  saved in checkpoints).
- ``subsample_train``, ``subsample_test``: the stratified ``n_train`` / ``n_test`` subsets.
- ``probe_train``, ``probe_test``: the class-balanced probe subsets on which CKA is tracked.
- ``ntk_probe``: the examples on which the empirical NTK is computed.
"""

from __future__ import annotations

import enum

import numpy as np
import torch

__all__ = ["Stream", "derive_seed", "numpy_rng", "torch_generator"]


class Stream(enum.IntEnum):
    """The named random streams; the value is the stream's key in the seed derivation (never
    reuse or renumber one: that changes the numbers of existing runs)."""

    WEIGHTS = 0
    BATCHES = 1
    SUBSAMPLE_TRAIN = 2
    SUBSAMPLE_TEST = 3
    PROBE_TRAIN = 4
    PROBE_TEST = 5
    NTK_PROBE = 6


def _check(seed: int, stream: Stream) -> tuple[int, Stream]:
    if not isinstance(stream, Stream):
        raise TypeError(f"stream must be a ckalab.seeds.Stream, got {stream!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed), stream


def _sequence(seed: int, stream: Stream) -> np.random.SeedSequence:
    seed, stream = _check(seed, stream)
    return np.random.SeedSequence([int(stream), seed])


def derive_seed(seed: int, stream: Stream) -> int:
    """An independent 63-bit integer seed for ``stream`` from the run ``seed``."""
    state = _sequence(seed, stream).generate_state(1, dtype=np.uint64)[0]
    return int(state) >> 1


def torch_generator(seed: int, stream: Stream) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded for ``stream``."""
    return torch.Generator().manual_seed(derive_seed(seed, stream))


def numpy_rng(seed: int, stream: Stream) -> np.random.Generator:
    """A numpy ``Generator`` for ``stream`` (seeded with the stream's ``SeedSequence``)."""
    return np.random.default_rng(_sequence(seed, stream))
