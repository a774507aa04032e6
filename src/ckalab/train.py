r"""One training run: configuration in, metric history and final model out.

:func:`train` loads the task, builds the model, and minimizes the loss with SGD or Adam, using
learning rate ``lr`` for the ``features`` parameter group and ``readout_lr`` for the ``readout``
(the "slow feature learning" knob), while :mod:`ckalab.tracking` records loss, accuracy and the
per-layer CKA with the targets on a schedule.

Purity and repeatability: nothing global is read or changed (no ``torch.manual_seed``; Python's
and numpy's global generators are never used). Everything random draws from the named streams
of :mod:`ckalab.seeds`, derived from ``train.seed``: ``weights`` initializes the model,
``batches`` draws the epoch permutations and the augmentation, and the data layer draws its
subsets from ``subsample_*`` and ``probe_*``. On the CPU the same configuration gives
bit-for-bit the same weights and metrics (given the same torch build and thread count); on
CUDA, up to the nondeterminism of its kernels.

Divergence: the running sum of the epoch's batch losses (kept on the device, no per-step host
synchronization) and the parameters are checked at every tracking point and every epoch end; a
non-finite value ends the run with status ``"diverged"``, keeping the metrics so far.

Checkpoints (``checkpoint.dir``): every ``every_epochs`` epochs and at the end, the full state
(model, optimizer, data generator, step, epoch, metric history, wall time) is written
atomically. A run resumed from a checkpoint (``resume_from=`` or automatically from
``checkpoint.dir``) ends bit-for-bit equal to an uninterrupted run. The learning-rate schedule
is a pure function of the step, so it needs no saved state.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from ckalab.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from ckalab.config import ConfigError, RunConfig, config_diff, parse_run_config
from ckalab.data import BatchStream, Split, Task, default_augmentation
from ckalab.metrics import MetricRow, rows_from_columns, rows_to_columns, summaries_from_rows
from ckalab.models import ProbedModel
from ckalab.ntk import NTKTracker, build_ntk_tracker
from ckalab.objective import compute_loss
from ckalab.optim import build_optimizer, lr_factor, set_learning_rates
from ckalab.runs import build_run_model, load_task
from ckalab.schedule import tracking_steps
from ckalab.seeds import Stream, torch_generator
from ckalab.tracking import BatchCKAMeter, EvalSet, Evaluator, cka_targets

__all__ = [
    "MetricRow",
    "MetricsCallback",
    "RunResult",
    "available_devices",
    "resolve_device",
    "train",
]

#: Called with each batch of new metric rows as soon as they are measured.
MetricsCallback = Callable[[list[MetricRow]], None]

_CHECKPOINT_FORMAT = 2


@dataclass
class RunResult:
    """The outcome of :func:`train`.

    Attributes:
        config: the validated configuration.
        status: ``"done"`` or ``"diverged"``.
        metrics: every metric row, in the order measured (long format, see :mod:`ckalab.tracking`).
        wall_time: seconds spent (summed over resumed segments).
        state_dict: final model parameters and buffers, on the CPU.
        summaries: final values, flat: ``train_loss``, ``test_acc``, ``train_cka_avg``,
            ``test_cka_debiased_avg``, ``train_cka_layers`` (layers in that average),
            ``train_cka_last`` (last tracked layer),
            ``train_cka.<layer>``, ..., and ``train_batch_loss`` (last epoch). All NaN-valued
            for a diverged run; only ``train_batch_loss`` without tracking.
        steps: updates done; ``steps_per_epoch``; ``probe_layers``: the tracked layers.
        diverged_at: the step at which divergence was detected, else None.
    """

    config: RunConfig
    status: Literal["done", "diverged"]
    metrics: list[MetricRow]
    wall_time: float
    state_dict: dict[str, Tensor]
    summaries: dict[str, float]
    steps: int
    steps_per_epoch: int
    probe_layers: tuple[str, ...]
    diverged_at: int | None = None

    def metrics_columns(self) -> dict[str, list[Any]]:
        """The metric rows as columns (``step, epoch, split, metric, layer, value``)."""
        return rows_to_columns(self.metrics)


def available_devices() -> list[str]:
    """The devices this machine can train on: ``cpu``, ``cuda:0`` .. ``cuda:N-1``, ``mps``."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def resolve_device(name: str) -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; anything else as given.

    A device this machine does not have (``cuda`` without CUDA, ``cuda:3`` with two GPUs,
    ``mps`` off a Mac) raises :class:`~ckalab.config.ConfigError` naming ``train.device`` and
    the devices that are available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    available = available_devices()
    if device.type == "cpu" or str(device) in available:
        return device
    if (device.type == "cuda" and device.index is None and "cuda:0" in available) or (
        device.type == "mps" and "mps" in available
    ):
        return device
    have = ", ".join(repr(d) for d in ["auto", *available])
    what = {"cuda": "CUDA", "mps": "MPS"}.get(device.type, device.type)
    if device.type == "cuda" and torch.cuda.is_available():
        reason = f"this machine has {torch.cuda.device_count()} CUDA device(s)"
    else:
        reason = f"{what} is not available on this machine"
    raise ConfigError(f"train.device = {name!r}: {reason}; available: {have}")


# ----------------------------------------------------------------------------------------------
# Setup
# ----------------------------------------------------------------------------------------------


@dataclass
class _Setup:
    """Everything a run needs, built (and validated) before the first step."""

    config: RunConfig
    device: torch.device
    task: Task
    model: ProbedModel
    optimizer: torch.optim.Optimizer
    stream: BatchStream
    generator: torch.Generator
    evaluator: Evaluator
    layers: tuple[str, ...]
    steps_per_epoch: int
    total_steps: int
    num_epochs: int
    track_at: frozenset[int]
    num_classes: int
    ntk: NTKTracker | None = None


def _check_against_data(config: RunConfig, n_train: int) -> None:
    bs = config.train.batch_size
    if bs > n_train:
        raise ConfigError(
            f"train.batch_size = {bs}: larger than the training split ({n_train} examples)"
        )


def _tracked_layers(config: RunConfig, model: ProbedModel) -> tuple[str, ...]:
    """The probe layers to track, in forward order (``tracking.layers`` was checked against
    the model's layer names when the configuration was validated)."""
    wanted = config.tracking.layers
    if wanted is None:
        return model.probe_layers
    return tuple(name for name in model.probe_layers if name in wanted)


def _eval_set(split_name: str, split: Split, probe: Split, num_classes: int) -> EvalSet:
    same = probe is split or (
        probe.x.shape == split.x.shape
        and torch.equal(probe.x, split.x)
        and torch.equal(probe.labels, split.labels)
    )
    src = split if same else probe
    return EvalSet(
        split=split_name,
        x=split.x,
        y=split.y,
        labels=split.labels,
        probe_x=None if same else probe.x,
        probe_targets=cka_targets(src.y, src.labels, num_classes),
    )


def _setup(config: RunConfig, task: Task | None = None) -> _Setup:
    device = resolve_device(config.train.device)
    task = load_task(config, device) if task is None else task.to(device)
    _check_against_data(config, len(task.train))
    k = task.num_classes
    model = build_run_model(config, task).to(device)
    layers = _tracked_layers(config, model)
    generator = torch_generator(config.train.seed, Stream.BATCHES)
    augment = default_augmentation(config.data.dataset) if config.train.augment else None
    stream = BatchStream(
        task.train,
        config.train.batch_size,
        generator=generator,
        drop_last=config.train.drop_last,
        augment=augment,
        image_shape=task.image_shape,
    )
    spe = len(stream)
    total = config.train.steps or config.train.epochs * spe
    tr = config.tracking
    evaluator = Evaluator(
        [
            _eval_set("train", task.train, task.probe_train, k),
            _eval_set("test", task.test, task.probe_test, k),
        ],
        loss=config.train.loss,
        layers=layers,
        batch_size=tr.eval_batch_size,
        cka=tr.cka,
        spatial=tr.spatial,
    )
    return _Setup(
        config=config,
        device=device,
        task=task,
        model=model,
        optimizer=build_optimizer(model, config.optim),
        stream=stream,
        generator=generator,
        evaluator=evaluator,
        layers=layers,
        steps_per_epoch=spe,
        total_steps=total,
        num_epochs=math.ceil(total / spe),
        track_at=frozenset(tracking_steps(tr, spe, total)),
        num_classes=k,
        ntk=build_ntk_tracker(tr.ntk, task, spe, total),
    )


# ----------------------------------------------------------------------------------------------
# State, checkpoints
# ----------------------------------------------------------------------------------------------


@dataclass
class _State:
    step: int = 0
    epoch: int = 0
    rows: list[MetricRow] = field(default_factory=list)
    wall_time: float = 0.0  # seconds spent by the segments before this one
    status: str = "running"
    diverged_at: int | None = None


def _save(path: Path, s: _Setup, st: _State, wall_time: float) -> None:
    """Checkpoint the state; ``wall_time``: the seconds spent so far, this segment included."""
    save_checkpoint(
        path,
        {
            "format": _CHECKPOINT_FORMAT,
            "config": s.config.resume_key(),
            "step": st.step,
            "epoch": st.epoch,
            "status": st.status,
            "diverged_at": st.diverged_at,
            "wall_time": wall_time,
            "ntk": None if s.ntk is None else s.ntk.state_dict(),
            "model": s.model.state_dict(),
            "optimizer": s.optimizer.state_dict(),
            "generator": s.generator.get_state(),
            "rows": rows_to_columns(st.rows),
        },
    )


def _restore(path: Path, s: _Setup) -> _State:
    ckpt = load_checkpoint(path)
    if ckpt.get("format") != _CHECKPOINT_FORMAT:
        raise ValueError(
            f"checkpoint {path} has format {ckpt.get('format')!r}, expected {_CHECKPOINT_FORMAT}"
        )
    diff = config_diff(ckpt["config"], s.config.resume_key())
    if diff:
        raise ValueError(
            f"checkpoint {path} belongs to a different configuration (differs in "
            f"{', '.join(diff)}); use another checkpoint.dir or the same configuration"
        )
    s.model.load_state_dict(ckpt["model"])
    if s.ntk is not None and ckpt.get("ntk") is not None:
        s.ntk.load_state_dict(ckpt["ntk"])
    s.optimizer.load_state_dict(ckpt["optimizer"])
    s.generator.set_state(ckpt["generator"])
    return _State(
        step=int(ckpt["step"]),
        epoch=int(ckpt["epoch"]),
        rows=rows_from_columns(ckpt["rows"]),
        wall_time=float(ckpt["wall_time"]),
        status=str(ckpt["status"]),
        diverged_at=ckpt["diverged_at"],
    )


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------


def _all_finite(loss_sum: Tensor, model: ProbedModel) -> bool:
    """One host synchronization: is the running loss sum and every parameter finite?"""
    flags = [torch.isfinite(loss_sum)] + [torch.isfinite(p).all() for p in model.parameters()]
    return bool(torch.stack(flags).all())


class _Loop:
    """Runs the epochs of one :class:`_Setup` from a :class:`_State`."""

    def __init__(
        self,
        s: _Setup,
        st: _State,
        on_metrics: MetricsCallback | None,
        ckpt_path: Path | None,
    ) -> None:
        self.s, self.st, self.on_metrics, self.ckpt_path = s, st, on_metrics, ckpt_path
        self.started = time.perf_counter()
        self.batch_cka_layer = s.layers[-1] if s.config.tracking.batch_cka else None
        self.evaluated: set[int] = {r.step for r in st.rows if r.metric == "loss"}

    def wall_time(self) -> float:
        """Seconds spent so far: the earlier segments' and this one's."""
        return self.st.wall_time + (time.perf_counter() - self.started)

    def emit(self, rows: list[MetricRow]) -> None:
        self.st.rows.extend(rows)
        if self.on_metrics is not None and rows:
            self.on_metrics(rows)

    def epoch_of(self, step: int) -> float:
        return step / self.s.steps_per_epoch

    def track(self, loss_sum: Tensor) -> bool:
        """Evaluate at the current step if scheduled; False if the run has diverged."""
        step = self.st.step
        evaluate = step in self.s.track_at and step not in self.evaluated
        ntk = self.s.ntk is not None and self.s.ntk.due(step)
        if not (evaluate or ntk):
            return True
        if not _all_finite(loss_sum, self.s.model):
            self.diverge()
            return False
        if evaluate:
            self.evaluated.add(step)
            self.emit(self.s.evaluator(self.s.model, step, self.epoch_of(step)))
        if ntk and self.s.ntk is not None:
            self.emit(self.s.ntk(self.s.model, step, self.epoch_of(step)))
        return True

    def run(self) -> None:
        s, st = self.s, self.st
        zero = torch.zeros((), dtype=torch.float64, device=s.device)
        self.track(zero)
        while st.status == "running" and st.epoch < s.num_epochs:
            self.run_epoch()
            if st.status != "running":
                break
            st.epoch += 1
            if st.step >= s.total_steps:
                st.status = "done"
            self.maybe_checkpoint()

    def diverge(self) -> None:
        self.st.status = "diverged"
        self.st.diverged_at = self.st.step

    def run_epoch(self) -> None:
        s, st = self.s, self.st
        model, opt, cfg = s.model, s.optimizer, s.config
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=s.device)
        batches = 0
        meter = BatchCKAMeter(s.device) if self.batch_cka_layer else None
        probe = [self.batch_cka_layer] if self.batch_cka_layer else None
        for xb, yb in s.stream:
            set_learning_rates(opt, lr_factor(cfg.optim, st.step, s.steps_per_epoch, s.total_steps))
            if probe is None:
                out, feats = model(xb), None
            else:
                out, feats = model.forward_with_probes(xb, probe)
            loss = compute_loss(cfg.train.loss, out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            st.step += 1
            batches += 1
            loss_sum += loss.detach()
            if meter is not None and feats is not None:
                meter.update(feats[self.batch_cka_layer], cka_targets(yb, yb, s.num_classes))
            if not self.track(loss_sum):
                break
            if st.step >= s.total_steps:
                break
        self.emit_batch_stats(loss_sum, batches, meter)
        if st.status == "running" and not _all_finite(loss_sum, model):
            self.diverge()

    def emit_batch_stats(self, loss_sum: Tensor, batches: int, meter: BatchCKAMeter | None) -> None:
        step, epoch = self.st.step, self.epoch_of(self.st.step)
        rows = [MetricRow(step, epoch, "train", "batch_loss", "", float(loss_sum) / batches)]
        if meter is not None and self.batch_cka_layer is not None:
            value = meter.mean()
            rows.append(MetricRow(step, epoch, "train", "batch_cka", self.batch_cka_layer, value))
        self.emit(rows)

    def maybe_checkpoint(self) -> None:
        if self.ckpt_path is None:
            return
        every = self.s.config.checkpoint.every_epochs
        if self.st.status == "running" and self.st.epoch % every == 0:
            _save(self.ckpt_path, self.s, self.st, self.wall_time())


def train(
    config: RunConfig | Mapping[str, Any],
    *,
    resume_from: str | Path | None = None,
    on_metrics: MetricsCallback | None = None,
    task: Task | None = None,
) -> RunResult:
    """Train one network as ``config`` describes and track its alignment.

    ``config`` is a :class:`~ckalab.config.RunConfig` or a nested mapping (validated; a bad value
    raises :class:`~ckalab.config.ConfigError` naming the field, before the first step, as do
    values that conflict with the loaded data). ``resume_from`` continues from a checkpoint
    file; otherwise, with ``checkpoint.dir`` and ``checkpoint.resume``, an existing checkpoint
    there is resumed automatically. ``on_metrics(rows)`` is called with each group of new metric
    rows as soon as they exist (after a resume, only rows measured after the checkpoint; a
    crash between a checkpoint and the next may make them repeat, with identical values).

    A dataset file that is corrupt, truncated or cannot be downloaded raises a
    :class:`ckalab.data.DataError` (never a ``ConfigError``): repair or delete the file.

    ``task`` (a :class:`ckalab.data.Task`) replaces the task that ``config.data`` describes
    (synthetic data, tests, benchmarks); ``config.data`` is then ignored, except that
    ``config.data.dataset`` names the default augmentation.

    A diverging run (non-finite loss or parameters) returns with ``status="diverged"``.
    """
    config = parse_run_config(config)
    s = _setup(config, task)
    ckpt_dir = config.checkpoint.dir
    ckpt_path = checkpoint_path(ckpt_dir) if ckpt_dir is not None else None
    source: Path | None = Path(resume_from) if resume_from is not None else None
    if source is None and ckpt_path is not None and config.checkpoint.resume:
        source = ckpt_path if ckpt_path.is_file() else None
    st = _restore(source, s) if source is not None else _State()

    loop = _Loop(s, st, on_metrics, ckpt_path)
    if st.status == "running":
        loop.run()
    if st.status == "running":  # zero epochs left (cannot happen with total_steps >= 1)
        st.status = "done"
    st.wall_time = loop.wall_time()
    if ckpt_path is not None:
        _save(ckpt_path, s, st, st.wall_time)

    return RunResult(
        config=config,
        status="diverged" if st.status == "diverged" else "done",
        metrics=list(st.rows),
        wall_time=st.wall_time,
        state_dict={k: v.detach().cpu().clone() for k, v in s.model.state_dict().items()},
        summaries=summaries_from_rows(st.rows, s.layers, diverged=st.status == "diverged"),
        steps=st.step,
        steps_per_epoch=s.steps_per_epoch,
        probe_layers=s.layers,
        diverged_at=st.diverged_at,
    )
