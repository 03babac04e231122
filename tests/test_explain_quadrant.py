"""A model that sees only the top-left quadrant: the explanation must point there, faithfully."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cnngraph.explain.api import explain
from cnngraph.explain.faithfulness import evaluate
from cnngraph.explain.methods import GraphAttribution, RandomAttribution, saliency

SIZE = 16


class QuadrantNet(nn.Module):
    """Hand-set weights: the input is multiplied by a top-left-quadrant mask, two averaging
    convolutions with ReLU follow, and class 0's logit is 40 x the mean activation minus 8, so
    the output depends on the top-left 8x8 pixels only."""

    def __init__(self) -> None:
        super().__init__()
        mask = torch.zeros(1, 1, SIZE, SIZE)
        mask[..., : SIZE // 2, : SIZE // 2] = 1.0
        self.register_buffer("mask", mask)
        self.conv1 = nn.Conv2d(1, 2, 3, padding=1)
        self.conv2 = nn.Conv2d(2, 2, 3, padding=1)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.conv1.weight.fill_(1.0 / 9)
            self.conv1.bias.zero_()
            self.conv2.weight.fill_(1.0 / 18)
            self.conv2.bias.zero_()
            self.fc.weight.copy_(torch.tensor([[20.0, 20.0], [0.0, 0.0]]))
            self.fc.bias.copy_(torch.tensor([-4.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.mask
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.fc(x.mean(dim=(2, 3)))


def images(count: int = 6) -> torch.Tensor:
    return torch.rand(count, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.5


def test_the_output_depends_on_the_quadrant_only() -> None:
    model = QuadrantNet().eval()
    x = images(2)
    y = x.clone()
    y[..., SIZE // 2 :, :] = 0.0
    y[..., :, SIZE // 2 :] = 0.0
    assert torch.allclose(model(x), model(y))


def test_the_explanation_puts_its_mass_in_the_quadrant() -> None:
    model = QuadrantNet().eval()
    for result in explain(model, images()):
        heat = result.heatmap
        inside = heat[: SIZE // 2, : SIZE // 2].sum()
        assert inside / heat.sum() > 0.75
        assert result.predicted == 0


def test_its_deletion_auc_beats_the_random_map() -> None:
    model = QuadrantNet().eval()
    x = images()
    with torch.no_grad():
        targets = model(x).argmax(1).numpy()
    fill = torch.zeros(1)
    graph = saliency(GraphAttribution(model, (1, SIZE, SIZE)).attribute(x, targets))
    random = saliency(RandomAttribution(seed=0).attribute(x, targets))
    ours = evaluate(model, x, graph, targets, fill)
    chance = evaluate(model, x, random, targets, fill)
    assert ours.deletion_auc.mean() < chance.deletion_auc.mean() - 0.1
    assert (ours.deletion_auc < chance.deletion_auc).all()
    assert ours.insertion_auc.mean() > chance.insertion_auc.mean()
    assert np.isfinite(ours.drop).all()


def test_the_top_level_api_is_the_same_call() -> None:
    import cnngraph

    model = QuadrantNet().eval()
    x = images(2)
    top = cnngraph.explain(model, x)
    direct = explain(model, x)
    assert [t.heatmap.tolist() for t in top] == [d.heatmap.tolist() for d in direct]
    explainer = cnngraph.Explainer(model, (1, SIZE, SIZE), cnngraph.ExplainOptions(max_per_node=2, sigma=0))
    assert explainer.explain(x)[0].options["max_per_node"] == 2


def test_hooks_are_gone_after_a_failing_forward() -> None:
    import pytest

    from cnngraph.errors import ModelError
    from cnngraph.explain.image_network import ImageNetworks

    model = QuadrantNet().eval()
    nets = ImageNetworks(model, (1, SIZE, SIZE))

    def broken(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")

    model.fc.forward = broken  # type: ignore[method-assign]
    with pytest.raises(ModelError, match="boom"):
        nets.forward(images(1))
    assert all(not m._forward_hooks for m in model.modules())
