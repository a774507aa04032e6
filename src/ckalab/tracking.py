r"""What a run measures and when: metric rows, the tracking schedule, and the evaluator.

Metric rows are long format (:mod:`ckalab.metrics`: ``(step, epoch, split, metric, layer,
value)``). Metrics:

- ``loss``, ``acc`` (layer ``""``): on the whole split, in eval mode.
- ``cka``, ``cka_debiased`` (per probe layer): linear CKA of the layer's representation with the
  targets ``Y`` (one-hot, or +-1) on the split's probe set; biased
  ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` and debiased (unbiased HSIC, Song et al.
  2012), both from the same sufficient statistics, accumulated exactly over the row chunks of
  the evaluation forward pass (:class:`ckalab.alignment.LinearCKAAccumulator`: no
  concatenation of the features; a layer at least as wide as the probe set is collected and
  computed with :func:`ckalab.alignment.linear_gram_stats`, whose n x n route is then cheaper).
- ``cka_avg``, ``cka_debiased_avg`` (layer ``""``): the mean of the above over the tracked
  layers whose value is defined (a layer whose value is NaN is skipped); NaN only if no layer
  has a value. ``cka_layers``, ``cka_debiased_layers`` (layer ``""``): how many layers that
  mean averaged, so a skipped layer is never silent.
- ``batch_loss`` (split ``"train"``, layer ``""``): mean training-batch loss over an epoch.
- ``batch_cka`` (split ``"train"``, layer = last tracked layer): the classic per-batch CKA of
  the last hidden layer with the batch targets, computed from the training forward pass of
  each step, averaged over the epoch's batches (batches where it is undefined are skipped).

Undefined values (one rule, :class:`_ProbeCKA`): a layer whose features contain NaN or Inf, or
have zero variance (a dead layer), gets NaN for both estimators, with no exception and no
warning; the debiased estimator is NaN when the probe set has fewer than 4 examples, both when
it has fewer than 2. Any other error propagates.

Evaluation never changes training: no random numbers are drawn, the model is switched to eval
mode (BatchNorm uses running statistics and updates nothing) and back, and no gradient is kept.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor

from ckalab.alignment import (
    DegenerateRepresentationWarning,
    LinearCKAAccumulator,
    LinearGramStats,
    linear_gram_stats,
    one_hot,
)
from ckalab.metrics import MetricRow
from ckalab.models import ProbedModel
from ckalab.objective import compute_loss
from ckalab.schedule import tracking_steps

__all__ = [
    "BatchCKAMeter",
    "EvalSet",
    "Evaluator",
    "MetricRow",
    "batch_cka",
    "layer_cka",
    "tracking_steps",
]

_T = TypeVar("_T")


def cka_targets(y: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Float CKA targets: ``y`` itself when it is a float encoding (one-hot ``(n, k)`` or +-1
    ``(n, 1)``), else the one-hot encoding of ``labels``."""
    if y.is_floating_point():
        return y if y.ndim == 2 else y.unsqueeze(1)
    return one_hot(labels.long(), num_classes)


def layer_cka(features: Sequence[Tensor], targets: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Biased and debiased linear CKA of each ``(n, p_i)`` feature matrix with ``targets``.

    The evaluator's computation (:class:`_ProbeCKA`) on the whole feature matrices at once, with
    its rule for undefined values (module docstring): a layer with non-finite values or zero
    variance gets NaN (no exception, no warning); debiased CKA is NaN when ``n < 4``. Returns
    two lists of 0-dim float64 tensors.
    """
    names = [str(i) for i in range(len(features))]
    probe = _ProbeCKA(names, targets)
    probe.update(dict(zip(names, features, strict=True)))
    return probe.compute()


def batch_cka(features: Tensor, targets: Tensor) -> Tensor:
    """Biased linear CKA of one batch's features ``(b, p)`` with its targets ``(b, q)``.

    ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)``, the self-term from the ``b x b`` Gram
    ``Xc Xc^T`` when ``p > b`` (same value, fewer operations). Products in the input precision,
    sums in float64, no host synchronization: a 0-dim float64 tensor, NaN when undefined
    (a constant representation or target). The reference is :func:`ckalab.alignment.cka`; this
    lean version runs at every training step.
    """
    x = features - features.mean(0, keepdim=True)
    y = targets - targets.mean(0, keepdim=True)
    gram_x = x @ x.T if x.shape[1] > x.shape[0] else x.T @ x
    gram_y = y @ y.T if y.shape[1] > y.shape[0] else y.T @ y
    cross = (y.T @ x).double().square().sum()
    self_x = gram_x.double().square().sum()
    self_y = gram_y.double().square().sum()
    return cross / (self_x * self_y).sqrt()


class BatchCKAMeter:
    """Running mean of :func:`batch_cka` over the batches of an epoch, kept on the device.

    Batches with fewer than 2 examples or an undefined (non-finite) CKA are skipped.
    """

    def __init__(self, device: torch.device) -> None:
        self.total = torch.zeros((), dtype=torch.float64, device=device)
        self.count = torch.zeros((), dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, features: Tensor, targets: Tensor) -> None:
        if features.shape[0] < 2:
            return
        value = batch_cka(features.detach(), targets)
        ok = torch.isfinite(value)
        self.total += torch.where(ok, value, 0.0)
        self.count += ok

    def mean(self) -> float:
        """The mean over counted batches (NaN if none); one host synchronization."""
        total, count = torch.stack([self.total, self.count]).tolist()
        return total / count if count else math.nan


@dataclass(frozen=True)
class EvalSet:
    """One split to evaluate.

    ``x``, ``y``, ``labels``: the whole split (``y`` as used by the loss). ``probe_x`` and
    ``probe_targets``: the probe set for CKA; ``probe_x=None`` means the probe set is the split
    itself (``probe_targets`` then has one row per example of ``x``), so one forward pass gives
    loss, accuracy and probe features.
    """

    split: str
    x: Tensor
    y: Tensor
    labels: Tensor
    probe_x: Tensor | None
    probe_targets: Tensor


class Evaluator:
    """Evaluate a model on several :class:`EvalSet` s and return metric rows.

    ``loss`` is the training loss kind; ``layers`` the probe layers whose CKA is tracked (empty
    or ``cka=False``: loss and accuracy only); ``batch_size`` bounds the memory of the batched
    eval-mode forward passes; ``spatial`` is passed to
    :meth:`~ckalab.models.ProbedModel.forward_with_probes`.
    """

    def __init__(
        self,
        sets: Sequence[EvalSet],
        *,
        loss: str,
        layers: Sequence[str],
        batch_size: int,
        cka: bool = True,
        spatial: str = "flatten",
    ) -> None:
        self.sets = list(sets)
        self.spatial = spatial
        self.loss = loss
        self.layers = tuple(layers) if cka else ()
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, model: ProbedModel, step: int, epoch: float) -> list[MetricRow]:
        was_training = model.training
        model.eval()
        try:
            keys: list[tuple[str, str, str]] = []
            values: list[Tensor] = []
            for s in self.sets:
                self._evaluate_set(model, s, keys, values)
        finally:
            model.train(was_training)
        numbers = torch.stack([v.to(torch.float64) for v in values]).tolist()  # one sync
        return [
            MetricRow(step, epoch, split, metric, layer, value)
            for (split, metric, layer), value in zip(keys, numbers, strict=True)
        ]

    def _forward(
        self, model: ProbedModel, x: Tensor, layers: Sequence[str], probe: _ProbeCKA | None
    ) -> list[Tensor]:
        """Batched forward pass; each chunk's probe features go to ``probe`` and are dropped."""
        outputs: list[Tensor] = []
        for start in range(0, len(x), self.batch_size):
            chunk = x[start : start + self.batch_size]
            out, probes = model.forward_with_probes(chunk, layers, spatial=self.spatial)
            outputs.append(out)
            if probe is not None:
                probe.update(probes)
        return outputs

    def _evaluate_set(
        self,
        model: ProbedModel,
        s: EvalSet,
        keys: list[tuple[str, str, str]],
        values: list[Tensor],
    ) -> None:
        same = s.probe_x is None
        probe = _ProbeCKA(self.layers, s.probe_targets) if self.layers else None
        if same:
            out = torch.cat(self._forward(model, s.x, self.layers, probe))
        else:
            out = torch.cat(self._forward(model, s.x, (), None))
        loss_sum = compute_loss(self.loss, out, s.y, reduction="sum").to(torch.float64)
        denom = s.y.numel() if self.loss == "mse" else len(s.y)
        keys += [(s.split, "loss", ""), (s.split, "acc", "")]
        values += [loss_sum / denom, _accuracy(out, s.y, s.labels)]
        if probe is None:
            return
        if not same:
            self._forward(model, s.probe_x, self.layers, probe)
        biased, debiased = probe.compute()
        for metric, vals in (("cka", biased), ("cka_debiased", debiased)):
            keys += [(s.split, metric, name) for name in self.layers]
            values += vals
            average, count = _defined_mean(vals)
            keys += [(s.split, f"{metric}_avg", ""), (s.split, f"{metric}_layers", "")]
            values += [average, count]


def _defined_mean(values: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """The mean of the finite ``values`` and how many there are (0-dim float64 tensors, no host
    synchronization); the mean is NaN when none is finite."""
    v = torch.stack(list(values)).to(torch.float64)
    defined = torch.isfinite(v)
    count = defined.sum().to(torch.float64)
    return torch.where(defined, v, 0.0).sum() / count, count


class _ProbeCKA:
    """Linear CKA of each probe layer with the targets, fed one evaluation chunk at a time.

    A layer narrower than the probe set (``p < n``) is accumulated exactly by a
    :class:`~ckalab.alignment.LinearCKAAccumulator` (memory ``O(p^2)``, no concatenation); a
    wider one is collected and computed by :func:`~ckalab.alignment.linear_gram_stats` (the
    n x n route is cheaper then). Chunks arrive in row order; row ``k`` of the stream is row
    ``k`` of ``targets``.

    The rule for undefined values lives here, once (:meth:`_guarded`): the alignment library
    refuses non-finite features with a ValueError; such a layer is marked dead and gets NaN,
    while any other error propagates. Zero variance gives NaN, its warning silenced.
    """

    def __init__(self, layers: Sequence[str], targets: Tensor) -> None:
        self.layers = tuple(layers)
        self.targets = targets
        self.n = targets.shape[0]
        self.rows = 0
        self.stream: dict[str, LinearCKAAccumulator] = {}
        self.collect: dict[str, list[Tensor]] = {}
        self.dead: set[str] = set()  # non-finite features: NaN

    def _guarded(self, name: str, features: Tensor | None, compute: Callable[[], _T]) -> _T | None:
        """``compute()``, or None with ``name`` marked dead if it failed on non-finite
        ``features`` (None: the features were checked before, any failure propagates);
        degenerate-representation warnings are silenced (the value is NaN)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DegenerateRepresentationWarning)
            try:
                return compute()
            except ValueError:
                if features is None or bool(torch.isfinite(features).all()):
                    raise
        self.dead.add(name)
        self.stream.pop(name, None)
        self.collect.pop(name, None)
        return None

    def update(self, probes: dict[str, Tensor]) -> None:
        if not self.layers:
            return
        rows = probes[self.layers[0]].shape[0]
        y = self.targets[self.rows : self.rows + rows]
        for name in self.layers:
            f = probes[name]
            if name in self.dead:
                continue
            if name not in self.stream and name not in self.collect:
                if f.shape[1] < self.n:
                    self.stream[name] = LinearCKAAccumulator()
                else:
                    self.collect[name] = []
            if name in self.collect:
                self.collect[name].append(f)
            else:
                acc = self.stream[name]
                self._guarded(name, f, lambda acc=acc, f=f: acc.update(f, y))
        self.rows += rows

    def compute(self) -> tuple[list[Tensor], list[Tensor]]:
        """Biased and debiased CKA per layer: 0-dim float64 tensors, NaN where undefined."""
        n = self.n
        nan = torch.tensor(math.nan, dtype=torch.float64, device=self.targets.device)
        biased, debiased = [nan] * len(self.layers), [nan] * len(self.layers)
        if n < 2:
            return biased, debiased
        for k, name in enumerate(self.layers):
            if name in self.stream:
                acc = self.stream[name]
                features = None
                stats_of: Callable[[], LinearGramStats] = acc.stats
            elif name in self.collect:
                features = torch.cat(self.collect[name])
                stats_of = functools.partial(linear_gram_stats, [features], [self.targets])
            else:
                continue  # dead
            values = self._guarded(
                name, features, lambda stats_of=stats_of: _both_estimators(stats_of(), n)
            )
            if values is not None:
                biased[k], debiased[k] = values
        return biased, debiased


def _both_estimators(stats: LinearGramStats, n: int) -> tuple[Tensor, Tensor]:
    """Biased and debiased CKA of the first pair of ``stats``; debiased NaN when ``n < 4``."""
    biased = stats.cka(debiased=False)[0, 0]
    if n < 4:
        return biased, torch.full_like(biased, math.nan)
    return biased, stats.cka(debiased=True)[0, 0]


def _accuracy(out: Tensor, y: Tensor, labels: Tensor) -> Tensor:
    """Fraction correct: ``sign(f) == sign(y)`` for one output (+-1 targets), else
    ``argmax f == label``. A 0-dim float64 tensor."""
    if out.shape[1] == 1:
        correct = (out[:, 0] > 0) == (y.reshape(-1) > 0)
    else:
        correct = out.argmax(1) == labels
    return correct.to(torch.float64).mean()
