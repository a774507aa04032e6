"""The names of a model's probe layers, from its configuration alone (torch-free).

One home for the naming rule: :mod:`ckalab.models` names its blocks with it, and the run
configuration checks ``tracking.layers`` against it before anything is built or trained.

- MLP: ``hidden1 .. hidden{depth}``
- CNN: ``conv1 .. conv{depth}``, then ``pool`` (global average)
- ResNet: ``stem``, ``block1 .. block{3 depth}`` (three stages of ``depth`` basic blocks), then
  ``pool``
"""

from __future__ import annotations

__all__ = ["probe_layer_names"]


def probe_layer_names(arch: str, depth: int) -> tuple[str, ...]:
    """The probe layers of an ``arch`` network with ``depth`` (hidden layers, convolutional
    blocks, or basic blocks per stage), in forward order; the last one is the penultimate
    representation."""
    if arch == "mlp":
        return tuple(f"hidden{i}" for i in range(1, depth + 1))
    if arch == "cnn":
        return (*(f"conv{i}" for i in range(1, depth + 1)), "pool")
    if arch == "resnet":
        return ("stem", *(f"block{i}" for i in range(1, 3 * depth + 1)), "pool")
    raise ValueError(f"model.arch: unknown architecture {arch!r}; known: mlp, cnn, resnet")
