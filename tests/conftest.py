"""Shared test configuration: a deterministic, deadline-free hypothesis profile."""

from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ckalab",
    deadline=None,
    max_examples=40,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ckalab"))
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
