"""When a run is evaluated: the tracking schedule as a list of steps.

Torch-free, so that a study's driver can estimate its work (``ckalab run --dry-run``, the
progress display) without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ckalab.config import TrackingConfig

__all__ = ["tracking_steps"]


def tracking_steps(config: TrackingConfig, steps_per_epoch: int, total_steps: int) -> list[int]:
    """The sorted steps (numbers of updates done) at which the model is evaluated.

    ``epochs``: ``0, k spe, 2 k spe, ...``; ``steps``: ``0, k, 2k, ...``; ``geometric``:
    ``0`` and ``round(ratio ** i)`` for ``i = 0, 1, ...``; ``final``: ``0``. All but ``none``
    (no evaluation) also include ``total_steps``. Nothing beyond ``total_steps``.
    """
    if config.schedule == "none":
        return []
    points = {0, total_steps}
    if config.schedule == "epochs":
        stride = config.every * steps_per_epoch
        points.update(range(0, total_steps + 1, stride))
    elif config.schedule == "steps":
        points.update(range(0, total_steps + 1, config.every))
    elif config.schedule == "geometric":
        i = 0
        while (s := round(config.ratio**i)) <= total_steps:
            points.add(s)
            i += 1
    return sorted(points)
