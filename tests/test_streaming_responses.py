"""Streamed per-class sums and chunked forward passes give the same node values (issue 31 item 5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnngraph.datasets import ImageDataset
from cnngraph.errors import DataError
from cnngraph.mapping import map_model, responses
from cnngraph.mapping.responses import (
    FILTER_DESCRIPTORS,
    _chunks,
    _classes_per_part,
    class_mean_responses,
    class_responses,
    forward_chunk,
    node_values,
    per_channel_scale,
)
from cnngraph.mapping.trace import trace_model


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 5, 3, padding=1), nn.ReLU(), nn.Conv2d(5, 4, 1),
    ).eval()  # fmt: skip


def data(sizes: list[int]) -> tuple[torch.Tensor, list[np.ndarray]]:
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(sum(sizes) + 3, 3, 8, 8, generator=gen)
    perm = np.random.default_rng(2).permutation(images.shape[0])
    out, at = [], 0
    for n in sizes:
        out.append(perm[at : at + n])
        at += n
    return images, out


@pytest.mark.parametrize("sizes", [[5, 3, 7, 1], [1] * 9, [13], [2, 0, 4]])
@pytest.mark.parametrize("batch_size", [1, 3, 4, 64])
def test_streamed_node_values_equal_the_all_classes_ones(sizes: list[int], batch_size: int) -> None:
    model = small_model()
    images, indices = data(sizes)
    traced = trace_model(model, (3, 8, 8))
    expected = node_values(
        class_mean_responses(model, traced, images, indices, batch_size=64), FILTER_DESCRIPTORS
    )
    got = class_responses(model, traced, images, indices, batch_size=batch_size)
    assert set(got) == set(FILTER_DESCRIPTORS)
    for name in FILTER_DESCRIPTORS:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6, equal_nan=True)
    empty = [h for h, n in enumerate(sizes) if n == 0]
    assert np.isnan(got["mean"][empty]).all() and not np.isnan(np.delete(got["mean"], empty, axis=0)).any()


def test_only_the_classes_of_one_forward_pass_are_held() -> None:
    def rows(sizes: list[int], batch: int, chunk: int) -> int:
        ends = np.cumsum(sizes)
        return _classes_per_part(ends, _chunks(int(ends[-1]), batch, chunk))

    assert _chunks(10, 4, 3) == [(0, 3), (3, 4), (4, 7), (7, 8), (8, 10)]  # chunks never cross a batch
    assert rows([64] * 10, 128, 128) == 2
    assert rows([60] * 10, 128, 128) == 3  # a batch can start inside one class and end in a third
    assert rows([60] * 10, 128, 10) == 2  # chunked: at most two classes at a time
    assert rows([1] * 10, 4, 4) == 4
    assert rows([3, 0, 0, 3], 4, 4) == 4  # the empty classes in between count
    held: list[int] = []
    original = responses._Accumulator.__init__

    def spy(self: responses._Accumulator, convs: object, num_classes: int, device: torch.device) -> None:
        held.append(num_classes)
        original(self, convs, num_classes, device)  # type: ignore[arg-type]

    model = small_model()
    images, indices = data([4] * 6)
    traced = trace_model(model, (3, 8, 8))
    responses._Accumulator.__init__ = spy  # type: ignore[method-assign]
    try:
        class_responses(model, traced, images, indices, batch_size=4)
    finally:
        responses._Accumulator.__init__ = original  # type: ignore[method-assign]
    assert held == [1]  # 6 classes of 4 images, batches of 4: one row of sums


def test_chunked_forward_passes_give_the_same_values(monkeypatch: pytest.MonkeyPatch) -> None:
    model = small_model()
    images, indices = data([6, 5])
    traced = trace_model(model, (3, 8, 8))
    whole = class_responses(model, traced, images, indices, batch_size=11)
    assert forward_chunk(traced, 11, torch.device("cpu")) == 11
    monkeypatch.setattr(responses, "FORWARD_BYTES", 6 * 8 * 8 * 4 * 3)  # 3 images of the largest map
    assert forward_chunk(traced, 11, torch.device("cpu")) == 3
    assert forward_chunk(traced, 11, torch.device("meta")) == 11  # not on the CPU: the batch as asked
    chunked = class_responses(model, traced, images, indices, batch_size=11)
    for name in whole:
        np.testing.assert_allclose(chunked[name], whole[name], rtol=1e-5, atol=1e-6)


def test_per_batch_normalisation_equals_a_normalised_copy() -> None:
    model = small_model()
    images, indices = data([4, 4])
    traced = trace_model(model, (3, 8, 8))
    mean, std = [0.5, -0.2, 0.1], [2.0, 0.5, 1.0]
    copy = ImageDataset(images, torch.zeros(images.shape[0], dtype=torch.long), ["a"], "x").normalized(
        mean, std
    )
    expected = class_responses(model, traced, copy.images, indices, batch_size=3)
    got = class_responses(
        model, traced, images, indices, batch_size=3, normalize=per_channel_scale(3, mean, std)
    )
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6)
    before = images.clone()
    class_responses(model, traced, images, indices, normalize=per_channel_scale(3, [1.0], [2.0]))
    assert torch.equal(images, before)  # the caller's images are never changed
    with pytest.raises(DataError, match="std has 2 values but the images have 3 channels"):
        per_channel_scale(3, None, [1.0, 2.0])
    with pytest.raises(DataError, match="every std value must be positive"):
        per_channel_scale(3, [0.0], [0.0])
    assert per_channel_scale(3, None, None) is None


def test_map_model_normalises_without_copying_the_dataset() -> None:
    model = small_model()
    images, _ = data([0])
    labels = torch.arange(images.shape[0]) % 2
    dataset = ImageDataset(images, labels, ["a", "b"], "random")
    network = map_model(model, dataset, normalize=([0.5], [2.0]), device="cpu")
    reference = map_model(model, dataset.normalized([0.5], [2.0]), device="cpu")
    for name in network.node_values:
        np.testing.assert_allclose(
            network.node_values[name], reference.node_values[name], rtol=1e-5, atol=1e-6
        )
    assert network.options["normalization"] == {"mean": [0.5], "std": [2.0]}
