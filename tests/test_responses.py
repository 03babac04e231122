"""Class responses: hooks, per-class means, node descriptors, response kinds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnngraph.errors import ConfigError, ModelError
from cnngraph.mapping.responses import (
    class_mean_responses,
    class_responses,
    filter_median,
    median_by_kthvalue,
    node_values,
)
from cnngraph.mapping.trace import trace_model


def hand_model() -> nn.Sequential:
    """conv 1x1 with filters (1, -2, 3), ReLU, then a 3x3 'same' conv summing everything."""
    first = nn.Conv2d(1, 3, 1)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([1.0, -2.0, 3.0]).view(3, 1, 1, 1))
        first.bias.zero_()  # type: ignore[union-attr]
    second = nn.Conv2d(3, 1, 3, padding=1, bias=False)
    nn.init.ones_(second.weight)
    return nn.Sequential(first, nn.ReLU(), second, nn.ReLU())


IMAGES = torch.tensor(
    [
        [[1.0, -1.0], [0.0, 2.0]],
        [[3.0, 1.0], [0.0, 0.0]],
        [[-2.0, 0.0], [1.0, 1.0]],
    ]
).unsqueeze(1)
CLASSES = [np.array([0, 1]), np.array([2])]


def test_class_means_match_hand_computation() -> None:
    model = hand_model()
    traced = trace_model(model, (1, 2, 2))
    r1, r2 = class_mean_responses(model, traced, IMAGES, CLASSES, batch_size=2)
    # class 0 has 2 images; the ReLU applies per image, before the mean
    relu_per_image = torch.stack([F.relu(w * IMAGES[:2, 0]).mean(0) for w in (1.0, -2.0, 3.0)])
    torch.testing.assert_close(r1[0], relu_per_image)
    torch.testing.assert_close(r1[1], torch.stack([F.relu(w * IMAGES[2, 0]) for w in (1.0, -2.0, 3.0)]))
    # the second conv sums all 4 positions of all 3 channels at every position (2x2 grid)
    per_image = torch.stack(
        [torch.stack([F.relu(w * img[0]) for w in (1.0, -2.0, 3.0)]).sum() for img in IMAGES]
    )
    assert r2.shape == (2, 1, 2, 2)
    torch.testing.assert_close(r2[0, 0], torch.full((2, 2), float(per_image[:2].mean())))
    torch.testing.assert_close(r2[1, 0], torch.full((2, 2), float(per_image[2])))


def test_conv_response_is_raw_and_can_be_negative() -> None:
    model = hand_model()
    traced = trace_model(model, (1, 2, 2))
    (r1, _) = class_mean_responses(model, traced, IMAGES, CLASSES, response="conv")
    expected = torch.stack([w * IMAGES[2, 0] for w in (1.0, -2.0, 3.0)])
    torch.testing.assert_close(r1[1], expected)
    assert (r1 < 0).any()


def test_batch_size_does_not_change_values() -> None:
    model = hand_model()
    traced = trace_model(model, (1, 2, 2))
    a = class_responses(model, traced, IMAGES, CLASSES, batch_size=1)
    b = class_responses(model, traced, IMAGES, CLASSES, batch_size=64)
    for d in ("mean", "median"):
        np.testing.assert_allclose(a[d], b[d], rtol=1e-6)
        assert a[d].dtype == np.float32 and a[d].shape == (2, 8)


def test_node_values_mean_and_median_over_filters() -> None:
    r = torch.tensor([1.0, 2.0, 3.0, 10.0]).view(1, 4, 1, 1)
    values = node_values([r])
    assert values["mean"].tolist() == [[4.0]]
    assert values["median"].tolist() == [[2.5]]  # two middle values averaged
    assert filter_median(torch.tensor([5.0, 1.0, 3.0]).view(1, 3, 1, 1)).item() == 3.0


@pytest.mark.parametrize("filters", [1, 2, 5, 8])
def test_both_median_paths_equal_numpy(filters: int) -> None:
    r = torch.randn(3, filters, 4, 5, generator=torch.Generator().manual_seed(filters))
    expected = np.median(r.numpy(), axis=1)
    np.testing.assert_array_equal(filter_median(r).numpy(), expected)  # CPU: numpy itself
    np.testing.assert_allclose(median_by_kthvalue(r).numpy(), expected, rtol=1e-6)  # the GPU path


class FunctionalBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        self.bn = nn.BatchNorm2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


def test_functional_activation_is_replayed_in_the_response() -> None:
    model = FunctionalBlock().eval()
    traced = trace_model(model, (1, 2, 2))
    (r,) = class_mean_responses(model, traced, IMAGES, [np.array([0])])
    expected = F.relu(model.bn(model.conv(IMAGES[:1])))[0]
    torch.testing.assert_close(r[0], expected)


class Boom(nn.Module):
    armed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if Boom.armed:
            raise RuntimeError("boom")
        return x


def all_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_hooks_gone_after_an_exception_mid_forward() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU(), Boom(), nn.Conv2d(2, 2, 1), nn.ReLU())
    traced = trace_model(model, (1, 2, 2))
    model.train()
    Boom.armed = True
    try:
        with pytest.raises(ModelError, match="boom"):
            class_responses(model, traced, IMAGES, CLASSES)
    finally:
        Boom.armed = False
    assert all_hooks(model) == 0
    assert model.training  # mode restored too


def test_hooks_gone_after_success() -> None:
    model = hand_model()
    traced = trace_model(model, (1, 2, 2))
    class_responses(model, traced, IMAGES, CLASSES)
    assert all_hooks(model) == 0


def test_images_of_another_size_are_an_error() -> None:
    model = hand_model()
    traced = trace_model(model, (1, 2, 2))
    with pytest.raises(ModelError, match="do not match the traced input shape"):
        class_responses(model, traced, torch.zeros(2, 1, 3, 3), [np.array([0]), np.array([1])])
    assert all_hooks(model) == 0


def test_bad_options() -> None:
    model = hand_model()
    traced = trace_model(model, (1, 2, 2))
    with pytest.raises(ConfigError, match="response"):
        class_responses(model, traced, IMAGES, CLASSES, response="softmax")
    with pytest.raises(ConfigError, match="batch size"):
        class_responses(model, traced, IMAGES, CLASSES, batch_size=0)


def test_progress_reports_images_done() -> None:
    model = hand_model()
    traced = trace_model(model, (1, 2, 2))
    seen: list[tuple[int, int]] = []
    class_responses(model, traced, IMAGES, CLASSES, batch_size=2, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(2, 3), (3, 3)]
