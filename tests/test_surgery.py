"""Removing convolutional blocks with torch.fx: every model family, both strategies, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnngraph.errors import PruningError
from cnngraph.models import ModelSpec, build_model
from cnngraph.pruner.surgery import conv_names, load_pruned, remove_convolutions, save_pruned

STRATEGIES = ("reinit", "bridge")


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, pool: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn = nn.BatchNorm2d(cout)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        return F.max_pool2d(x, 2) if self.pool else x


class Nested(nn.Module):
    """Blocks as submodules with their own forward, F.relu, and a view-flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = Block(3, 8, pool=False)
        self.body = nn.ModuleList([Block(8, 16, pool=True), Block(16, 4, pool=False)])
        self.head = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.body:
            x = block(x)
        return self.head(x.view(x.size(0), -1))


def sequential() -> nn.Module:
    # channels 3 -> 8 -> 4 -> 4: removing conv 1 gives conv 2 more channels, removing conv 0 fewer.
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 4, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 4 * 4, 3),
    )  # fmt: skip


def strided() -> nn.Module:
    # conv 1 halves the spatial size: removing it changes what the Linear sees.
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(6 * 4 * 4, 2),
    )  # fmt: skip


X8 = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def w(model: nn.Module, name: str) -> torch.Tensor:
    return model.get_parameter(f"{name}.weight")


def ready(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return model.eval()


def convs_of(model: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d) for m in model.modules())


def untouched_equal(original: nn.Module, pruned: nn.Module, skip: set[str]) -> int:
    """Assert every tensor of the pruned model not in ``skip`` equals the original's; count them."""
    before = original.state_dict()
    count = 0
    for key, value in pruned.state_dict().items():
        if key.rsplit(".", 1)[0] in skip or key.startswith("pruning_bridge"):
            continue
        assert torch.equal(value, before[key]), key
        count += 1
    return count


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("k", [0, 1, 2])
def test_sequential_first_middle_last(strategy: str, k: int) -> None:
    model = ready(sequential())
    pruned = remove_convolutions(model, X8, [k], strategy)
    out = pruned.module(X8)
    assert out.shape == (2, 3)
    assert torch.isfinite(out).all()
    assert convs_of(pruned.module) == 3 - 1 + (1 if strategy == "bridge" and k != 2 else 0)
    assert pruned.removed == (k,)
    assert pruned.removed_names == (("0", "3", "6")[k],)
    skip = {r.name for r in pruned.rewired}
    assert untouched_equal(model, pruned.module, skip) > 0
    assert convs_of(model) == 3  # the original is untouched


def test_fewer_channels_reinit() -> None:
    # conv 0 (3 -> 8) goes: conv 1 (8 -> 4) now reads 3 channels.
    model = ready(sequential())
    pruned = remove_convolutions(model, X8, [0], "reinit")
    new = pruned.module.get_submodule("3")
    assert isinstance(new, nn.Conv2d) and new.in_channels == 3 and new.out_channels == 4
    assert [r.name for r in pruned.rewired] == ["3"]
    assert not torch.equal(new.weight[:, :3], w(model, "3")[:, :3])  # freshly initialised


def test_more_channels_both_strategies() -> None:
    # conv 1 (8 -> 4) goes: conv 2 (4 -> 4) now reads 8 channels.
    model = ready(sequential())
    reinit = remove_convolutions(model, X8, [1], "reinit")
    assert reinit.module.get_submodule("6").in_channels == 8
    bridge = remove_convolutions(model, X8, [1], "bridge")
    adapter = bridge.module.get_submodule("pruning_bridge_1.0")
    assert isinstance(adapter, nn.Conv2d) and (adapter.in_channels, adapter.out_channels) == (8, 4)
    assert adapter.kernel_size == (1, 1)
    assert torch.equal(w(bridge.module, "6"), w(model, "6"))  # consumer kept
    assert torch.equal(w(bridge.module, "10"), w(model, "10"))


def test_fewer_channels_bridge() -> None:
    model = ready(sequential())
    bridge = remove_convolutions(model, X8, [0], "bridge")
    adapter = bridge.module.get_submodule("pruning_bridge_0.0")
    assert isinstance(adapter, nn.Conv2d) and (adapter.in_channels, adapter.out_channels) == (3, 8)
    assert torch.equal(w(bridge.module, "3"), w(model, "3"))


def test_same_shape_needs_no_rewiring() -> None:
    # conv 2 maps 4 -> 4 channels at the same size: nothing downstream changes, in either strategy.
    model = ready(sequential())
    for strategy in STRATEGIES:
        pruned = remove_convolutions(model, X8, [2], strategy)
        assert pruned.rewired == ()
        assert untouched_equal(model, pruned.module, set()) == len(pruned.module.state_dict())


def test_last_conv_rewires_linear() -> None:
    model = ready(build_model(ModelSpec("small_cnn", in_channels=1, input_size=8, width=0.25)))
    x = torch.randn(1, 1, 8, 8)
    names = conv_names(model)
    pruned = remove_convolutions(model, x, [len(names) - 1], "reinit")
    (change,) = pruned.rewired
    assert change.name == "classifier.0"
    linear = pruned.module.get_submodule("classifier.0")
    assert linear.in_features == 8 * 2 * 2  # 32*0.25 channels at 2x2 instead of 16
    assert pruned.module(x).shape == (1, 10)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_spatial_change(strategy: str) -> None:
    model = ready(strided())
    pruned = remove_convolutions(model, X8, [1], strategy)
    assert pruned.module(X8).shape == (2, 2)
    if strategy == "reinit":
        names = sorted(r.name for r in pruned.rewired)
        assert names == ["4", "7"]  # the next conv (6 <- 4 channels) and the Linear (8x8 now)
        assert pruned.module.get_submodule("7").in_features == 6 * 8 * 8
    else:
        adapter = pruned.module.get_submodule("pruning_bridge_1")
        assert isinstance(adapter.get_submodule("1"), nn.AdaptiveAvgPool2d)
        assert torch.equal(w(pruned.module, "7"), w(model, "7"))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_nested_modules(strategy: str) -> None:
    model = ready(Nested())
    assert conv_names(model) == ["stem.conv", "body.0.conv", "body.1.conv"]
    for k in range(3):
        pruned = remove_convolutions(model, X8, [k], strategy)
        assert pruned.module(X8).shape == (2, 5)
        assert convs_of(pruned.module) == 2 + (1 if strategy == "bridge" else 0)
    # the BatchNorm of the removed block went with it
    pruned = remove_convolutions(model, X8, [1], strategy)
    with pytest.raises(AttributeError):
        pruned.module.get_submodule("body.0.bn")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_reference_vgg_small_cnn(strategy: str) -> None:
    model = ready(build_model(ModelSpec("small_cnn", in_channels=1, input_size=8, width=0.25)))
    x = torch.randn(3, 1, 8, 8)
    pruned = remove_convolutions(model, x, [0, 2, 3], strategy)
    assert pruned.module(x).shape == (3, 10)
    assert len(conv_names(pruned.module)) == 2 + (2 if strategy == "bridge" else 0)


def test_torchvision_vgg11_bn() -> None:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.vgg11_bn(weights=None, num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    assert len(conv_names(model)) == 8
    pruned = remove_convolutions(model, x, [1], "reinit")  # 64 -> 128 goes: conv 2 reads 64 channels
    assert pruned.module(x).shape == (1, 10)
    assert [r.name for r in pruned.rewired] == ["features.8"]
    assert pruned.module.get_submodule("features.8").in_channels == 64
    # AdaptiveAvgPool2d(7) keeps the classifier's input size: the first Linear is untouched
    assert torch.equal(w(pruned.module, "classifier.0"), w(model, "classifier.0"))


def test_refusals() -> None:
    model = ready(sequential())
    with pytest.raises(PruningError, match="all 3 convolutions"):
        remove_convolutions(model, X8, [0, 1, 2])
    with pytest.raises(PruningError, match="out of range"):
        remove_convolutions(model, X8, [3])
    with pytest.raises(PruningError, match="out of range"):
        remove_convolutions(model, X8, [-1])
    with pytest.raises(PruningError, match="strategy"):
        remove_convolutions(model, X8, [0], "magic")
    with pytest.raises(PruningError, match=r"no nn\.Conv2d"):
        remove_convolutions(nn.Sequential(nn.Flatten(), nn.Linear(192, 2)), X8, [0])


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        return (y + F.relu(self.b(y))).mean(dim=(2, 3))


def test_refuses_what_is_not_removable() -> None:
    # 'a' feeds both the branch and the addition: removing it would leave 3 channels to add to 8.
    with pytest.raises(PruningError, match=r"convolution 0 \('a'\) is not removable: its output forks"):
        remove_convolutions(ready(Residual()), X8, [0], "reinit")
    # 'b' is a residual branch with an identity shortcut: the model becomes y.mean(...)
    model = ready(Residual())
    pruned = remove_convolutions(model, X8, [1], "reinit")
    assert pruned.rewired == () and [u.kind for u in pruned.units] == ["residual-branch"]
    with torch.no_grad():
        assert torch.allclose(pruned.module(X8), model.a(X8).mean(dim=(2, 3)))


class Scaled(nn.Module):
    """A chain convolution whose output meets a fixed per-channel scale: nothing can be rebuilt."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.scale = nn.Parameter(torch.ones(1, 8, 1, 1))
        self.b = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x) * self.scale).mean(dim=(2, 3))


def test_refuses_what_it_cannot_rewire() -> None:
    # removing 'a' leaves 3 channels to multiply by an 8-channel scale: there is no consumer to rebuild.
    with pytest.raises(PruningError, match="cannot be rewired"):
        remove_convolutions(ready(Scaled()), X8, [0], "reinit")


def test_untraceable_model() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Conv2d(3, 3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c(x) if x.sum() > 0 else x

    with pytest.raises(PruningError, match="cannot trace"):
        remove_convolutions(Branchy(), X8, [0])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_save_load_round_trip(tmp_path: Path, strategy: str) -> None:
    spec = ModelSpec("small_cnn", num_classes=4, in_channels=1, input_size=8, width=0.25)
    model = ready(build_model(spec))
    x = torch.randn(2, 1, 8, 8)
    pruned = remove_convolutions(model, x[:1], [1, 4], strategy)
    pruned.module.eval()
    pt, js = save_pruned(tmp_path / "pruned.pt", pruned, spec, {"note": "test"})
    assert pt.is_file() and js.is_file()
    assert not list(tmp_path.glob(".*partial"))
    obj = torch.load(pt, weights_only=True)
    assert set(obj["state_dict"]) == set(pruned.module.state_dict())
    loaded = load_pruned(pt)
    with torch.no_grad():
        assert torch.equal(loaded(x), pruned.module(x))
    js.unlink()  # the recipe inside the checkpoint is enough too
    with torch.no_grad():
        assert torch.equal(load_pruned(pt)(x), pruned.module(x))


def test_reinitialised_layers_are_seeded() -> None:
    """The same removal with the same seed gives the same new weights; another seed does not."""
    torch.manual_seed(0)
    model = build_model(ModelSpec("small_cnn", in_channels=1, input_size=16))
    x = torch.zeros(1, 1, 16, 16)
    a = remove_convolutions(model, x, [0], "reinit", seed=3).module.state_dict()
    b = remove_convolutions(model, x, [0], "reinit", seed=3).module.state_dict()
    c = remove_convolutions(model, x, [0], "reinit", seed=4).module.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
