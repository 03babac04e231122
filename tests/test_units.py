"""Removable units (docs/METHOD.md section 8) found from one torch.fx trace, checked against the
structure each architecture is built from (its module names), not against our own output."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from cnngraph.models import ModelSpec, build_model
from cnngraph.pruner.units import CHAIN, NOT_REMOVABLE, RESIDUAL, Unit, conv_names, find_units


def expected_resnet_units(model: nn.Module, stem: str, shortcut: str) -> list[tuple[str, tuple[str, ...]]]:
    """``(kind, convolution names)`` per unit, from the modules: stem, then per block its branch
    (every convolution of the block but the shortcut) and its projection, in execution order."""
    units: list[tuple[str, tuple[str, ...]]] = [(NOT_REMOVABLE, (stem,))]
    for name, block in model.named_modules():
        if not hasattr(block, "conv2") or not hasattr(block, "bn2"):
            continue
        convs = tuple(
            f"{name}.{child}" for child, m in block.named_children() if isinstance(m, nn.Conv2d)
        )  # conv1, conv2 (, conv3): the branch
        units.append((RESIDUAL, convs))
        if getattr(block, shortcut) is not None:
            units.append((NOT_REMOVABLE, (f"{name}.{shortcut}.0",)))
    return units


def kinds_and_names(units: list[Unit]) -> list[tuple[str, tuple[str, ...]]]:
    return [(u.kind, u.conv_names) for u in units]


def check_partition(units: list[Unit], model: nn.Module) -> None:
    """Every convolution in exactly one unit; units numbered in order; names match the trace."""
    names = conv_names(model)
    covered = sorted(k for u in units for k in u.convs)
    assert covered == list(range(len(names)))
    assert [u.index for u in units] == list(range(len(units)))
    assert [min(u.convs) for u in units] == sorted(min(u.convs) for u in units)
    for u in units:
        assert u.conv_names == tuple(names[k] for k in u.convs)
        assert bool(u.reason) == (u.kind == NOT_REMOVABLE)


@pytest.mark.parametrize(("source", "blocks"), [("resnet20", 3), ("resnet56", 9)])
def test_cifar_resnets(source: str, blocks: int) -> None:
    model = build_model(ModelSpec(source, width=0.25)).eval()
    units = find_units(model)
    check_partition(units, model)
    assert len(conv_names(model)) == 6 * blocks + 1 + 2  # 6n + 2 layers minus the linear, plus 2 projections
    assert kinds_and_names(units) == expected_resnet_units(model, "conv1", "shortcut")
    branches = [u for u in units if u.kind == RESIDUAL]
    assert len(branches) == 3 * blocks
    shortcuts = [u.shortcut for u in branches]
    assert shortcuts.count("identity") == 3 * blocks - 2
    assert [s for s in shortcuts if s != "identity"] == ["layer2.0.shortcut.0", "layer3.0.shortcut.0"]
    assert branches[0].name == "layer1.0" and branches[0].describe() == "residual branch (identity shortcut)"
    stem = units[0]
    assert "forks to 2 operations" in stem.reason and "layer1.0.conv1" in stem.reason
    projection = next(u for u in units if u.conv_names == ("layer2.0.shortcut.0",))
    assert projection.reason == "it is the projection shortcut of residual branch 'layer2.0'"


def test_cifar_resnet_shapes_and_width() -> None:
    model = build_model(ModelSpec("resnet20", num_classes=7, in_channels=1, width=0.5)).eval()
    assert model(torch.zeros(2, 1, 12, 12)).shape == (2, 7)
    widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert sorted(set(widths)) == [8, 16, 32]
    strided = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    assert strided == ["layer2.0.conv1", "layer2.0.shortcut.0", "layer3.0.conv1", "layer3.0.shortcut.0"]


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_torchvision_resnets(arch: str) -> None:
    model = torchvision.models.get_model(arch, weights=None, num_classes=10).eval()
    units = find_units(model)
    check_partition(units, model)
    assert kinds_and_names(units) == expected_resnet_units(model, "conv1", "downsample")


def test_mobilenet_v2_inverted_residuals() -> None:
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=10).eval()
    units = find_units(model)
    check_partition(units, model)
    residual_blocks = [
        name for name, m in model.named_modules() if getattr(m, "use_res_connect", False) is True
    ]
    branches = [u for u in units if u.kind == RESIDUAL]
    assert [u.name for u in branches] == [f"{name}.conv" for name in residual_blocks]
    assert len(branches) == 10
    for u in branches:
        assert u.shortcut == "identity" and len(u.convs) == 3
        depthwise = model.get_submodule(u.conv_names[1])
        assert isinstance(depthwise, nn.Conv2d) and depthwise.groups == depthwise.in_channels > 1
    # the block before each residual stage ends in a projection whose output forks
    fork = next(u for u in units if u.conv_names == ("features.2.conv.2",))
    assert fork.kind == NOT_REMOVABLE and "forks to 2 operations" in fork.reason


def test_vgg_every_conv_is_a_chain_unit() -> None:
    model = torchvision.models.vgg11_bn(weights=None, num_classes=10).eval()
    units = find_units(model)
    assert [u.kind for u in units] == [CHAIN] * 8
    assert [u.convs for u in units] == [(k,) for k in range(8)]
    small = build_model(ModelSpec("small_cnn", in_channels=1, input_size=8, width=0.25))
    assert [u.kind for u in find_units(small)] == [CHAIN] * 5


class SqueezeExcite(nn.Module):
    """conv -> SE gate (pool, 1x1, 1x1, sigmoid, multiply) -> conv -> dense-style concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1 = nn.Conv2d(8, 2, 1)
        self.fc2 = nn.Conv2d(2, 8, 1)
        self.dense = nn.Conv2d(8, 4, 3, padding=1)
        self.transition = nn.Conv2d(12, 6, 1)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        x = x * gate
        x = torch.cat([x, F.relu(self.dense(x))], dim=1)
        x = F.avg_pool2d(F.relu(self.transition(x)), 2)
        return self.head(x.mean(dim=(2, 3)).view(x.size(0), -1))


def test_gates_and_concatenations_are_not_removable() -> None:
    model = SqueezeExcite().eval()
    units = find_units(model)
    check_partition(units, model)
    verdicts = {u.conv_names[0]: (u.kind, u.reason) for u in units}
    assert verdicts["stem"][0] == NOT_REMOVABLE and "forks to 2 operations" in verdicts["stem"][1]
    assert verdicts["fc1"] == (NOT_REMOVABLE, "the data also reaches the output around it (a side path of a "
                               "branching block)")  # fmt: skip
    assert verdicts["fc2"][0] == NOT_REMOVABLE and "merged with another tensor by 'mul'" in verdicts["fc2"][1]
    assert (
        verdicts["dense"][0] == NOT_REMOVABLE
        and "merged with another tensor by 'cat'" in verdicts["dense"][1]
    )
    # the transition reads the concatenation and feeds the head alone: a chain convolution
    assert verdicts["transition"] == (CHAIN, "")


class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 3, 3, padding=1)
        self.b = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(self.a(x)))


def test_shared_convolution_is_not_removable() -> None:
    units = find_units(Shared())
    assert [(u.kind, u.conv_names) for u in units] == [
        (NOT_REMOVABLE, ("a",)),
        (NOT_REMOVABLE, ("a",)),
        (CHAIN, ("b",)),
    ]
    assert units[0].reason == "the module is called 2 times (shared weights)"


class TwoBranches(nn.Module):
    """``bn(conv3x3(x)) + bn(conv1x1(x))``: the 1x1 side is the projection, the other the branch;
    ``branch(x) + other(x)`` with two-convolution sides is no residual branch at all."""

    def __init__(self, pair: bool) -> None:
        super().__init__()
        self.pair = pair
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.a2 = nn.Conv2d(4, 4, 3, padding=1)
        self.p = nn.Conv2d(4, 4, 1)
        self.p2 = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.pair:
            return self.a2(self.a(x)) + self.p2(self.p(x))
        return self.a(x) + self.p(x)


def test_which_operand_is_the_branch() -> None:
    units = find_units(TwoBranches(pair=False))
    branch = next(u for u in units if u.kind == RESIDUAL)
    assert branch.conv_names == ("a",) and branch.shortcut == "p"
    units = find_units(TwoBranches(pair=True))
    assert all(u.kind == NOT_REMOVABLE for u in units)


class IdentityModuleShortcut(nn.Module):
    """A block whose shortcut is an ``nn.Identity`` module (a leaf that fx keeps as a call)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.shortcut = nn.Identity()
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        return self.head(F.relu(self.bn(self.conv(x)) + self.shortcut(x)))


def test_identity_module_on_the_shortcut() -> None:
    from cnngraph.pruner.surgery import remove_convolutions

    model = IdentityModuleShortcut().eval()
    units = find_units(model)
    assert [(u.kind, u.conv_names, u.shortcut) for u in units] == [
        (NOT_REMOVABLE, ("stem",), ""),
        (RESIDUAL, ("conv",), "identity"),
        (CHAIN, ("head",), ""),
    ]
    x = torch.randn(1, 3, 6, 6)
    pruned = remove_convolutions(model, x, [1])
    with torch.no_grad():
        torch.testing.assert_close(pruned.module(x), model.head(F.relu(F.relu(model.stem(x)))))
