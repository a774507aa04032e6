"""Optimizers with per-group learning rates and the learning-rate schedule.

The schedule is a pure function of the update index (no scheduler object with hidden state):
before update ``t`` every group's learning rate is set to ``base_lr(group) * lr_factor(t)``, so
resuming from a checkpoint only needs ``t``.
"""

from __future__ import annotations

import math

import torch

from ckalab.config import OptimConfig
from ckalab.models import ProbedModel

__all__ = ["build_optimizer", "lr_factor", "set_learning_rates"]


def build_optimizer(model: ProbedModel, config: OptimConfig) -> torch.optim.Optimizer:
    """SGD (momentum, nesterov, weight decay) or Adam over the groups ``features`` / ``readout``.

    The ``features`` group gets ``config.lr``, the ``readout`` group ``config.readout_lr``
    (default ``lr``); the fused implementation is used where available. Each group keeps its
    base rate in ``group["base_lr"]`` and its name in ``group["name"]``. Weight decay applies to
    every parameter (L2 for SGD and Adam).
    """
    groups_params = model.parameter_groups()
    base = {"features": config.lr, "readout": config.effective_readout_lr}
    groups = [
        {"params": params, "lr": base[name], "base_lr": base[name], "name": name}
        for name, params in groups_params.items()
        if params
    ]
    fused = _fused_ok(model)
    try:
        return _make_optimizer(groups, config, fused)
    except (RuntimeError, ValueError):
        if not fused:
            raise
        # torch < 2.4 has no fused step on the CPU: the same update, unfused.
        return _make_optimizer(groups, config, None)


def _make_optimizer(
    groups: list[dict], config: OptimConfig, fused: bool | None
) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
            fused=fused,
        )
    return torch.optim.Adam(
        groups,
        lr=config.lr,
        betas=config.betas,
        eps=config.eps,
        weight_decay=config.weight_decay,
        fused=fused,
    )


def _fused_ok(model: ProbedModel) -> bool | None:
    """Use the fused (single-kernel) optimizer step where torch has one: float32 parameters on
    the CPU or CUDA; otherwise let torch choose."""
    params = list(model.parameters())
    ok = all(p.dtype == torch.float32 and p.device.type in ("cpu", "cuda") for p in params)
    return True if ok else None


def lr_factor(config: OptimConfig, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """Multiplier of the base learning rates for update ``step`` (0-based).

    ``warmup(t) = min(1, (t + 1) / warmup_steps)`` (1 without warmup), times ``1`` (``none``),
    ``gamma ** floor(t / (steps_per_epoch * step_epochs))`` (``step``), or for ``cosine``
    ``m + (1 - m) (1 + cos(pi u)) / 2`` with ``m = min_lr_factor`` and
    ``u = (t - warmup_steps) / max(1, total_steps - warmup_steps)`` clipped to ``[0, 1]``.
    """
    warm = config.warmup_steps
    factor = min(1.0, (step + 1) / warm) if warm > 0 else 1.0
    if config.schedule == "step":
        factor *= config.gamma ** (step // (steps_per_epoch * config.step_epochs))
    elif config.schedule == "cosine":
        u = min(1.0, max(0.0, (step - warm) / max(1, total_steps - warm)))
        m = config.min_lr_factor
        factor *= m + (1.0 - m) * 0.5 * (1.0 + math.cos(math.pi * u))
    return factor


def set_learning_rates(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Set every group's ``lr`` to ``base_lr * factor``."""
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
