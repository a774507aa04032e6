"""Models: shapes, probe layers, parameter groups, seeded initialization."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ckalab.config import ModelConfig
from ckalab.layer_names import probe_layer_names
from ckalab.models import ACTIVATIONS, CNN, MLP, ResNet, build_model, init_parameters


def _init(model: nn.Module, seed: int = 0) -> nn.Module:
    """Re-initialize an (already initialized) model from a seeded generator."""
    return init_parameters(model, torch.Generator().manual_seed(seed))


def test_mlp_shapes_and_probes() -> None:
    model = _init(MLP(12, 3, depth=3, width=7))
    x = torch.randn(5, 12)
    out, probes = model.forward_with_probes(x)
    assert model.probe_layers == ("hidden1", "hidden2", "hidden3")
    assert out.shape == (5, 3)
    assert list(probes) == list(model.probe_layers)
    assert all(p.shape == (5, 7) for p in probes.values())
    torch.testing.assert_close(out, model(x), rtol=0, atol=0)
    # The readout is linear in the last probe.
    torch.testing.assert_close(out, model.readout(probes["hidden3"]))


def test_mlp_flattens_images_and_subsets_probes() -> None:
    model = _init(MLP(2 * 3 * 3, 2, depth=2, width=4))
    out, probes = model.forward_with_probes(torch.randn(4, 2, 3, 3), ["hidden2"])
    assert out.shape == (4, 2)
    assert list(probes) == ["hidden2"]
    with pytest.raises(ValueError, match="unknown probe layers"):
        model.forward_with_probes(torch.randn(4, 18), ["nope"])


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_every_activation(name: str) -> None:
    model = _init(MLP(3, 2, depth=1, width=4, activation=name))
    _, probes = model.forward_with_probes(torch.randn(6, 3))
    h = probes["hidden1"]
    pre = model.blocks["hidden1"].linear(torch.zeros(1, 3))
    assert h.shape == (6, 4) and torch.isfinite(h).all()
    if name == "linear":
        torch.testing.assert_close(model.blocks["hidden1"](torch.zeros(1, 3)), pre)


def test_unknown_activation_and_bad_sizes() -> None:
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        MLP(3, 2, activation="swish")
    with pytest.raises(ValueError, match="depth must be >= 1"):
        MLP(3, 2, depth=0)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        CNN((16,), 2)


def _check_groups(model: nn.Module) -> None:
    groups = model.parameter_groups()
    assert set(groups) == {"features", "readout"}
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters()}
    assert {id(p) for p in groups["readout"]} == {id(p) for p in model.readout.parameters()}
    blocks = model.block_parameter_groups()
    block_ids = [id(p) for ps in blocks.values() for p in ps]
    assert sorted(block_ids) == sorted(ids)
    assert list(blocks)[-1] == "readout"


def test_parameter_groups_partition_parameters() -> None:
    _check_groups(_init(MLP(5, 2, depth=2, width=3)))
    _check_groups(_init(CNN((1, 8, 8), 2, depth=2, width=4)))
    _check_groups(_init(ResNet((3, 8, 8), 4, depth=1, width=4)))


def test_cnn_shapes() -> None:
    model = _init(CNN((1, 8, 8), 3, depth=3, width=4))
    assert model.probe_layers == ("conv1", "conv2", "conv3", "pool")
    out, probes = model.forward_with_probes(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 3)
    assert probes["conv1"].shape == (2, 4 * 4 * 4)
    assert probes["conv3"].shape == (2, 4 * 1 * 1)
    assert probes["pool"].shape == (2, 4)


@pytest.mark.parametrize("skip", [True, False])
def test_resnet_shapes_and_skip(skip: bool) -> None:
    model = _init(ResNet((3, 8, 8), 10, depth=2, width=4, skip=skip))
    names = ("stem", *(f"block{i}" for i in range(1, 7)), "pool")
    assert model.probe_layers == names
    out, probes = model.forward_with_probes(torch.randn(3, 3, 8, 8))
    assert out.shape == (3, 10)
    assert probes["stem"].shape == (3, 4 * 8 * 8)
    assert probes["block3"].shape == (3, 8 * 4 * 4)
    assert probes["block6"].shape == (3, 16 * 2 * 2)
    assert probes["pool"].shape == (3, 16)
    has_shortcut = any("shortcut" in name for name, _ in model.named_parameters())
    assert has_shortcut == skip


def test_spatial_mean_probes() -> None:
    model = CNN((1, 8, 8), 2, depth=2, width=3)
    x = torch.randn(5, 1, 8, 8)
    out, flat = model.forward_with_probes(x)
    out2, mean = model.forward_with_probes(x, spatial="mean")
    torch.testing.assert_close(out, out2, rtol=0, atol=0)
    assert mean["conv1"].shape == (5, 3) and flat["conv1"].shape == (5, 3 * 4 * 4)
    torch.testing.assert_close(mean["conv1"], flat["conv1"].view(5, 3, 16).mean(2))
    torch.testing.assert_close(mean["pool"], flat["pool"])
    with pytest.raises(ValueError, match="spatial"):
        model.forward_with_probes(x, spatial="max")


def test_resnet_skip_changes_the_function() -> None:
    x = torch.randn(4, 3, 8, 8)
    a = _init(ResNet((3, 8, 8), 2, depth=1, width=4, skip=True)).eval()
    b = _init(ResNet((3, 8, 8), 2, depth=1, width=4, skip=False)).eval()
    assert not torch.allclose(a(x), b(x))


def test_init_is_seeded_bounded_and_pure() -> None:
    before = torch.random.get_rng_state()
    a = _init(MLP(20, 2, depth=2, width=8), seed=1)
    b = _init(MLP(20, 2, depth=2, width=8), seed=1)
    c = _init(MLP(20, 2, depth=2, width=8), seed=2)
    assert torch.equal(before, torch.random.get_rng_state())
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.readout.weight, c.readout.weight)
    w = a.blocks["hidden1"].linear.weight
    assert w.abs().max() <= 1 / math.sqrt(20)
    assert w.std() > 0.5 / math.sqrt(3 * 20)  # roughly U(-b, b): std b / sqrt(3)


def test_constructor_initializes_from_its_generator() -> None:
    a = MLP(6, 2, width=3, generator=torch.Generator().manual_seed(4))
    b = _init(MLP(6, 2, width=3), seed=4)
    assert torch.equal(a.readout.weight, b.readout.weight)
    assert torch.equal(MLP(6, 2, width=3).readout.weight, _init(MLP(6, 2, width=3)).readout.weight)


def test_batchnorm_initialized() -> None:
    model = _init(ResNet((1, 4, 4), 2, depth=1, width=2))
    bn = model.blocks["stem"].norm
    assert isinstance(bn, nn.BatchNorm2d)
    assert torch.equal(bn.weight, torch.ones(2)) and torch.equal(bn.running_var, torch.ones(2))
    assert not any(p.is_meta for p in model.parameters())


@pytest.mark.parametrize(
    ("arch", "shape", "probes"),
    [
        ("mlp", (1, 4, 4), ("hidden1", "hidden2")),
        ("cnn", (1, 4, 4), ("conv1", "conv2", "pool")),
        ("resnet", (1, 4, 4), ("stem", *(f"block{i}" for i in range(1, 7)), "pool")),
    ],
)
def test_build_model(arch: str, shape: tuple[int, ...], probes: tuple[str, ...]) -> None:
    config = ModelConfig(arch=arch, depth=2, width=4, activation="tanh")
    model = build_model(config, shape, 3, seed=5)
    assert model.probe_layers == probes == probe_layer_names(arch, 2)
    assert model(torch.randn(2, *shape)).shape == (2, 3)
    again = build_model(config, shape, 3, seed=5)
    assert all(
        torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters(), strict=True)
    )


@pytest.mark.parametrize("arch", ["mlp", "cnn", "resnet"])
@pytest.mark.parametrize("depth", [1, 3])
def test_probe_layer_names_are_the_built_models_names(arch: str, depth: int) -> None:
    """The torch-free naming rule (used to validate ``tracking.layers`` up front) is the one
    the models build with."""
    model = build_model(ModelConfig(arch=arch, depth=depth, width=2), (1, 4, 4), 2)
    assert model.probe_layers == probe_layer_names(arch, depth)
    if arch == "resnet":  # three stages, the first block of stages 2 and 3 halving resolution
        widths = [model.blocks[f"block{i}"].conv2.out_channels for i in range(1, 3 * depth + 1)]
        assert widths == [2] * depth + [4] * depth + [8] * depth
