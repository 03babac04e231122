"""Removing residual branches (docs/METHOD.md section 8): the block becomes its shortcut.

The oracle for every removal: the original model with the last batch norm of each removed branch
set to zero (weight and bias) computes ``0 + shortcut``, which is exactly what the pruned model
must compute, so both must give the same output.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from cnngraph.errors import ModelError, PruningError
from cnngraph.models import ModelSpec, build_model, count_parameters
from cnngraph.pruner.surgery import load_pruned, remove_convolutions, save_pruned
from cnngraph.pruner.units import RESIDUAL, Unit, find_units


def randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and batch-norm statistics, eval mode: so that a wrong wire shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def with_branches_silenced(model: nn.Module, branches: list[Unit]) -> nn.Module:
    """A copy whose removed branches output zero: their last batch norm scaled and shifted to 0."""
    silenced = copy.deepcopy(model)
    for unit in branches:
        last_bn = [n for n in unit.graph_nodes if isinstance(_module(silenced, n), nn.BatchNorm2d)][-1]
        bn = _module(silenced, last_bn)
        assert isinstance(bn, nn.BatchNorm2d)
        with torch.no_grad():
            bn.weight.zero_()
            bn.bias.zero_()
    return silenced


def _module(model: nn.Module, node_name: str) -> nn.Module | None:
    """The module an fx node name (``layer1_0_bn2``) calls, if any."""
    for name, module in model.named_modules():
        if name.replace(".", "_") == node_name:
            return module
    return None


def removed_parameters(model: nn.Module, units: list[Unit]) -> int:
    """Parameters of the removed branches' convolutions and batch norms, counted on the original."""
    total = 0
    for unit in units:
        for node in unit.graph_nodes:
            module = _module(model, node)
            if isinstance(module, nn.Conv2d | nn.BatchNorm2d):
                total += count_parameters(module)
    return total


def check_removal(model: nn.Module, x: torch.Tensor, unit_ids: list[int]) -> nn.Module:
    """Remove the units ``unit_ids`` and check shape, parameters, kept weights and the oracle."""
    units = find_units(model)
    chosen = [units[u] for u in unit_ids]
    assert all(u.kind == RESIDUAL for u in chosen)
    convs = sorted(k for u in chosen for k in u.convs)
    pruned = remove_convolutions(model, x, convs, "reinit")
    assert pruned.rewired == ()
    assert [u.convs for u in pruned.units] == [u.convs for u in chosen]
    with torch.no_grad():
        got = pruned.module(x)
        expected = with_branches_silenced(model, chosen)(x)
        original = model(x)
    assert got.shape == original.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, original, rtol=1e-3, atol=1e-3)  # the branches did matter
    assert count_parameters(pruned.module) == count_parameters(model) - removed_parameters(model, chosen)
    before = model.state_dict()
    after = pruned.module.state_dict()
    assert set(after) < set(before)
    assert all(torch.equal(after[key], before[key]) for key in after)
    remaining = {k for u in find_units(pruned.module) for k in u.conv_names}
    assert remaining.isdisjoint({n for u in chosen for n in u.conv_names})
    return pruned.module


@pytest.fixture(scope="module")
def resnet20() -> nn.Module:
    torch.manual_seed(0)
    return randomised(build_model(ModelSpec("resnet20", num_classes=5, width=0.5)))


X16 = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def test_resnet20_identity_and_projection_branches(resnet20: nn.Module) -> None:
    # unit 1: layer1.0 (identity); unit 4: layer2.0 (projection shortcut); unit 11: layer3.2
    pruned = check_removal(resnet20, X16, [1, 4, 11])
    assert pruned.get_submodule("layer2.0.shortcut.0").weight.shape == (16, 8, 1, 1)
    with pytest.raises(AttributeError):
        pruned.get_submodule("layer2.0.conv1")


def test_resnet20_every_branch_of_a_stage_and_every_branch(resnet20: nn.Module) -> None:
    check_removal(resnet20, X16, [1, 2, 3])  # all of stage 1: the stem feeds stage 2 directly
    every = [u.index for u in find_units(resnet20) if u.removable]
    pruned = check_removal(resnet20, X16, every)
    names = [n for n, m in pruned.named_modules() if isinstance(m, nn.Conv2d)]
    assert names == ["conv1", "layer2.0.shortcut.0", "layer3.0.shortcut.0"]


def test_resnet20_refusals(resnet20: nn.Module) -> None:
    with pytest.raises(PruningError, match=r"convolution 1 belongs to residual branch 'layer1.0' \(c1, c2\)"):
        remove_convolutions(resnet20, X16, [1])
    with pytest.raises(PruningError, match=r"convolution 0 \('conv1'\) is not removable: its output forks"):
        remove_convolutions(resnet20, X16, [0])
    with pytest.raises(PruningError, match=r"projection shortcut of residual branch 'layer2\.0'"):
        remove_convolutions(resnet20, X16, [7, 8, 9])


def test_resnet20_save_and_reload(resnet20: nn.Module, tmp_path: Path) -> None:
    spec = ModelSpec("resnet20", num_classes=5, width=0.5)
    model = build_model(spec)
    model.load_state_dict(resnet20.state_dict())
    model.eval()
    pruned = remove_convolutions(model, X16[:1], [3, 4, 12, 13], "reinit")
    pt, js = save_pruned(tmp_path / "pruned.pt", pruned, spec)
    recipe = json.loads(js.read_text())
    assert recipe["version"] == 2
    assert [(u["kind"], u["convolutions"], u["name"]) for u in recipe["units"]] == [
        (RESIDUAL, [3, 4], "layer1.1"),
        (RESIDUAL, [12, 13], "layer2.2"),
    ]
    loaded = load_pruned(pt)
    with torch.no_grad():
        assert torch.equal(loaded(X16), pruned.module.eval()(X16))
    recipe["units"][0]["convolutions"] = [5, 6]
    js.write_text(json.dumps(recipe))
    with pytest.raises(ModelError, match="other units than the rebuilt model"):
        load_pruned(pt)


def test_torchvision_resnet18_basic_and_projection_branches() -> None:
    torch.manual_seed(0)
    model = randomised(torchvision.models.resnet18(weights=None, num_classes=10))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    units = find_units(model)
    basic = next(u for u in units if u.name == "layer1.1")
    projected = next(u for u in units if u.name == "layer2.0")
    assert basic.shortcut == "identity" and projected.shortcut == "layer2.0.downsample.0"
    pruned = check_removal(model, x, [basic.index, projected.index])
    assert pruned(x).shape == (1, 10)


def test_torchvision_mobilenet_v2_inverted_residuals() -> None:
    torch.manual_seed(0)
    model = randomised(torchvision.models.mobilenet_v2(weights=None, num_classes=10))
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    branches = [u.index for u in find_units(model) if u.kind == RESIDUAL]
    pruned = check_removal(model, x, [branches[0], branches[4], branches[-1]])
    assert pruned(x).shape == (1, 10)


def test_mobilenet_v2_chain_before_a_depthwise_convolution() -> None:
    """An expansion convolution is a chain unit; under reinit its depthwise consumer cannot take
    other channels (one clear line), under bridge an adapter keeps it."""
    torch.manual_seed(0)
    model = randomised(torchvision.models.mobilenet_v2(weights=None, num_classes=10))
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    expansion = next(u for u in find_units(model) if u.name == "features.2.conv.0.0")
    assert expansion.kind == "chain"
    with pytest.raises(PruningError) as refused:
        remove_convolutions(model, x, list(expansion.convs), "reinit")
    message = str(refused.value)
    assert "'features.2.conv.1.0' is a grouped convolution" in message and "\n" not in message
    pruned = remove_convolutions(model, x, list(expansion.convs), "bridge")
    assert [r.kind for r in pruned.rewired] == ["bridge"]
    assert pruned.module(x).shape == (1, 10)
