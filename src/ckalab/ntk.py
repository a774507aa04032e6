r"""The empirical neural tangent kernel (NTK), per parameter group, and its alignment.

For a network ``f(x; theta)`` with ``O`` outputs and parameters ``theta`` split into groups
``g`` (per layer), the empirical NTK on examples ``x_1 .. x_n`` is

    K_g[(i, o), (j, o')] = sum_{p in g} df_o(x_i)/dtheta_p  df_o'(x_j)/dtheta_p,
    K = sum_g K_g.

:func:`empirical_ntk` returns the *trace* kernel (``kind="trace"``, ``n x n``,
``K[i, j] = sum_o K[(i, o), (j, o)]``) or the *full* kernel (``kind="full"``,
``(n O) x (n O)``, row ``i * O + o``: example-major), for the whole network and for every group,
computed with :mod:`torch.func` (``functional_call``, ``jacrev``, ``vmap``, ``jvp``) in eval
mode (BatchNorm uses its running statistics). Computing it draws no random numbers and changes
no parameter or buffer. Groups: a mapping group name -> parameter names (as in
``named_parameters``); the default is the model's own per-block grouping
(:meth:`ckalab.models.ProbedModel.block_parameter_groups`: ``stem``, ``block1``, ...,
``readout``) or, for any other module, one group per top-level child that has parameters. The
whole kernel is taken with respect to the parameters of the groups (by default all of them);
the others are held fixed.

Two methods, chosen by a cost model (``method="auto"``, :func:`plan_ntk`):

- ``"jacobian"`` (Jacobian contraction): per-example Jacobians ``J`` (``n x O x P``) by
  ``vmap(jacrev(f))``, then ``K_g = J_g J_g^T``, one matrix product per parameter tensor. The
  per-group kernels come free from the same Jacobians. Cost: the Jacobians (``n O`` backward
  passes, ``n O P`` numbers written) plus ``2 O^k P`` flops per pair of examples (``k = 1``
  trace, ``k = 2`` full).
- ``"vp"`` (NTK-vector products, Novak et al. 2022): the Jacobian rows of a block of examples
  are used as tangents of forward-mode products ``J_g t`` (``jvp``) over the other examples, one
  pass per group; no second Jacobian is ever held. Cost: the Jacobians once, plus ``O T_g``
  flops per pair of examples and group, ``T_g`` the forward-mode flops of one example and one
  tangent on group ``g`` (at least the flops of the layers from ``g`` onward). It needs the full
  block even for the trace kernel, so it wins for networks whose forward pass is cheap relative
  to ``O P`` (MLPs, whose ``T_g`` is about ``2 P``, the more so with many outputs) and when
  memory forces the contraction to recompute Jacobians.
- ``"loop"``: the reference, one ``torch.autograd.grad`` per example and output, the whole
  ``(n O) x P`` Jacobian in memory (benchmark baseline; not memory-bounded).

The cost model (:class:`NTKPlan`, :func:`plan_ntk`) measures instead of guessing: one forward
pass of one example, with the flops of every leaf module recorded in call order (from the output
shapes of linear and convolutional layers; under
:class:`torch.utils.flop_counter.FlopCounterMode` for other modules), gives the forward flops
``F``, the Jacobian flops ``F + O (2 F - F_1)`` (``F_1``: the first leaf, whose input needs
no gradient) and the tangent flops ``T_g = 2 F_g`` (``F_g``: the flops from the first leaf of
group ``g`` onward); these
equal the counts of ``jacrev`` and ``jvp`` themselves on the MLP, CNN and ResNet. Activation
memory is the bytes autograd saves for one example. Estimated time, in flop-equivalents:

    jacobian:  J (F_jac + w_m O P s) + 2 O^k P pairs(b_j)
    vp:        n (F_jac + w_m O P s) + O pairs(b_v) sum_g T_g + primal recomputation

with ``J`` the number of example Jacobians computed (``n``, or ``b (1 + m (m - 1) / 2)`` when
``m`` blocks of ``b`` must be recomputed), ``s`` the bytes per number, ``pairs(b)`` the example
pairs in the blocks ``B >= A`` (symmetry is used by both methods). Weights, calibrated on the
CPU (torch 2.13, 2 threads) with the benchmark's MLP and ResNet: matrix products, batched or
not, ``w = 1``; convolution flops count 12 times (per-example weight gradients and
weight tangents of convolutions run as grouped convolutions under ``vmap``, about 12 times
slower per flop), and every byte of Jacobian written ``w_m = 96`` flops (materializing the
Jacobian is memory bound). On a tie (estimates within 10%) the contraction is chosen: its
kernels are exactly symmetric and its per-group split costs nothing extra. Consequences: the
contraction for convolutional networks and for a resident MLP Jacobian; the products for the
classic MLP once its Jacobians no longer fit (n > 150 at the default budget) and for MLPs with
many outputs.

Memory: ``memory_budget`` (bytes, default :data:`DEFAULT_MEMORY_BUDGET` = 1 GiB) bounds the
working memory and the returned kernels; plans fill 95% of it (the rest is for what the plan
does not model: allocator rounding, torch's temporaries). Examples are processed in blocks: the
contraction holds the Jacobians of two blocks (``2 b O P`` numbers plus the activations of one
backward pass) and, when all ``n`` do not fit, recomputes Jacobians (``1 + m (m - 1) / 2`` block
Jacobians for ``m`` blocks); the products only ever hold one block's Jacobian and a ``jvp``
batch. At the default budget (float32):

- classic MLP 784 -> 1024 -> 2 (P = 805,890; ``O P`` = 6.4 MB of Jacobian per example): all
  Jacobians stay resident up to n = 150; beyond, blocks of 78 examples (n = 256: 4 blocks,
  n = 512: 7). The kernels themselves (whole, ``hidden1``, ``readout``) bound n: up to 9,161
  (trace, ``12 n^2`` bytes) or 4,580 (full).
- small ResNet (ResNet-8, width 16, 3 x 32 x 32 inputs, P = 78,042, groups ``stem``,
  ``block1..3``, ``readout``) with 10 outputs (``O P`` = 3.1 MB per example, 1.3 MB of saved
  activations per example and output in the backward pass): resident up to n = 280 (trace;
  n = 128 in one piece) or 237 (full), then blocks of about 40-50; at most n = 6,451 (trace) or
  645 (full: six ``(10 n)^2`` kernels). With 2 outputs: resident up to n = 1,498.

Alignment (Baratin et al. 2021, Atanasov et al. 2021): :func:`ntk_alignment` of a trace kernel
with the target kernel ``Y Y^T``, centered (CKA in Gram form,
:func:`ckalab.alignment.centered_alignment`) or uncentered (:func:`kernel_alignment`, as in
Baratin et al.); :func:`kernel_distance` (Fort et al. 2020)
``1 - <K, K'>_F / (||K||_F ||K'||_F)``. :class:`NTKTracker` records them during training.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, jvp, vmap
from torch.utils.flop_counter import FlopCounterMode

from ckalab.alignment import (
    DegenerateRepresentationWarning,
    centered_alignment,
    kernel_alignment,
)
from ckalab.schedule import tracking_steps
from ckalab.tracking import MetricRow, cka_targets

if TYPE_CHECKING:
    from ckalab.config import NTKTrackingConfig
    from ckalab.data import Split, Task

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "NTK",
    "NTKPlan",
    "NTKTracker",
    "balanced_subset",
    "build_ntk_tracker",
    "empirical_ntk",
    "kernel_distance",
    "ntk_alignment",
    "ntk_groups",
    "plan_ntk",
    "target_kernel",
]

#: Default working-memory budget of :func:`empirical_ntk`, in bytes (1 GiB).
DEFAULT_MEMORY_BUDGET = 1 << 30

Kind = Literal["trace", "full"]
Method = Literal["auto", "jacobian", "vp", "loop"]

# Cost-model weights, in flop-equivalents (see the module docstring).
_W_GEMM, _W_CONV, _W_BYTE = 1.0, 12.0, 96.0
_TIE = 1.10
# Working memory of a backward pass per example and cotangent, relative to the saved activations.
_ACT_FACTOR = 1.0
# A resident Jacobian is computed at least this many examples at a time (else blocks are used).
_MIN_COMPUTE_BLOCK = 8
#: Fraction of ``memory_budget`` the plan fills: the rest covers what the model of the memory
#: does not see (allocator rounding, torch's temporaries), which took the measured peak 1% over
#: a plan that filled the whole budget.
_BUDGET_FILL = 0.95
# Blocks used for symmetry when everything is resident: about n / _SYM_BLOCKS, at least 64 rows.
_SYM_BLOCKS, _MIN_SYM_BLOCK = 4, 64


# ----------------------------------------------------------------------------------------------
# Parameter groups
# ----------------------------------------------------------------------------------------------


def ntk_groups(
    model: nn.Module, groups: Mapping[str, Iterable[str]] | None = None
) -> dict[str, tuple[str, ...]]:
    """Group name -> parameter names (``named_parameters`` names), validated.

    ``groups=None``: the model's ``block_parameter_groups()`` when it has one (every
    :class:`~ckalab.models.ProbedModel`), else one group per top-level child module with
    parameters (named after the child), plus one group per parameter registered directly on
    ``model``. Given groups must name existing parameters, each at most once, and not be empty.
    """
    named = dict(model.named_parameters())
    by_id = {id(p): name for name, p in named.items()}
    if groups is None:
        out: dict[str, tuple[str, ...]] = {}
        block_groups = getattr(model, "block_parameter_groups", None)
        if callable(block_groups):
            for gname, params in block_groups().items():
                out[gname] = tuple(by_id[id(p)] for p in params)
        else:
            for cname, child in model.named_children():
                names = tuple(f"{cname}.{n}" for n, _ in child.named_parameters())
                if names:
                    out[cname] = names
            for pname, _ in model.named_parameters(recurse=False):
                out[pname] = (pname,)
        groups = out
    result: dict[str, tuple[str, ...]] = {}
    seen: dict[str, str] = {}
    for gname, names in groups.items():
        names = tuple(names)
        if not names:
            raise ValueError(f"parameter group {gname!r} is empty")
        for name in names:
            if name not in named:
                raise ValueError(
                    f"parameter group {gname!r}: the model has no parameter {name!r}; "
                    f"its parameters are {list(named)}"
                )
            if name in seen:
                raise ValueError(
                    f"parameter {name!r} is in two groups ({seen[name]!r} and {gname!r})"
                )
            seen[name] = gname
        result[str(gname)] = names
    if not result:
        raise ValueError("no parameter groups: the model has no parameters")
    return result


# ----------------------------------------------------------------------------------------------
# Functional evaluation
# ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


class _Functional:
    """``f(params, x)`` of a model in eval mode, with its parameters split into the
    differentiated ones (``trainable``: the groups' parameters) and constants."""

    def __init__(self, model: nn.Module, groups: Mapping[str, tuple[str, ...]]) -> None:
        self.model = model
        self.groups = dict(groups)
        wanted = [n for names in self.groups.values() for n in names]
        named = dict(model.named_parameters())
        self.trainable = {n: named[n].detach() for n in wanted}
        self.constants = {n: p.detach() for n, p in named.items() if n not in self.trainable}
        # Buffers are read, never written, in eval mode; copies make that structural.
        self.buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        self.sizes = {n: t.numel() for n, t in self.trainable.items()}

    def __call__(self, params: Mapping[str, Tensor], x: Tensor, **fixed: Tensor) -> Tensor:
        merged = {**self.constants, **fixed, **params}
        return functional_call(self.model, (merged, self.buffers), (x,))

    def jacobian(self, x: Tensor) -> dict[str, Tensor]:
        """Per-example Jacobians: name -> ``(b, O, *shape)``."""

        def single(params: dict[str, Tensor], xi: Tensor) -> Tensor:
            return self(params, xi.unsqueeze(0)).squeeze(0)

        return vmap(jacrev(single), (None, 0))(self.trainable, x)

    def jvp_group(self, group: str, x: Tensor, tangents: Mapping[str, Tensor]) -> Tensor:
        """``J_g t`` for a batch of tangents (name -> ``(t, *shape)``): ``(t, b, O)``."""
        names = self.groups[group]
        primal = {n: self.trainable[n] for n in names}
        fixed = {n: v for n, v in self.trainable.items() if n not in primal}

        def f(params: dict[str, Tensor]) -> Tensor:
            return self(params, x, **fixed)

        def one(t: dict[str, Tensor]) -> Tensor:
            return jvp(f, (primal,), (t,))[1]

        return vmap(one)(dict(tangents))


# ----------------------------------------------------------------------------------------------
# The plan: cost model and blocks
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NTKPlan:
    """How :func:`empirical_ntk` computes a kernel, and why.

    Attributes:
        method: the chosen method (``"jacobian"`` or ``"vp"``).
        n, num_outputs, num_params: examples, outputs ``O``, parameters ``P`` of the groups.
        kind: ``"trace"`` or ``"full"``.
        forward_flops: forward flops of one example; ``jacobian_flops``: of its Jacobian
            (forward and ``O`` backward passes); ``tangent_flops``: per group, the extra
            forward-mode flops of one example and one tangent.
        activation_bytes: bytes autograd saves in the forward pass of one example.
        block_jacobian, block_vp: examples per block of each method (``block_jacobian = n``:
            all Jacobians resident); ``block_compute``: examples per ``vmap(jacrev)`` call of the
            contraction; ``tangent_batch``: tangents per ``jvp`` batch (``vp``).
        cost_jacobian, cost_vp: estimated costs (flop-equivalents, see the module docstring).
        memory_budget: the budget, bytes.
    """

    method: str
    kind: str
    n: int
    num_outputs: int
    num_params: int
    forward_flops: int
    jacobian_flops: int
    tangent_flops: dict[str, int]
    activation_bytes: int
    block_jacobian: int
    block_compute: int
    block_vp: int
    tangent_batch: int
    cost_jacobian: float
    cost_vp: float
    memory_budget: int

    @property
    def resident(self) -> bool:
        """Whether the contraction holds all ``n`` Jacobians at once (no recomputation)."""
        return self.block_jacobian >= self.n


#: Leaf modules whose flops (as :class:`~torch.utils.flop_counter.FlopCounterMode` counts them:
#: matrix products and convolutions only) follow from their output shape; others count none.
_PRODUCT_LEAVES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_FREE_LEAVES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.Identity,
    nn.Flatten,
    nn.Dropout,
    nn.ReLU,
    nn.Tanh,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
)


def _leaf_flops(mod: nn.Module, out: Tensor) -> int:
    if isinstance(mod, nn.Linear):
        return 2 * out.numel() * mod.in_features
    if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        per_output = (mod.in_channels // mod.groups) * math.prod(mod.kernel_size)
        return 2 * out.numel() * per_output
    return 0


def _analytic(model: nn.Module, leaves: list[nn.Module]) -> bool:
    """Whether leaf hooks see every flop: a ckalab model or ``nn.Sequential`` (no products
    outside its leaves) made of known leaves only."""
    from ckalab.models import Activation, GlobalAvgPool, ProbedModel

    known = (*_PRODUCT_LEAVES, *_FREE_LEAVES, Activation, GlobalAvgPool)
    return isinstance(model, (ProbedModel, nn.Sequential)) and all(
        isinstance(m, known) for m in leaves
    )


@dataclass(frozen=True)
class _Flops:
    forward: float  # F
    first: float  # F_1
    tail: dict[str, float]  # F_g

    def jacobian(self, num_outputs: int) -> float:
        return self.forward + num_outputs * (2 * self.forward - self.first)


@dataclass(frozen=True)
class _Measured:
    output: Tensor  # of one example
    flops: _Flops  # as counted
    weighted: _Flops  # convolution flops times _W_CONV (the cost model's)
    saved_bytes: int


def _summarize(
    calls: list[tuple[nn.Module, float]], forward: float, fun: _Functional, owner: dict
) -> _Flops:
    outside = forward - sum(f for _, f in calls)  # products outside leaves: taken to come last
    tail: dict[str, float] = {}
    for g, names in fun.groups.items():
        mods = {id(owner[n]) for n in names}
        pos = next((i for i, (m, _) in enumerate(calls) if id(m) in mods), None)
        tail[g] = forward if pos is None else sum(f for _, f in calls[pos:]) + outside
    return _Flops(forward, calls[0][1] if calls else 0.0, tail)


def _measure(model: nn.Module, fun: _Functional, x1: Tensor) -> _Measured:
    """Flops and saved activation bytes of one example, from one forward pass.

    The flops of every leaf module are recorded in call order by forward hooks: from the output
    shape for linear and convolutional layers when the model is made of known leaves
    (:data:`_PRODUCT_LEAVES`, :data:`_FREE_LEAVES`), else read from a
    :class:`~torch.utils.flop_counter.FlopCounterMode` around the pass (slower: ~0.3 s for the
    ResNet). With ``F`` the forward flops, ``F_1`` those of the first leaf and ``F_g`` those from
    the first leaf owning a parameter of group ``g`` onward: Jacobian ``F + O (2 F - F_1)``
    (forward, then per output the weight gradients and the input gradients of every leaf but the
    first); tangent ``2 F_g`` (forward mode propagates the tangent and the primal from the group
    onward). These match FlopCounterMode's counts of ``jacrev`` and ``jvp`` themselves on the
    MLP, CNN and ResNet (which take seconds to count under ``vmap``). Products outside any leaf
    are taken to come after the leaves, and a group of parameters owned by no leaf is given
    ``F_g = F``: an upper bound. The same pass records the
    bytes autograd saves (``saved_tensors_hooks``).
    """
    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    owner = {}
    for mod_name, mod in model.named_modules():
        for p_name, _ in mod.named_parameters(recurse=False):
            owner[f"{mod_name}.{p_name}" if mod_name else p_name] = mod
    calls: list[tuple[nn.Module, float]] = []
    analytic = _analytic(model, leaves)
    counter = contextlib.nullcontext() if analytic else FlopCounterMode(display=False)
    start: dict[int, int] = {}

    def total() -> int:
        return 0 if analytic else int(counter.get_total_flops())  # type: ignore[union-attr]

    def pre(mod: nn.Module, _args: Any) -> None:
        start[id(mod)] = total()

    def post(mod: nn.Module, _args: Any, out: Any) -> None:
        done = _leaf_flops(mod, out) if analytic else total() - start[id(mod)]
        calls.append((mod, done))

    saved = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    params = {n: p.detach().requires_grad_(True) for n, p in fun.trainable.items()}
    handles = [m.register_forward_pre_hook(pre) for m in leaves]
    handles += [m.register_forward_hook(post) for m in leaves]
    try:
        with (
            counter,
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
            torch.enable_grad(),
        ):
            out = fun(params, x1).detach()
    finally:
        for h in handles:
            h.remove()
    forward = sum(f for _, f in calls) if analytic else total()
    convs = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    weighted = [(m, f * (_W_CONV if isinstance(m, convs) else 1.0)) for m, f in calls]
    outside = forward - sum(f for _, f in calls)
    return _Measured(
        out,
        _summarize(calls, forward, fun, owner),  # type: ignore[arg-type]
        _summarize(weighted, sum(f for _, f in weighted) + outside, fun, owner),
        saved,
    )


def _pairs(n: int, block: int) -> float:
    """Example pairs ``(i, j)`` visited when only blocks ``B >= A`` are computed."""
    m = math.ceil(n / block)
    full = n * n
    return full * (m + 1) / (2 * m)


def plan_ntk(
    model: nn.Module,
    x: Tensor,
    *,
    groups: Mapping[str, Iterable[str]] | None = None,
    kind: Kind = "trace",
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> NTKPlan:
    """The cost model behind ``method="auto"``: measure one example, size the blocks, compare.

    Raises ``ValueError`` when even one example's Jacobian (and the returned kernels) do not fit
    in ``memory_budget``.
    """
    _check_kind(kind)
    gmap = ntk_groups(model, groups)
    n = int(x.shape[0])
    if n < 1:
        raise ValueError("x must hold at least one example")
    with _eval_mode(model), torch.no_grad():
        fun = _Functional(model, gmap)
        x1 = x[:1]
        measured = _measure(model, fun, x1)
    out = measured.output
    if out.ndim != 2:
        raise ValueError(f"the model output must be (n, outputs), got shape {tuple(out.shape)}")
    num_outputs = int(out.shape[1])
    counted, weighted = measured.flops, measured.weighted
    forward, jac, act = int(counted.forward), counted.jacobian(num_outputs), measured.saved_bytes
    tangent = {g: int(2 * f) for g, f in counted.tail.items()}
    jac_w = weighted.jacobian(num_outputs)
    tangent_w = sum(2 * f for f in weighted.tail.values())
    itemsize = out.element_size()
    num_params = sum(fun.sizes.values())
    o = num_outputs
    size = n * o if kind == "full" else n
    out_bytes = (len(gmap) + 1) * size * size * itemsize
    work = int(memory_budget * _BUDGET_FILL) - out_bytes
    jac_row = o * num_params * itemsize  # one example's Jacobian
    jac_work = jac_row + act * (1 + _ACT_FACTOR * o)  # ... while it is computed
    if work < jac_work + jac_row:
        raise ValueError(
            f"memory_budget = {memory_budget} bytes is too small: the kernels take {out_bytes} "
            f"bytes and one example's Jacobian needs about {jac_work + jac_row} more"
        )
    # Jacobian contraction: resident if all n Jacobians fit (computed block_compute examples at
    # a time), else two blocks at a time (one held, one being computed).
    spare = work - n * jac_row
    if spare >= min(n, _MIN_COMPUTE_BLOCK) * jac_work:
        block_j, block_c = n, int(min(n, spare // jac_work))
    else:
        block_j = max(1, int(work // (jac_row + jac_work)))
        block_c = block_j
    m = math.ceil(n / block_j)
    jac_evals = n if m == 1 else block_j * (1 + m * (m - 1) / 2)
    jac_cost = jac_evals * (jac_w + _W_BYTE * jac_row)
    sym = block_j if m > 1 else max(_MIN_SYM_BLOCK, math.ceil(n / _SYM_BLOCKS))
    contract = _pairs(n, min(sym, n)) * 2 * o ** (2 if kind == "full" else 1) * num_params
    cost_j = jac_cost + _W_GEMM * contract
    # NTK-vector products: one block of tangents (its Jacobian) and a jvp batch at a time.
    block_v = max(1, min(n, int((work / 2) // jac_work)))
    rest = work - block_v * jac_row
    per_tangent = block_v * (act + num_outputs * itemsize)
    tangent_batch = max(1, min(block_v * o, int(rest // max(per_tangent, 1))))
    mv = math.ceil(n / block_v)
    jvp_cost = _pairs(n, block_v) * o * tangent_w
    primal = mv * n * weighted.forward * len(gmap) * math.ceil(block_v * o / tangent_batch)
    cost_v = n * (jac_w + _W_BYTE * jac_row) + jvp_cost + primal
    method = "vp" if cost_v * _TIE < cost_j else "jacobian"
    return NTKPlan(
        method=method,
        kind=kind,
        n=n,
        num_outputs=o,
        num_params=num_params,
        forward_flops=forward,
        jacobian_flops=int(jac),
        tangent_flops=tangent,
        activation_bytes=act,
        block_jacobian=block_j,
        block_compute=block_c,
        block_vp=block_v,
        tangent_batch=tangent_batch,
        cost_jacobian=float(cost_j),
        cost_vp=float(cost_v),
        memory_budget=int(memory_budget),
    )


def _check_kind(kind: str) -> None:
    if kind not in ("trace", "full"):
        raise ValueError(f"kind must be 'trace' or 'full', got {kind!r}")


# ----------------------------------------------------------------------------------------------
# The kernel
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NTK:
    """An empirical NTK: ``kernel`` (whole network) and ``groups`` (name -> kernel, summing to
    ``kernel``), each ``(n, n)`` (``kind="trace"``) or ``(n O, n O)`` (``"full"``, row
    ``i * O + o``); ``method`` is the method used."""

    kernel: Tensor
    groups: dict[str, Tensor]
    kind: str
    method: str
    num_outputs: int

    def trace(self) -> NTK:
        """The trace kernel (``sum_o K[(i, o), (j, o)]``) of a full kernel; itself if trace."""
        if self.kind == "trace":
            return self
        o = self.num_outputs

        def tr(k: Tensor) -> Tensor:
            n = k.shape[0] // o
            return k.reshape(n, o, n, o).diagonal(dim1=1, dim2=3).sum(-1)

        return NTK(
            tr(self.kernel), {g: tr(k) for g, k in self.groups.items()}, "trace", self.method, o
        )


def _blocks(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def _contract(ja: Tensor, jb: Tensor, kind: str) -> Tensor:
    """One parameter tensor's block ``J_A J_B^T``: ``(a, b)`` trace or ``(a O, b O)`` full."""
    a, b = ja.shape[0], jb.shape[0]
    if kind == "trace":
        return ja.reshape(a, -1) @ jb.reshape(b, -1).T
    o = ja.shape[1]
    return ja.reshape(a * o, -1) @ jb.reshape(b * o, -1).T


def _jacobian_method(fun: _Functional, x: Tensor, plan: NTKPlan, out: Tensor) -> None:
    n, kind = plan.n, plan.kind
    o = plan.num_outputs if kind == "full" else 1
    names = list(fun.groups)
    resident = plan.resident
    blocks = _blocks(
        n,
        plan.block_jacobian if not resident else max(_MIN_SYM_BLOCK, math.ceil(n / _SYM_BLOCKS)),
    )
    full_j = None
    if resident:
        parts = [fun.jacobian(x[s]) for s in _blocks(n, plan.block_compute)[:1]]
        full_j = {
            k: v.new_empty((n, *v.shape[1:])) for k, v in parts[0].items()
        }  # filled block by block: never two copies of all n
        for s in _blocks(n, plan.block_compute):
            part = parts.pop() if parts else fun.jacobian(x[s])
            for k, v in part.items():
                full_j[k][s] = v
            del part

    def jac(s: slice) -> dict[str, Tensor]:
        if full_j is not None:
            return {k: v[s] for k, v in full_j.items()}
        return fun.jacobian(x[s])

    current = jac(blocks[0])
    for i, bi in enumerate(blocks):
        ja = current
        ri = slice(bi.start * o, bi.stop * o)
        # Visit B = last .. i + 1, then i: the last non-diagonal one is the next A.
        nxt = None
        for j in [*range(len(blocks) - 1, i, -1), i]:
            bj = blocks[j]
            jb = ja if j == i else jac(bj)
            rj = slice(bj.start * o, bj.stop * o)
            for gi, g in enumerate(names):
                block = sum(_contract(ja[t], jb[t], kind) for t in fun.groups[g])
                out[gi, ri, rj] = block
                if j != i:
                    out[gi, rj, ri] = block.T
            if j == i + 1:
                nxt = jb
            del jb
        current = nxt  # type: ignore[assignment]


def _vp_method(fun: _Functional, x: Tensor, plan: NTKPlan, out: Tensor) -> None:
    n, kind, o = plan.n, plan.kind, plan.num_outputs
    names = list(fun.groups)
    blocks = _blocks(n, plan.block_vp)
    for i, bi in enumerate(blocks):
        ja = fun.jacobian(x[bi])
        a = bi.stop - bi.start
        tangents = {k: v.reshape(a * o, *v.shape[2:]) for k, v in ja.items()}
        del ja
        for bj in blocks[i:]:
            b = bj.stop - bj.start
            for gi, g in enumerate(names):
                parts = []
                for ts in _blocks(a * o, plan.tangent_batch):
                    chunk = {t: tangents[t][ts] for t in fun.groups[g]}
                    parts.append(fun.jvp_group(g, x[bj], chunk))  # (t, b, O)
                block = torch.cat(parts).reshape(a, o, b, o)
                if kind == "trace":
                    k = block.diagonal(dim1=1, dim2=3).sum(-1)
                    ri, rj = bi, bj
                else:
                    k = block.reshape(a * o, b * o)
                    ri = slice(bi.start * o, bi.stop * o)
                    rj = slice(bj.start * o, bj.stop * o)
                out[gi, ri, rj] = k
                if bj != bi:
                    out[gi, rj, ri] = k.T


def _loop_method(fun: _Functional, x: Tensor, kind: str, out: Tensor) -> None:
    """The reference: one backward pass per example and output."""
    names = list(fun.trainable)
    params = {k: v.detach().requires_grad_(True) for k, v in fun.trainable.items()}
    rows: list[list[Tensor]] = []
    with torch.enable_grad():
        for i in range(x.shape[0]):
            f = fun(params, x[i : i + 1])[0]
            for k in range(f.shape[0]):
                grads = torch.autograd.grad(
                    f[k], [params[t] for t in names], retain_graph=k + 1 < f.shape[0]
                )
                rows.append([g.reshape(-1) for g in grads])
    o = len(rows) // x.shape[0]
    for gi, g in enumerate(fun.groups):
        cols = [names.index(t) for t in fun.groups[g]]
        j = torch.stack([torch.cat([r[c] for c in cols]) for r in rows])  # (n O, P_g)
        k = j @ j.T
        if kind == "trace":
            n = x.shape[0]
            k = k.reshape(n, o, n, o).diagonal(dim1=1, dim2=3).sum(-1)
        out[gi] = k


def empirical_ntk(
    model: nn.Module,
    x: Tensor,
    *,
    groups: Mapping[str, Iterable[str]] | None = None,
    kind: Kind = "trace",
    method: Method = "auto",
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    plan: NTKPlan | None = None,
) -> NTK:
    """The empirical NTK of ``model`` on the examples ``x`` (see the module docstring).

    Args:
        model: any module mapping ``(n, *input)`` to ``(n, O)``; evaluated in eval mode.
        x: the examples, on the model's device and in its dtype.
        groups: group name -> parameter names; default :func:`ntk_groups`.
        kind: ``"trace"`` (``n x n``) or ``"full"`` (``n O x n O``).
        method: ``"auto"`` (cost model), ``"jacobian"``, ``"vp"`` or ``"loop"`` (reference).
        memory_budget: working-memory bound in bytes (not for ``"loop"``).
        plan: a :func:`plan_ntk` result to reuse (same model shapes, ``n``, kind and budget).

    Returns an :class:`NTK`; no parameter, buffer, mode or random state of ``model`` changes.
    """
    _check_kind(kind)
    if method not in ("auto", "jacobian", "vp", "loop"):
        raise ValueError(f"method must be 'auto', 'jacobian', 'vp' or 'loop', got {method!r}")
    gmap = ntk_groups(model, groups)
    if method != "loop" and plan is None:
        plan = plan_ntk(model, x, groups=gmap, kind=kind, memory_budget=memory_budget)
    if plan is not None and (plan.n != x.shape[0] or plan.kind != kind):
        raise ValueError("plan was made for another n or kind")
    with _eval_mode(model), torch.no_grad():
        fun = _Functional(model, gmap)
        o = plan.num_outputs if plan is not None else int(fun(fun.trainable, x[:1]).shape[1])
        size = x.shape[0] * (o if kind == "full" else 1)
        dtype = next(iter(fun.trainable.values())).dtype
        out = torch.empty(len(gmap), size, size, dtype=dtype, device=x.device)
        if method == "loop":
            used = "loop"
            _loop_method(fun, x, kind, out)
        else:
            assert plan is not None
            used = plan.method if method == "auto" else method
            (_vp_method if used == "vp" else _jacobian_method)(fun, x, plan, out)
    return NTK(out.sum(0), dict(zip(gmap, out.unbind(0), strict=True)), kind, used, o)


# ----------------------------------------------------------------------------------------------
# Alignment and distance
# ----------------------------------------------------------------------------------------------


def target_kernel(targets: Tensor) -> Tensor:
    """``Y Y^T`` (float64) of targets ``(n, q)`` (one-hot or +-1), or ``(n,)`` as one column."""
    y = targets.double()
    y = y.unsqueeze(1) if y.ndim == 1 else y
    return y @ y.T


def ntk_alignment(kernel: Tensor, targets: Tensor, *, centered: bool = True) -> Tensor:
    """Alignment of an ``(n, n)`` (trace) kernel with the target kernel ``Y Y^T``.

    ``centered=True``: ``<HKH, HYY^TH>_F / (||HKH||_F ||HYY^TH||_F)`` (CKA in Gram form,
    :func:`ckalab.alignment.centered_alignment`); ``False``: ``<K, YY^T>_F / (||K||_F
    ||YY^T||_F)`` (:func:`ckalab.alignment.kernel_alignment`, Baratin et al. 2021). A 0-dim
    float64 tensor.
    """
    ky = target_kernel(targets)
    k = kernel.double()
    return centered_alignment(k, ky) if centered else kernel_alignment(k, ky)


def kernel_distance(k1: Tensor, k2: Tensor) -> Tensor:
    """Kernel distance (Fort et al. 2020): ``1 - <K1, K2>_F / (||K1||_F ||K2||_F)``.

    0 for proportional kernels, at most 1 for positive semi-definite ones. A 0-dim float64 tensor
    (NaN with a :class:`~ckalab.alignment.DegenerateRepresentationWarning` for a zero kernel).
    """
    return 1.0 - kernel_alignment(k1.double(), k2.double())


# ----------------------------------------------------------------------------------------------
# Tracking during training
# ----------------------------------------------------------------------------------------------


def balanced_subset(split: Split, size: int, num_classes: int) -> Split:
    """The first examples of each class of ``split`` (in its order), class-balanced, at most
    ``size`` in all (:func:`ckalab.data.tasks.balanced_counts`); deterministic, draws no randomness.
    Selected examples keep their order."""
    from ckalab.data.tasks import balanced_counts

    labels = split.labels.cpu().numpy()
    size = min(size, len(labels))
    alloc = balanced_counts(np.bincount(labels, minlength=num_classes), size)
    keep = [np.flatnonzero(labels == c)[:take] for c, take in enumerate(alloc)]
    index = np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)
    return split.subset(index)


class NTKTracker:
    """Empirical-NTK alignment and kernel distance on a fixed probe set, on its own schedule.

    At each step of ``steps`` (:meth:`due`), :meth:`__call__` computes the trace NTK of the model
    on ``x`` (whole and per group) and returns metric rows (split ``split``, layer = group name
    or ``""`` for the whole network): ``ntk_alignment`` (centered), ``ntk_alignment_uncentered``,
    ``ntk_distance_init`` (to the kernel of the first measurement, step 0) and
    ``ntk_distance_prev`` (to the previous measurement; from the second one on). Undefined
    values (a zero kernel) are NaN. The kernels of the first and previous measurements are kept
    (:meth:`state_dict` for checkpoints).
    """

    def __init__(
        self,
        x: Tensor,
        targets: Tensor,
        steps: Iterable[int],
        *,
        groups: Mapping[str, Iterable[str]] | None = None,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        split: str = "train",
    ) -> None:
        self.x = x
        self.targets = targets
        self.steps = frozenset(int(s) for s in steps)
        self.groups = None if groups is None else {g: tuple(v) for g, v in groups.items()}
        self.memory_budget = int(memory_budget)
        self.split = split
        self.plan: NTKPlan | None = None
        self.measured: set[int] = set()
        self.init: dict[str, Tensor] | None = None
        self.prev: dict[str, Tensor] | None = None

    def due(self, step: int) -> bool:
        """Whether ``step`` is scheduled and not yet measured."""
        return step in self.steps and step not in self.measured

    def __call__(self, model: nn.Module, step: int, epoch: float) -> list[MetricRow]:
        if self.plan is None:
            self.plan = plan_ntk(
                model, self.x, groups=self.groups, kind="trace", memory_budget=self.memory_budget
            )
        ntk = empirical_ntk(
            model,
            self.x,
            groups=self.groups,
            kind="trace",
            memory_budget=self.memory_budget,
            plan=self.plan,
        )
        kernels = {"": ntk.kernel, **ntk.groups}
        if self.init is None:
            self.init = {k: v.detach().clone() for k, v in kernels.items()}
        keys: list[tuple[str, str]] = []
        values: list[Tensor] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DegenerateRepresentationWarning)
            for layer, k in kernels.items():
                keys += [("ntk_alignment", layer), ("ntk_alignment_uncentered", layer)]
                values += [
                    ntk_alignment(k, self.targets),
                    ntk_alignment(k, self.targets, centered=False),
                ]
                keys.append(("ntk_distance_init", layer))
                values.append(kernel_distance(k, self.init[layer]))
                if self.prev is not None:
                    keys.append(("ntk_distance_prev", layer))
                    values.append(kernel_distance(k, self.prev[layer]))
        self.prev = {k: v.detach().clone() for k, v in kernels.items()}
        self.measured.add(step)
        numbers = torch.stack(values).tolist()
        return [
            MetricRow(step, epoch, self.split, metric, layer, value)
            for (metric, layer), value in zip(keys, numbers, strict=True)
        ]

    def state_dict(self) -> dict[str, Any]:
        """Measured steps and the first and previous kernels (CPU tensors)."""

        def cpu(d: dict[str, Tensor] | None) -> dict[str, Tensor] | None:
            return None if d is None else {k: v.cpu() for k, v in d.items()}

        return {"measured": sorted(self.measured), "init": cpu(self.init), "prev": cpu(self.prev)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        def dev(d: Mapping[str, Tensor] | None) -> dict[str, Tensor] | None:
            return None if d is None else {k: v.to(self.x.device) for k, v in d.items()}

        self.measured = {int(s) for s in state["measured"]}
        self.init, self.prev = dev(state["init"]), dev(state["prev"])


def build_ntk_tracker(
    config: NTKTrackingConfig | None,
    task: Task,
    steps_per_epoch: int,
    total_steps: int,
) -> NTKTracker | None:
    """The tracker that ``tracking.ntk`` describes (None when it is unset).

    Probe set: :func:`balanced_subset` of the task's training probe set (``task.probe_train``,
    itself class-balanced) with at most ``config.probe_size`` examples; targets as for CKA
    (one-hot or +-1). Schedule: :func:`ckalab.schedule.tracking_steps` with the section's
    ``schedule``, ``every`` and ``ratio``.
    """
    if config is None:
        return None
    k = task.num_classes
    probe = balanced_subset(task.probe_train, config.probe_size, k)
    steps = tracking_steps(config, steps_per_epoch, total_steps)  # type: ignore[arg-type]
    return NTKTracker(
        probe.x,
        cka_targets(probe.y, probe.labels, k),
        steps,
        memory_budget=config.memory_budget,
    )
