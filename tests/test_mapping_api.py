"""map_model end to end on a tiny CNN whose whole multilayer network is worked out by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import cnngraph
from cnngraph.datasets import ImageDataset
from cnngraph.errors import ConfigError, DataError
from cnngraph.mapping import map_model
from cnngraph.mapping.network import MultilayerNetwork
from cnngraph.mapping.reference import degrees, node_scores
from cnngraph.models import ModelSpec


def tiny_cnn() -> nn.Sequential:
    """c_1: 1x1 conv, filters (1, 2, 6); c_2: 3x3 'same' conv whose only non-zero tap is the centre."""
    first = nn.Conv2d(1, 3, 1)
    second = nn.Conv2d(3, 1, 3, padding=1)
    with torch.no_grad():
        first.weight.copy_(torch.tensor([1.0, 2.0, 6.0]).view(3, 1, 1, 1))
        first.bias.zero_()  # type: ignore[union-attr]
        second.weight.zero_()
        second.weight[0, :, 1, 1] = 1.0
        second.bias.zero_()  # type: ignore[union-attr]
    return nn.Sequential(first, nn.ReLU(), second, nn.ReLU())


def tiny_data() -> ImageDataset:
    images = torch.tensor(
        [
            [[1.0, 0.0], [0.0, 0.0]],  # class a
            [[3.0, 0.0], [0.0, 2.0]],  # class a -> mean [[2, 0], [0, 1]]
            [[1.0, 1.0], [1.0, 0.0]],  # class b
        ]
    ).unsqueeze(1)
    return ImageDataset(images, torch.tensor([0, 0, 1]), ["a", "b"], "tiny")


# By hand. Layer 1 (2x2 nodes 0..3): filter responses are 1x, 2x, 6x of the class-mean image x,
# so the mean over filters is 3x and the median 2x. Layer 2 (nodes 4..7) is 1x+2x+6x = 9x.
MEAN_VALUES = [[6, 0, 0, 3, 18, 0, 0, 9], [3, 3, 3, 0, 9, 9, 9, 0]]
MEDIAN_VALUES = [[4, 0, 0, 2, 18, 0, 0, 9], [2, 2, 2, 0, 9, 9, 9, 0]]
# The 3x3 'same' window on a 2x2 grid covers all 4 positions: 16 arcs, every u to every v.
# Arc u -> v weighs a_2(pi(u)) = a_2(u). Out-degree of u = 4 * a_2(u); in-degree of v = sum a_2.
DEGREES = [[72, 0, 0, 36, 27, 27, 27, 27], [36, 36, 36, 0, 27, 27, 27, 27]]
DELTA = [math.log(3) - 2 / 3 * math.log(2), 0, 0, 0, math.log(2), math.log(2), math.log(2), math.log(2)]


@pytest.fixture(scope="module")
def network() -> MultilayerNetwork:
    return map_model(tiny_cnn(), tiny_data(), images_per_class=None, device="cpu", batch_size=2)


def test_nodes_and_arcs_by_hand(network: MultilayerNetwork) -> None:
    topo = network.topology
    assert topo.num_nodes == 8
    assert topo.node_offsets.tolist() == [0, 4, 8]
    assert sorted(zip(topo.arc_src.tolist(), topo.arc_dst.tolist(), strict=True)) == [
        (u, v) for u in range(4) for v in range(4, 8)
    ]
    assert topo.weight_node.tolist() == [4, 5, 6, 7, -1, -1, -1, -1]
    assert [(la.name, la.filters, la.height, la.width) for la in network.layers] == [
        ("0", 3, 2, 2),
        ("2", 1, 2, 2),
    ]


def test_node_values_weights_degrees_and_delta_by_hand(network: MultilayerNetwork) -> None:
    np.testing.assert_allclose(network.node_values["mean"], MEAN_VALUES, rtol=1e-6)
    np.testing.assert_allclose(network.node_values["median"], MEDIAN_VALUES, rtol=1e-6)
    weights = network.weights("mean")
    expected = np.array([[18, 0, 0, 9], [9, 9, 9, 0]], dtype=np.float32)[:, network.topology.arc_src]
    np.testing.assert_allclose(weights, expected, rtol=1e-6)
    d = degrees(network, "mean")
    np.testing.assert_allclose(d.total, DEGREES, rtol=1e-6)
    np.testing.assert_allclose(d.outdegree[:, 4:], 0)
    np.testing.assert_allclose(node_scores(network, "mean"), DELTA, rtol=1e-6)
    assert network.images_per_class.tolist() == [2, 1]


def test_options_and_model_are_recorded(network: MultilayerNetwork) -> None:
    assert network.options == {
        "images_per_class": "all",
        "selection": "first",
        "seed": None,
        "response": "activation",
        "descriptor": "mean",
        "normalization": None,
        "batch_size": 2,
        "device": "cpu",
        "dataset": "tiny",
        "cnngraph_version": cnngraph.__version__,
    }
    assert network.model["class"] == "torch.nn.modules.container.Sequential"
    assert network.model["input_shape"] == [1, 2, 2]
    assert network.model["layers"] == ["0", "2"]
    assert network.model["response_modules"] == ["1", "3"]
    assert network.class_names == ["a", "b"]


def test_first_images_only_and_spec(tmp_path: Path) -> None:
    spec = ModelSpec("tiny.py:make", num_classes=2, in_channels=1, input_size=2)
    net = map_model(tiny_cnn(), tiny_data(), images_per_class=1, device="cpu", spec=spec)
    assert net.images_per_class.tolist() == [1, 1]
    np.testing.assert_allclose(net.node_values["mean"][0], [3, 0, 0, 0, 9, 0, 0, 0])
    assert net.options["images_per_class"] == 1
    assert net.model["spec"]["source"] == "tiny.py:make"


def test_shuffle_seed_and_normalisation_are_recorded() -> None:
    net = map_model(
        tiny_cnn(), tiny_data(), images_per_class=1, seed=3, normalize=([1.0], [2.0]), response="conv",
        descriptor="median", device="cpu",
    )  # fmt: skip
    assert net.options["selection"] == "shuffle" and net.options["seed"] == 3
    assert net.options["normalization"] == {"mean": [1.0], "std": [2.0]}
    assert net.options["response"] == "conv" and net.options["descriptor"] == "median"
    # class b's one image, normalised: (x - 1) / 2 -> [0, 0, 0, -0.5]; conv response keeps the sign
    np.testing.assert_allclose(net.node_values["mean"][1, :4], [0, 0, 0, -1.5])


def test_save_load_round_trip(network: MultilayerNetwork, tmp_path: Path) -> None:
    path = network.save(tmp_path / "tiny.npz")
    back = MultilayerNetwork.load(path)
    assert back.class_names == network.class_names
    assert back.options == network.options
    assert back.model == network.model
    assert back.layers == network.layers
    for name in ("node_offsets", "arc_src", "arc_dst", "arc_offsets", "weight_node"):
        np.testing.assert_array_equal(getattr(back.topology, name), getattr(network.topology, name))
    for d in ("mean", "median"):
        np.testing.assert_array_equal(back.node_values[d], network.node_values[d])
    np.testing.assert_array_equal(back.images_per_class, network.images_per_class)
    assert not list(tmp_path.glob(".*partial"))


def test_class_without_images_is_a_data_error() -> None:
    data = tiny_data()
    data = ImageDataset(data.images, data.labels, ["a", "b", "c"], "tiny")
    with pytest.raises(DataError, match="class 'c' of 'tiny' has no images"):
        map_model(tiny_cnn(), data, device="cpu")


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="descriptor"):
        map_model(tiny_cnn(), tiny_data(), descriptor="mode")
    with pytest.raises(ConfigError, match="images per class"):
        map_model(tiny_cnn(), tiny_data(), images_per_class=0)
