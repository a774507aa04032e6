"""Run configuration: one training run, validated before anything is loaded or trained.

A :class:`RunConfig` has the sections ``data``, ``model``, ``optim``, ``train``, ``tracking`` and
``checkpoint``. Every section forbids unknown keys and checks its values on construction, so a
bad value fails with the dotted name of the field (``optim.lr``) before the first step. Checks
that need the data (batch size larger than the training split) are made by the trainer right
after loading, still before the first step, and raise :class:`ConfigError` with the field name.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ckalab.data.registry import check_classes, check_size, get_info
from ckalab.layer_names import probe_layer_names

__all__ = [
    "DEFAULT_WIDTH",
    "CheckpointConfig",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "NTKTrackingConfig",
    "OptimConfig",
    "RunConfig",
    "TrackingConfig",
    "TrainConfig",
    "canonical_json",
    "config_diff",
    "format_validation_error",
    "identity",
    "parse_run_config",
    "run_id",
]

Activation = Literal["relu", "tanh", "gelu", "silu", "sigmoid", "erf", "linear"]
Encoding = Literal["one_hot", "signed", "index"]


class ConfigError(ValueError):
    """An invalid configuration value; the message is one line naming the field and the value."""


class _Section(BaseModel):
    """Base of every section: unknown keys refused, immutable, defaults validated, and every
    float field (of every section, also inside tuples) finite: ``inf`` and ``nan`` are refused."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False
    )


class DataConfig(_Section):
    """The task: dataset, class subset, sizes, target encoding, preprocessing, probe sets.

    ``flatten=None`` flattens the inputs for an MLP and keeps images for the CNN and ResNet.
    ``probe_size`` caps the (class-balanced) probe subsets of train and test on which CKA is
    tracked; the default 10,000 is the whole split for an MNIST digit pair.
    """

    dataset: str = Field(
        default="digits",
        description=(
            "dataset name (`ckalab datasets` lists them): mnist, fashion-mnist, cifar10, "
            "mnist-5k, digits"
        ),
    )
    classes: tuple[int, ...] | None = Field(
        default=None,
        description=(
            "class subset in order, e.g. [4, 9]: class i gets target i (one-hot) or "
            "-1/+1 (signed); unset: all classes"
        ),
    )
    n_train: int | None = Field(
        default=None,
        ge=1,
        description=(
            "training examples, a stratified subsample (unset: the whole split of those classes)"
        ),
    )
    n_test: int | None = Field(
        default=None,
        ge=1,
        description="test examples, a stratified subsample (unset: the whole split)",
    )
    encoding: Encoding = Field(
        default="one_hot",
        description=(
            "targets: one-hot rows, signed (+-1, two classes) or class index (cross-entropy)"
        ),
    )
    flatten: bool | None = Field(
        default=None,
        description=(
            "flatten images to vectors (unset: flat for the MLP, images for the CNN and ResNet)"
        ),
    )
    standardize: bool = Field(
        default=False,
        description="standardize each input feature with the training split's mean and std",
    )
    probe_size: int = Field(
        default=10_000,
        ge=4,
        description="examples per split (class-balanced) on which CKA is measured",
    )
    data_dir: str | None = Field(
        default=None,
        description="data folder (unset: $CKALAB_DATA or the user cache); not part of the run id",
    )

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        get_info(v)  # ValueError listing the known datasets
        return v

    @field_validator("classes")
    @classmethod
    def _classes_exist(cls, v: tuple[int, ...] | None, info: ValidationInfo) -> Any:
        dataset = info.data.get("dataset")
        if v is None or dataset is None:
            return v
        return check_classes(dataset, v)  # the rule make_task applies

    @field_validator("n_train", "n_test", "probe_size")
    @classmethod
    def _sizes_fit(cls, v: int | None, info: ValidationInfo) -> Any:
        dataset = info.data.get("dataset")
        if v is None or dataset is None or "classes" not in info.data:
            return v  # a bad dataset or class subset is reported on its own field
        classes = info.data["classes"]
        k = get_info(dataset).num_classes if classes is None else len(classes)
        check_size(dataset, info.field_name, v, k)  # the rule make_task applies
        return v


Arch = Literal["mlp", "cnn", "resnet"]

#: The width of each architecture when ``model.width`` is not given: 1,024 hidden units for the
#: MLP (the slow-feature-learning setting), 64 channels for the CNN, 16 channels in the first
#: ResNet stage (CIFAR ResNet-20 style: stages of 16 / 32 / 64 channels).
DEFAULT_WIDTH: dict[str, int] = {"mlp": 1024, "cnn": 64, "resnet": 16}


class ModelConfig(_Section):
    """The network (see :mod:`ckalab.models`).

    ``depth``: hidden layers (MLP), convolutional blocks (CNN) or basic blocks per stage (ResNet,
    ResNet-(6 depth + 2)). ``width``: hidden units (MLP) or channels (CNN; the first ResNet stage;
    the next stages have 2 and 4 times as many); unset, it is the architecture's default
    (:data:`DEFAULT_WIDTH`: mlp 1024, cnn 64, resnet 16), filled in on validation so that the
    validated configuration (and its :func:`run_id`) holds the width actually built.
    ``skip`` and ``batch_norm`` apply to convolutional models; ``bias`` to the MLP.
    """

    arch: Arch = Field(
        default="mlp", description="architecture: MLP, small CNN or CIFAR-style ResNet"
    )
    depth: int = Field(
        default=1,
        ge=1,
        description=(
            "hidden layers (mlp), convolutional blocks (cnn) or basic blocks per stage (resnet)"
        ),
    )
    width: int = Field(
        default=None,  # type: ignore[assignment]  # always filled by _default_width
        ge=1,
        description=(
            "hidden units (mlp) or channels (cnn; first resnet stage); default by arch: "
            + ", ".join(f"{a} {w}" for a, w in DEFAULT_WIDTH.items())
        ),
    )
    activation: Activation = Field(
        default="relu", description="the nonlinearity of every hidden layer"
    )
    bias: bool = Field(default=True, description="biases in the MLP's layers")
    batch_norm: bool = Field(default=True, description="BatchNorm in convolutional models")
    skip: bool = Field(
        default=True, description="ResNet shortcut connections (false: a plain deep CNN)"
    )

    @model_validator(mode="before")
    @classmethod
    def _default_width(cls, data: Any) -> Any:
        """An unset (or null) ``width`` becomes the architecture's :data:`DEFAULT_WIDTH`."""
        if isinstance(data, Mapping) and data.get("width") is None:
            arch = data.get("arch", "mlp")
            # An unknown arch fails on its own field; the width then only needs to be valid.
            width = DEFAULT_WIDTH.get(arch, DEFAULT_WIDTH["mlp"]) if isinstance(arch, str) else 1
            data = {**data, "width": width}
        return data


class OptimConfig(_Section):
    """Optimizer and learning-rate schedule.

    ``lr`` applies to the ``features`` parameter group, ``readout_lr`` (default: ``lr``) to the
    ``readout`` group. The learning rate at step ``t`` (0-based update index) is
    ``base_lr * warmup(t) * schedule(t)`` with ``warmup(t) = min(1, (t + 1) / warmup_steps)``,
    ``step``: ``gamma ** floor(epoch(t) / step_epochs)`` and ``cosine``:
    ``min_lr_factor + (1 - min_lr_factor) (1 + cos(pi u)) / 2`` with ``u`` the fraction of the
    post-warmup steps done.
    """

    optimizer: Literal["sgd", "adam"] = Field(
        default="sgd", description="SGD (with momentum, nesterov, weight decay) or Adam"
    )
    lr: float = Field(
        default=0.01, gt=0, description="learning rate of the hidden layers (the features group)"
    )
    readout_lr: float | None = Field(
        default=None, gt=0, description="learning rate of the readout layer (unset: lr)"
    )
    momentum: float = Field(default=0.0, ge=0, lt=1, description="SGD momentum")
    nesterov: bool = Field(default=False, description="Nesterov momentum (SGD with momentum > 0)")
    weight_decay: float = Field(default=0.0, ge=0, description="L2 weight decay")
    betas: tuple[float, float] = Field(
        default=(0.9, 0.999), description="Adam's moment decay rates"
    )
    eps: float = Field(default=1e-8, gt=0, description="Adam's epsilon")
    schedule: Literal["none", "step", "cosine"] = Field(
        default="none", description="learning-rate schedule after warmup"
    )
    warmup_steps: int = Field(default=0, ge=0, description="linear warmup over this many steps")
    step_epochs: int = Field(
        default=30, ge=1, description="'step' schedule: multiply by gamma every this many epochs"
    )
    gamma: float = Field(default=0.1, gt=0, le=1, description="'step' schedule: the factor")
    min_lr_factor: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="'cosine' schedule: the final fraction of the learning rate",
    )

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in v):
            raise ValueError("both betas must be in [0, 1)")
        return v

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> OptimConfig:
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise ValueError("nesterov needs optimizer 'sgd' with momentum > 0")
        return self

    @property
    def effective_readout_lr(self) -> float:
        """``readout_lr`` if set, else ``lr``."""
        return self.lr if self.readout_lr is None else self.readout_lr


class TrainConfig(_Section):
    """Loss, batches, duration, augmentation, seed and device.

    ``loss="mse"``: mean over batch and outputs of ``(f(x) - y)^2`` with ``y`` the target
    encoding (one-hot or +-1); ``"cross_entropy"``: softmax cross-entropy with the class labels.
    The run lasts ``steps`` updates when given, else ``epochs`` epochs. ``device="auto"`` picks
    CUDA when available.
    """

    loss: Literal["mse", "cross_entropy"] = Field(
        default="mse", description="MSE on the target encoding, or softmax cross-entropy"
    )
    batch_size: int = Field(default=128, ge=1, description="examples per step")
    epochs: int = Field(
        default=10, ge=1, description="passes over the training split (unless steps is set)"
    )
    steps: int | None = Field(default=None, ge=1, description="updates in total (overrides epochs)")
    drop_last: bool = Field(
        default=False, description="drop the last incomplete batch of each epoch"
    )
    augment: bool = Field(
        default=False,
        description="the dataset's standard augmentation (translations; crop + flip for CIFAR-10)",
    )
    seed: int = Field(
        default=0,
        ge=0,
        description="seed of every random stream of the run (weights, batches, subsets, probes)",
    )
    device: str = Field(
        default="auto",
        description=(
            "'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:N' or 'mps'; not part of the run id"
        ),
    )

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        base = v.split(":", 1)[0]
        if base not in ("auto", "cpu", "cuda", "mps") or (base == "auto" and v != "auto"):
            raise ValueError("device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        return v


class NTKTrackingConfig(_Section):
    """Empirical-NTK tracking (:mod:`ckalab.ntk`): alignment with the targets (whole network and
    per parameter group) and kernel distance to step 0 and to the previous measurement, on the
    first ``probe_size`` examples (class-balanced) of the training probe set.

    ``schedule``, ``every``, ``ratio``: as in :class:`TrackingConfig` (default geometric: the NTK
    is costly). ``memory_budget``: bytes of working memory for one NTK computation.
    """

    schedule: Literal["epochs", "steps", "geometric", "final"] = Field(
        default="geometric", description="when to measure the NTK (costly: geometric by default)"
    )
    every: int = Field(default=1, ge=1, description="'epochs' / 'steps' schedules: the stride")
    ratio: float = Field(
        default=2.0, gt=1, description="'geometric' schedule: the ratio between measurement steps"
    )
    probe_size: int = Field(
        default=256,
        ge=4,
        le=2048,
        description="examples (class-balanced, from the training probe set)",
    )
    memory_budget: int = Field(
        default=1 << 30, ge=1 << 20, description="bytes the Jacobian blocks may take at once"
    )


class TrackingConfig(_Section):
    """When and what to measure.

    ``schedule``: ``"epochs"`` (every ``every`` epochs), ``"steps"`` (every ``every`` steps),
    ``"geometric"`` (steps 0, 1, 2, 4, 8, ...: ``round(ratio ** k)``), ``"final"`` (initialization
    and the end only) or ``"none"`` (no evaluation at all). Every schedule except ``"none"``
    includes step 0 and the final step. ``batch_cka``: the classic per-batch CKA of the last
    hidden layer with the batch targets at every step, averaged per epoch. ``layers``: the probe
    layers to track (default: all). ``spatial``: convolutional feature maps are probed flattened
    (``C*H*W`` features) or averaged over space (``C`` features). Probe features of all tracked
    layers are held in memory at once: ``4 * probe_size * sum(features)`` bytes; lower
    ``data.probe_size`` or use ``spatial = "mean"`` for wide convolutional networks. ``ntk``:
    empirical-NTK tracking on its own schedule (:class:`NTKTrackingConfig`; none by default).
    """

    schedule: Literal["epochs", "steps", "geometric", "final", "none"] = Field(
        default="epochs",
        description=(
            "when to evaluate: every k epochs or steps, geometric steps, initialization "
            "and end only, or never"
        ),
    )
    every: int = Field(default=1, ge=1, description="'epochs' / 'steps' schedules: the stride")
    ratio: float = Field(
        default=2.0, gt=1, description="'geometric' schedule: the ratio between evaluation steps"
    )
    cka: bool = Field(
        default=True, description="measure per-layer CKA (off: loss and accuracy only)"
    )
    batch_cka: bool = Field(
        default=False,
        description=(
            "also the per-batch CKA of the last hidden layer at every step, averaged per epoch"
        ),
    )
    layers: tuple[str, ...] | None = Field(
        default=None, description="probe layers to track (unset: all)"
    )
    spatial: Literal["flatten", "mean"] = Field(
        default="flatten",
        description="convolutional maps flattened (C*H*W features) or averaged over space (C)",
    )
    eval_batch_size: int = Field(
        default=2048,
        ge=1,
        description="rows per evaluation forward pass (memory only; not part of the run id)",
    )
    ntk: NTKTrackingConfig | None = Field(
        default=None, description="empirical-NTK tracking (unset: off)"
    )


class CheckpointConfig(_Section):
    """Optional checkpoints: ``dir`` (none: no checkpoints), every ``every_epochs`` epochs and at
    the end; ``resume``: continue automatically from ``dir``'s checkpoint when one exists."""

    dir: str | None = Field(default=None, description="checkpoint folder (unset: no checkpoints)")
    every_epochs: int = Field(
        default=1, ge=1, description="write a checkpoint every this many epochs (and at the end)"
    )
    resume: bool = Field(
        default=True, description="resume from the folder's checkpoint when one exists"
    )


class RunConfig(_Section):
    """The full configuration of one training run."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)

    @model_validator(mode="after")
    def _loss_matches_encoding(self) -> RunConfig:
        loss, enc = self.train.loss, self.data.encoding
        if loss == "mse" and enc == "index":
            raise ValueError(
                "train.loss 'mse' needs data.encoding 'one_hot' or 'signed', not 'index'"
            )
        if loss == "cross_entropy" and enc == "signed":
            raise ValueError(
                "train.loss 'cross_entropy' needs data.encoding 'one_hot' or 'index', not 'signed'"
            )
        if self.model.arch != "mlp" and self.data.flatten:
            raise ValueError(
                f"data.flatten = true: model.arch '{self.model.arch}' needs image-shaped inputs; "
                "leave data.flatten unset"
            )
        wanted = self.tracking.layers
        if wanted is not None:
            known = probe_layer_names(self.model.arch, self.model.depth)
            unknown = [name for name in wanted if name not in known]
            if unknown or not wanted:
                what = f"unknown layer {', '.join(map(repr, unknown))}" if unknown else "empty"
                raise ValueError(
                    f"tracking.layers = {list(wanted)!r}: {what}; this model "
                    f"({self.model.arch}, depth {self.model.depth}) has {list(known)}"
                )
        return self

    def resume_key(self) -> dict[str, Any]:
        """What must match to resume a checkpoint: :func:`identity` (so a run checkpointed
        with ``device="auto"`` resumes with ``device="cuda"``)."""
        return identity(self)


#: Fields that do not change the meaning of a run's results, left out of its identity: where it
#: runs, where the data is cached, how evaluation is batched, and checkpointing.
IDENTITY_EXCLUDE: dict[str, Any] = {
    "train": {"device"},
    "data": {"data_dir"},
    "tracking": {"eval_batch_size"},
    "checkpoint": True,
}


def identity(config: RunConfig) -> dict[str, Any]:
    """The configuration that defines a run's science: every field with defaults filled in, as
    JSON types (tuples become lists), without :data:`IDENTITY_EXCLUDE`."""
    return config.model_dump(mode="json", exclude=IDENTITY_EXCLUDE)


def _without_unset(value: Any) -> Any:
    """``value`` with every ``None`` entry of every mapping removed (recursively)."""
    if isinstance(value, dict):
        return {k: _without_unset(v) for k, v in value.items() if v is not None}
    return value


def canonical_json(config: RunConfig) -> str:
    """The canonical JSON text of :func:`identity`, the input of :func:`run_id`.

    Keys sorted at every level, no whitespace (``separators=(",", ":")``), ASCII only, floats
    in Python's shortest round-trip form (``0.1``, ``1e-05``, ``1.0``: an integer given for a
    float field is stored as a float, so ``lr = 1`` and ``lr = 1.0`` are the same run),
    non-finite numbers refused, and unset fields (``None``) left out, so that adding an optional
    field or section whose default is unset (such as ``tracking.ntk``) keeps every existing id.
    Example for the defaults: ``{"data":{"dataset":"digits","encoding":"one_hot",...},...}``.
    """
    return json.dumps(
        _without_unset(identity(config)),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )


#: Hex digits of a run id (48 bits: a collision among 10,000 runs has probability ~2e-7).
RUN_ID_LENGTH = 12


def run_id(config: RunConfig | Mapping[str, Any]) -> str:
    """A short, stable id of a run: the first :data:`RUN_ID_LENGTH` hex digits of the SHA-256
    of :func:`canonical_json`. The same science gives the same id on any machine and device."""
    return hashlib.sha256(canonical_json(parse_run_config(config)).encode()).hexdigest()[
        :RUN_ID_LENGTH
    ]


def format_validation_error(err: ValidationError) -> str:
    """One line for all problems, joined by ``"; "``.

    Example: ``optim.lr = -1.0: Input should be greater than 0``. The location is the dotted
    field path; the offending input is shown when it is a value (not a whole section).
    """
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e.get("loc", ()))
        msg = str(e.get("msg", "invalid value")).removeprefix("Value error, ")
        value = e.get("input")
        if e.get("type") == "extra_forbidden":
            parts.append(f"{loc}: unknown field")
        elif loc and not isinstance(value, (Mapping, BaseModel)):
            parts.append(f"{loc} = {value!r}: {msg}")
        elif loc:
            parts.append(f"{loc}: {msg}")
        else:
            parts.append(msg)
    return "invalid run configuration: " + "; ".join(parts)


def parse_run_config(data: Mapping[str, Any] | RunConfig) -> RunConfig:
    """Validate ``data`` (nested mapping, e.g. parsed TOML) into a :class:`RunConfig`.

    Raises :class:`ConfigError` with a one-line message naming every bad field and its value.
    """
    if isinstance(data, RunConfig):
        return data
    try:
        return RunConfig.model_validate(dict(data))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def config_diff(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the fields whose values differ between two nested mappings."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += config_diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}")
    return out
