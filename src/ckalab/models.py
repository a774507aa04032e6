r"""Networks with named probe layers: :class:`MLP`, :class:`CNN` and a CIFAR-style :class:`ResNet`.

Every model is a stack of named hidden *blocks* followed by a linear ``readout``::

    h_0 = x,   h_l = block_l(h_{l-1})   (l = 1..L),   f(x) = W_out h_L + b_out

The *probe layers* are the block outputs ``h_1 .. h_L`` in order; the last one is the
penultimate representation (the input of the readout). :meth:`ProbedModel.forward_with_probes`
returns the output together with every probe representation flattened to ``(n, features)`` from
one forward pass (no hooks). Parameters split into the groups ``features`` (every block) and
``readout`` (the last linear layer), and per block (:meth:`ProbedModel.block_parameter_groups`).

Initialization is explicit and seeded: modules are built on the ``meta`` device (consuming no
global random state), then every linear and convolutional layer draws weight and bias from
``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with the ``generator`` passed to the constructor (the
distribution of PyTorch's default initialization; default: a fresh CPU generator seeded with 0),
BatchNorm starts at scale 1 and shift 0. Models are created on the CPU (move them with ``.to``);
the same seed gives the same weights on every device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ckalab.config import DEFAULT_WIDTH
from ckalab.layer_names import probe_layer_names

if TYPE_CHECKING:
    from ckalab.config import ModelConfig

__all__ = [
    "ACTIVATIONS",
    "CNN",
    "MLP",
    "ProbedModel",
    "ResNet",
    "build_model",
    "init_parameters",
]


def _erf(x: Tensor) -> Tensor:
    return torch.erf(x)


#: Activation name -> elementwise function (``linear`` is the identity: a deep linear network).
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "gelu": nn.functional.gelu,
    "silu": nn.functional.silu,
    "sigmoid": torch.sigmoid,
    "erf": _erf,
    "linear": lambda x: x,
}


class Activation(nn.Module):
    """An elementwise nonlinearity chosen by name from :data:`ACTIVATIONS`."""

    def __init__(self, name: str) -> None:
        super().__init__()
        if name not in ACTIVATIONS:
            known = ", ".join(sorted(ACTIVATIONS))
            raise ValueError(f"unknown activation {name!r}; known: {known}")
        self.name = name
        self.fn = ACTIVATIONS[name]

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


class ProbedModel(nn.Module):
    """Base class: named hidden ``blocks`` (an ``nn.ModuleDict``) and a linear ``readout``.

    Subclasses fill ``self.blocks`` (block name -> module mapping ``h_{l-1} -> h_l``) and
    ``self.readout`` (an ``nn.Linear`` applied to the flattened last block output).
    """

    blocks: nn.ModuleDict
    readout: nn.Linear

    @property
    def probe_layers(self) -> tuple[str, ...]:
        """Names of the probe layers (block outputs) in forward order; the last is penultimate."""
        return tuple(self.blocks.keys())

    def forward(self, x: Tensor) -> Tensor:
        """Network output, shape ``(n, num_outputs)``."""
        h = x
        for block in self.blocks.values():
            h = block(h)
        return self.readout(h.flatten(1))

    def forward_with_probes(
        self, x: Tensor, layers: Iterable[str] | None = None, *, spatial: str = "flatten"
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Output ``(n, num_outputs)`` and probe representations from a single forward pass.

        Returns ``(output, probes)`` where ``probes[name]`` is the output of block ``name`` as an
        ``(n, features)`` matrix (nothing is copied or detached). Convolutional feature maps
        ``(n, C, H, W)`` are flattened to ``(n, C*H*W)`` (``spatial="flatten"``, a view) or
        averaged over space to ``(n, C)`` (``spatial="mean"``, much smaller for early layers).
        ``layers`` restricts the returned probes (default: all :attr:`probe_layers`).
        """
        if spatial not in ("flatten", "mean"):
            raise ValueError(f"spatial must be 'flatten' or 'mean', got {spatial!r}")
        wanted = set(self.probe_layers if layers is None else layers)
        unknown = wanted - set(self.probe_layers)
        if unknown:
            raise ValueError(
                f"unknown probe layers {sorted(unknown)}; this model has {list(self.probe_layers)}"
            )
        probes: dict[str, Tensor] = {}
        h = x
        for name, block in self.blocks.items():
            h = block(h)
            if name in wanted:
                pooled = spatial == "mean" and h.ndim == 4
                probes[name] = h.mean(dim=(2, 3)) if pooled else h.flatten(1)
        return self.readout(h.flatten(1)), probes

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``{"features": [...every block parameter], "readout": [...readout parameters]}``."""
        return {
            "features": [p for block in self.blocks.values() for p in block.parameters()],
            "readout": list(self.readout.parameters()),
        }

    def block_parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Per-block groups: block name -> its parameters (blocks without any are omitted),
        then ``"readout"``."""
        groups = {
            name: list(block.parameters())
            for name, block in self.blocks.items()
            if any(True for _ in block.parameters())
        }
        groups["readout"] = list(self.readout.parameters())
        return groups


# ----------------------------------------------------------------------------------------------
# MLP
# ----------------------------------------------------------------------------------------------


class DenseBlock(nn.Module):
    """``h -> act(W h + b)`` on flattened inputs: ``(n, *) -> (n, width)``."""

    def __init__(self, in_features: int, width: int, activation: str, bias: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, width, bias=bias, device="meta")
        self.act = Activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.linear(x.flatten(1)))


class MLP(ProbedModel):
    """Fully connected network ``d -> width -> ... -> width -> num_outputs``.

    ``depth`` hidden layers named ``hidden1 .. hidden{depth}``, each ``act(W h + b)``; inputs of
    any shape are flattened to ``(n, d)``. The classic slow-feature-learning model is
    ``MLP(784, 2, depth=1, width=1024)``.
    """

    def __init__(
        self,
        in_features: int,
        num_outputs: int,
        *,
        depth: int = 1,
        width: int = DEFAULT_WIDTH["mlp"],
        activation: str = "relu",
        bias: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        _check_positive(depth=depth, width=width, in_features=in_features, num_outputs=num_outputs)
        blocks: dict[str, nn.Module] = {}
        fan_in = in_features
        for name in probe_layer_names("mlp", depth):
            blocks[name] = DenseBlock(fan_in, width, activation, bias)
            fan_in = width
        self.blocks = nn.ModuleDict(blocks)
        self.readout = nn.Linear(width, num_outputs, bias=bias, device="meta")
        init_parameters(self, generator)


# ----------------------------------------------------------------------------------------------
# CNN
# ----------------------------------------------------------------------------------------------


def _norm(channels: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels, device="meta") if batch_norm else nn.Identity()


class ConvBlock(nn.Module):
    """``conv3x3 -> [BatchNorm] -> act -> [2x2 max-pool]``.

    Shapes: ``(n, c_in, H, W) -> (n, c, H', W')``.
    """

    def __init__(
        self, c_in: int, c_out: int, activation: str, batch_norm: bool, pool: bool
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batch_norm, device="meta")
        self.norm = _norm(c_out, batch_norm)
        self.act = Activation(activation)
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.act(self.norm(self.conv(x))))


class GlobalAvgPool(nn.Module):
    """Spatial mean: ``(n, C, H, W) -> (n, C)``."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3))


class CNN(ProbedModel):
    """A small convolutional network for ``(C, H, W)`` images.

    ``depth`` blocks ``conv1 .. conv{depth}`` of ``width`` channels (3x3 convolution, optional
    BatchNorm, activation, 2x2 max-pooling while the feature map is at least 2x2), then ``pool``
    (global average over space, ``(n, width)``: the penultimate representation) and the readout.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        num_outputs: int,
        *,
        depth: int = 2,
        width: int = DEFAULT_WIDTH["cnn"],
        activation: str = "relu",
        batch_norm: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        c, h, w = _image_shape(image_shape)
        _check_positive(depth=depth, width=width, num_outputs=num_outputs)
        *conv_names, pool_name = probe_layer_names("cnn", depth)
        blocks: dict[str, nn.Module] = {}
        for name in conv_names:
            pool = h >= 2 and w >= 2
            blocks[name] = ConvBlock(c, width, activation, batch_norm, pool)
            c = width
            if pool:
                h, w = h // 2, w // 2
        blocks[pool_name] = GlobalAvgPool()
        self.blocks = nn.ModuleDict(blocks)
        self.readout = nn.Linear(width, num_outputs, device="meta")
        init_parameters(self, generator)


# ----------------------------------------------------------------------------------------------
# ResNet
# ----------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """CIFAR ResNet basic block: ``act(BN(conv(act(BN(conv(x))))) + shortcut(x))``.

    With ``skip=False`` the shortcut is dropped (a plain network of the same depth). When the
    shape changes (stride 2 or more channels) the shortcut is a 1x1 convolution with BatchNorm.
    """

    def __init__(
        self, c_in: int, c_out: int, stride: int, activation: str, batch_norm: bool, skip: bool
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            c_in, c_out, 3, stride=stride, padding=1, bias=not batch_norm, device="meta"
        )
        self.norm1 = _norm(c_out, batch_norm)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=not batch_norm, device="meta")
        self.norm2 = _norm(c_out, batch_norm)
        self.act = Activation(activation)
        self.skip = skip
        self.shortcut: nn.Module = nn.Identity()
        if skip and (stride != 1 or c_in != c_out):
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=not batch_norm, device="meta"),
                _norm(c_out, batch_norm),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.norm2(self.conv2(self.act(self.norm1(self.conv1(x)))))
        if self.skip:
            out = out + self.shortcut(x)
        return self.act(out)


class Stem(nn.Module):
    """``conv3x3 -> [BatchNorm] -> act``: ``(n, C, H, W) -> (n, width, H, W)``."""

    def __init__(self, c_in: int, width: int, activation: str, batch_norm: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, width, 3, padding=1, bias=not batch_norm, device="meta")
        self.norm = _norm(width, batch_norm)
        self.act = Activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


class ResNet(ProbedModel):
    """CIFAR-style ResNet-(6 ``depth`` + 2) (He et al. 2016, section 4.2).

    ``stem`` (3x3 conv to ``width`` channels), three stages of ``depth`` basic blocks each with
    ``width``, ``2 width`` and ``4 width`` channels (the first block of stages 2 and 3 halves the
    resolution), named ``block1 .. block{3 depth}``, then ``pool`` (global average,
    ``(n, 4 width)``) and the readout. ``skip=False`` removes every shortcut (Canatar & Pehlevan
    vary this).
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        num_outputs: int,
        *,
        depth: int = 1,
        width: int = DEFAULT_WIDTH["resnet"],
        activation: str = "relu",
        batch_norm: bool = True,
        skip: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        c, _, _ = _image_shape(image_shape)
        _check_positive(depth=depth, width=width, num_outputs=num_outputs)
        stem_name, *block_names, pool_name = probe_layer_names("resnet", depth)
        blocks: dict[str, nn.Module] = {stem_name: Stem(c, width, activation, batch_norm)}
        c_in = width
        for index, name in enumerate(block_names):
            stage, b = divmod(index, depth)
            c_out = width * 2**stage
            stride = 2 if stage > 0 and b == 0 else 1
            blocks[name] = BasicBlock(c_in, c_out, stride, activation, batch_norm, skip)
            c_in = c_out
        blocks[pool_name] = GlobalAvgPool()
        self.blocks = nn.ModuleDict(blocks)
        self.readout = nn.Linear(c_in, num_outputs, device="meta")
        init_parameters(self, generator)


# ----------------------------------------------------------------------------------------------
# Initialization and construction
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def init_parameters(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Materialize ``model`` on the CPU and (re)initialize it from ``generator`` (in place).

    ``generator=None`` uses a fresh CPU generator seeded with 0 (never the global one).

    Linear and convolutional layers: weight and bias ``~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))``
    with ``fan_in = in_features`` or ``in_channels * kh * kw``; BatchNorm: scale 1, shift 0,
    running mean 0, running variance 1. Modules are visited in registration order, so the same
    generator state always gives the same weights. Returns ``model``.
    """
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    tensors = [*model.parameters(), *model.buffers()]
    if any(t.is_meta for t in tensors):
        model.to_empty(device="cpu")
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            fan_in = module.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            module.weight.uniform_(-bound, bound, generator=generator)
            if module.bias is not None:
                module.bias.uniform_(-bound, bound, generator=generator)
        elif isinstance(module, nn.BatchNorm2d):
            module.reset_parameters()
    return model


def build_model(
    config: ModelConfig,
    input_shape: Sequence[int],
    num_outputs: int,
    *,
    generator: torch.Generator | None = None,
    seed: int = 0,
) -> ProbedModel:
    """Build and initialize the model that ``config`` describes, on the CPU.

    ``input_shape`` is the per-example shape: ``(d,)`` or ``(C, H, W)`` (an MLP flattens either;
    the CNN and ResNet need ``(C, H, W)``). ``num_outputs`` is the readout width. Weights come
    from ``generator`` or, when it is omitted, a fresh CPU generator seeded with ``seed``.
    """
    arch = config.arch
    if generator is None:
        generator = torch.Generator().manual_seed(seed)
    if arch == "mlp":
        model: ProbedModel = MLP(
            math.prod(input_shape),
            num_outputs,
            depth=config.depth,
            width=config.width,
            activation=config.activation,
            bias=config.bias,
            generator=generator,
        )
    elif arch == "cnn":
        model = CNN(
            input_shape,
            num_outputs,
            depth=config.depth,
            width=config.width,
            activation=config.activation,
            batch_norm=config.batch_norm,
            generator=generator,
        )
    elif arch == "resnet":
        model = ResNet(
            input_shape,
            num_outputs,
            depth=config.depth,
            width=config.width,
            activation=config.activation,
            batch_norm=config.batch_norm,
            skip=config.skip,
            generator=generator,
        )
    else:  # pragma: no cover - the config validates arch
        raise ValueError(f"model.arch: unknown architecture {arch!r}; known: mlp, cnn, resnet")
    return model


def _image_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ValueError(
            f"convolutional models need image-shaped inputs (C, H, W), got input shape "
            f"{tuple(shape)}; load the data with flatten=False"
        )
    c, h, w = (int(s) for s in shape)
    return c, h, w


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
