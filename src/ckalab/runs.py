"""One run's task and model, rebuilt from its configuration (outside the training loop).

:func:`load_task` and :func:`build_run_model` are what :func:`ckalab.train.train` uses to set a
run up; they are here, apart from the loop, so that whoever needs a trained run's network again
(the report's layer x layer CKA matrices, a notebook) rebuilds exactly the same task and
architecture, then loads the weights the store kept (:func:`load_run_model`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from ckalab.config import ConfigError, RunConfig, parse_run_config
from ckalab.data import DataError, Task, make_task
from ckalab.models import ProbedModel, build_model
from ckalab.seeds import Stream, torch_generator

__all__ = ["build_run_model", "load_run_model", "load_task", "num_outputs"]


def load_task(config: RunConfig, device: str | torch.device = "cpu") -> Task:
    """The task ``config.data`` describes, as training builds it (same subsets and probe sets:
    they are seeded by ``train.seed``). A broken or missing data file raises
    :class:`ckalab.data.DataError`; a value that does not fit the data,
    :class:`~ckalab.config.ConfigError` naming ``data``."""
    d = config.data
    flatten = d.flatten if d.flatten is not None else config.model.arch == "mlp"
    try:
        return make_task(
            d.dataset,
            d.classes,
            n_train=d.n_train,
            n_test=d.n_test,
            encoding=d.encoding,
            flatten=flatten,
            standardize=d.standardize,
            probe_size=d.probe_size,
            seed=config.train.seed,
            data_dir=d.data_dir,
            device=device,
        )
    except DataError:  # a broken or missing file: the data, not the configuration
        raise
    except ValueError as exc:
        raise ConfigError(f"data: {exc}") from exc


def num_outputs(config: RunConfig, task: Task) -> int:
    """Readout width: the number of classes for cross-entropy, the target width otherwise."""
    if config.train.loss == "cross_entropy":
        return task.num_classes
    return int(task.train.y.shape[1])


def build_run_model(config: RunConfig, task: Task) -> ProbedModel:
    """The run's network on the CPU, initialized from the ``weights`` seed stream of
    ``train.seed`` (the untrained network of the run). A bad model setting raises
    :class:`~ckalab.config.ConfigError` naming ``model``."""
    generator = torch_generator(config.train.seed, Stream.WEIGHTS)
    try:
        return build_model(
            config.model, task.input_shape, num_outputs(config, task), generator=generator
        )
    except ValueError as exc:
        raise ConfigError(f"model: {exc}") from exc


def load_run_model(
    config: RunConfig | Mapping[str, Any] | str,
    weights: str | os.PathLike[str],
    task: Task | None = None,
) -> tuple[ProbedModel, Task]:
    """A finished run's trained network (in eval mode, on the CPU) and its task.

    ``config``: the run's configuration (a :class:`~ckalab.config.RunConfig`, a mapping, or the
    canonical JSON of the runs table's ``config`` column); ``weights``: its safetensors file
    (``DIR/weights/<run_id>.safetensors``); ``task``: the run's task if already loaded.
    """
    if isinstance(config, str):
        import json

        config = json.loads(config)
    config = parse_run_config(config)
    from safetensors.torch import load_file

    task = load_task(config) if task is None else task
    model = build_run_model(config, task)
    model.load_state_dict(load_file(os.fspath(weights), device="cpu"))
    return model.eval(), task
