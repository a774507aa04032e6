"""Shared test configuration: hypothesis profiles and one torch thread.

Hypothesis profiles (``HYPOTHESIS_PROFILE=...``):

- ``ckalab`` (default): fast and repeatable, 40 derandomized examples per property, no
  deadline (the machine may be shared).
- ``thorough``: 400 random examples per property, for a deliberate, longer search.

Tests marked ``slow`` (training runs, subprocesses, per-example streaming) still run by default
and in CI; ``pytest -m "not slow"`` skips them for a quick loop.

Torch runs one intra-op thread: the tests' tensors are tiny, where extra threads only add
synchronization, and on a shared machine their spin-waiting made the suite several times slower.
"""

from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, settings

_SUPPRESSED = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile(
    "ckalab", deadline=None, max_examples=40, derandomize=True, suppress_health_check=_SUPPRESSED
)
settings.register_profile(
    "thorough", deadline=None, max_examples=400, suppress_health_check=_SUPPRESSED
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ckalab"))
torch.set_num_threads(1)
