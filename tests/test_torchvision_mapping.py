"""torchvision's branching architectures map (random weights, small images), and resnet18's arcs
equal the brute-force autograd reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from geometry_oracle import autograd_arcs, perturbation_pairs
from torch import nn

from cnngraph.datasets import ImageDataset
from cnngraph.mapping import map_model
from cnngraph.mapping.summary import network_summary
from cnngraph.mapping.topology import assemble_topology
from cnngraph.mapping.trace import trace_model
from cnngraph.models import ModelSpec, build_model

pytestmark = pytest.mark.slow

# name -> (convolutions, a via that must occur)
MODELS = {
    "resnet18": (20, "add"),
    "resnet50": (53, "add"),
    "mobilenet_v2": (52, "add"),
    "densenet121": (120, "cat"),
    "googlenet": (57, "cat"),
    "efficientnet_b0": (81, "broadcast+mul"),
    "squeezenet1_0": (26, "cat"),
    "shufflenet_v2_x0_5": (56, "cat+split"),
    "convnext_tiny": (22, "add+mul"),
}


def torchvision_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelSpec(f"torchvision:{name}", num_classes=4, in_channels=3, input_size=32))


@pytest.mark.parametrize("name", list(MODELS))
def test_torchvision_model_maps(name: str) -> None:
    model = torchvision_model(name)
    convs_expected, via = MODELS[name]
    traced = trace_model(model, (3, 32, 32))
    assert len(traced.convs) == convs_expected
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == convs_expected
    fed = {f.dst for f in traced.feeds}
    assert fed == set(range(1, convs_expected))  # every convolution but the first reads another
    assert all(f.src < f.dst for f in traced.feeds)
    assert via in {f.via for f in traced.feeds}
    topo = assemble_topology(traced.layers, traced.feeds)
    assert topo.num_nodes == sum(c.out_shape[1] * c.out_shape[2] for c in traced.convs)
    assert topo.num_edges == len(traced.feeds) and topo.num_arcs > 0


def test_resnet18_arcs_equal_the_autograd_reference() -> None:
    model = torchvision_model("resnet18")
    traced = trace_model(model, (3, 24, 24))  # 12x12 after the stem, 1x1 in the last stage
    topo = assemble_topology(traced.layers, traced.feeds)
    off = topo.node_offsets
    got = {}
    for e in range(topo.num_edges):
        a, b, s = int(topo.edge_src[e]), int(topo.edge_dst[e]), topo.arc_slice(e)
        got[(a, b)] = set(
            zip((topo.arc_src[s] - off[a]).tolist(), (topo.arc_dst[s] - off[b]).tolist(), strict=True)
        )
    oracle = autograd_arcs(model, (3, 24, 24), [c.name for c in traced.convs])
    assert got.keys() == oracle.keys()
    for pair in oracle:
        assert got[pair] == oracle[pair], pair


def test_resnet18_maps_end_to_end_with_block_responses() -> None:
    model = torchvision_model("resnet18")
    traced = trace_model(model, (3, 32, 32))
    by_name = {c.name: c for c in traced.convs}
    # in a residual branch: conv, bn, relu (a shared module, replayed); the branch's last conv ends at its bn
    assert by_name["layer1.0.conv1"].response_module == "layer1.0.bn1"
    assert len(by_name["layer1.0.conv1"].post_ops) == 1
    assert by_name["layer1.0.conv2"].response_module == "layer1.0.bn2"
    assert by_name["layer1.0.conv2"].post_ops == ()
    assert by_name["layer2.0.downsample.0"].response_module == "layer2.0.downsample.1"
    data = ImageDataset(torch.rand(8, 3, 32, 32), torch.tensor([0, 1, 2, 3] * 2), list("abcd"), "random")
    network = map_model(model, data, images_per_class=2, device="cpu")
    summary = network_summary(network)
    assert summary["nodes"] == network.topology.num_nodes
    assert summary["arcs_per_class"] == sum(e["arcs"] for e in summary["edges"])
    # the bn2 response of layer1.0.conv2 by hand: mean over the 2 images of each class, then over filters
    eval_model = model.eval()
    seen: list[torch.Tensor] = []
    handle = eval_model.layer1[0].bn2.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    with torch.no_grad():
        eval_model(data.images[torch.tensor([0, 4])])
    handle.remove()
    k = [c.name for c in traced.convs].index("layer1.0.conv2")
    start, stop = network.topology.node_offsets[k], network.topology.node_offsets[k + 1]
    expected = seen[0].mean(dim=0).mean(dim=0).flatten().numpy()
    np.testing.assert_allclose(network.node_values["mean"][0, start:stop], expected, rtol=1e-5, atol=1e-6)


def mapped_arcs(
    model: nn.Module, shape: tuple[int, int, int]
) -> tuple[dict[tuple[int, int], set], list[str]]:
    traced = trace_model(model, shape)
    topo = assemble_topology(traced.layers, traced.feeds)
    off = topo.node_offsets
    got = {}
    for e in range(topo.num_edges):
        a, b, s = int(topo.edge_src[e]), int(topo.edge_dst[e]), topo.arc_slice(e)
        got[(a, b)] = set(
            zip((topo.arc_src[s] - off[a]).tolist(), (topo.arc_dst[s] - off[b]).tolist(), strict=True)
        )
    return got, [c.name for c in traced.convs]


@pytest.mark.parametrize("name", ["shufflenet_v2_x0_5", "convnext_tiny"])
def test_split_route_and_channels_last_models_equal_both_oracles_at_32(name: str) -> None:
    """ShuffleNet's split-and-route blocks (channel-exact feeds) and ConvNeXt's permute round trips:
    pairs equal the perturbation oracle, arcs the autograd oracle."""
    model = torchvision_model(name)
    got, names = mapped_arcs(model, (3, 32, 32))
    moved = perturbation_pairs(model, (3, 32, 32), names)
    assert set(got) == {pair for pair, (_, read) in moved.items() if read}
    oracle = autograd_arcs(model, (3, 32, 32), names, random=True, dtype=torch.float32)
    assert got.keys() == oracle.keys()
    for pair in oracle:
        assert got[pair] == oracle[pair], pair


def test_shufflenet_loses_the_pairs_that_carry_no_data() -> None:
    """Issue 31: the chunk a block's branch does not read no longer feeds it (5 pairs fewer)."""
    model = torchvision_model("shufflenet_v2_x0_5")
    for size, arcs in ((32, 2395), (64, 10774)):
        got, names = mapped_arcs(model, (3, size, size))
        assert len(got) == 118 and sum(len(v) for v in got.values()) == arcs
        moved = perturbation_pairs(model, (3, size, size), names)
        assert set(got) == {pair for pair, (_, read) in moved.items() if read}
