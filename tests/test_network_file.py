"""The mapping file (format 2): a branching network round-trips; old and damaged files are refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from torch import nn
from typer.testing import CliRunner

from cnngraph.datasets import ImageDataset
from cnngraph.errors import MappingFileError
from cnngraph.mapping import map_model
from cnngraph.mapping.network import FORMAT_VERSION, TOPOLOGY_ARRAYS, MultilayerNetwork
from cnngraph.mapping.reference import degrees

runner = CliRunner()


class TinyResidual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 3, padding=1)
        self.a = nn.Conv2d(2, 2, 3, padding=1)
        self.b = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        return self.b(torch.relu(self.a(x)) + x)


@pytest.fixture(scope="module")
def network() -> MultilayerNetwork:
    torch.manual_seed(0)
    images = torch.rand(6, 1, 5, 5)
    data = ImageDataset(images, torch.tensor([0, 1, 2, 0, 1, 2]), ["x", "y", "z"], "tiny")
    return map_model(TinyResidual(), data, device="cpu")


def test_branching_round_trip(network: MultilayerNetwork, tmp_path: Path) -> None:
    assert FORMAT_VERSION == 2
    topo = network.topology
    assert [(e["src"], e["dst"], e["via"]) for e in topo.edges()] == [
        (0, 1, "direct"),
        (0, 2, "add"),
        (1, 2, "add"),
    ]
    back = MultilayerNetwork.load(network.save(tmp_path / "res.npz"))
    for name in TOPOLOGY_ARRAYS:
        np.testing.assert_array_equal(getattr(back.topology, name), getattr(topo, name))
    assert back.topology.edge_via == topo.edge_via
    assert back.layers == network.layers
    np.testing.assert_array_equal(back.weights("median"), network.weights("median"))
    # the stem feeds two layers: one weight per fed layer, and degrees use both
    with pytest.raises(ValueError, match="arc_weight_nodes"):
        _ = topo.weight_node
    stem_arcs = topo.arc_src < topo.node_offsets[1]
    fed = topo.arc_weight_nodes()[stem_arcs]
    assert (fed < topo.node_offsets[2]).any() and (fed >= topo.node_offsets[2]).any()
    d = degrees(network)
    w = network.weights("mean")
    np.testing.assert_allclose(d.outdegree[:, 0], w[:, topo.arc_src == 0].astype(np.float64).sum(axis=1))


def rewrite(path: Path, change: Callable[[dict[str, np.ndarray], dict], None]) -> None:
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(bytes(arrays["meta"]).decode())
    change(arrays, meta)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]


def _set(key: str, value: object) -> Callable[[dict[str, np.ndarray], dict], None]:
    def change(arrays: dict[str, np.ndarray], meta: dict) -> None:
        arrays[key] = value  # type: ignore[assignment]

    return change


def _meta(key: str, value: object) -> Callable[[dict[str, np.ndarray], dict], None]:
    def change(arrays: dict[str, np.ndarray], meta: dict) -> None:
        meta[key] = value

    return change


def _edit(key: str, fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[dict[str, np.ndarray], dict], None]:
    def change(arrays: dict[str, np.ndarray], meta: dict) -> None:
        arrays[key] = fn(arrays[key])

    return change


def _bump(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a[-1] += 1000
    return a


DAMAGE = {
    "short arc_offsets": (_edit("arc_offsets", lambda a: a[:-1]), "'arc_offsets' has"),
    "arc_offsets past the end": (_edit("arc_offsets", _bump), "'arc_offsets' do not cover"),
    "arc_src out of range": (_edit("arc_src", _bump), "'arc_src' has a node outside"),
    "arc_dst in the wrong layer": (_edit("arc_dst", lambda a: a * 0), "'arc_dst' has a node outside"),
    "float arc_src": (_edit("arc_src", lambda a: a.astype(np.float64)), "'arc_src' is float64"),
    "short values": (_edit("values_mean", lambda a: a[:, :-1]), "'values_mean' is float32"),
    "integer values": (_edit("values_mean", lambda a: a.astype(np.int64)), "'values_mean' is int64"),
    "NaN values": (_edit("values_median", lambda a: a * np.nan), "NaN"),
    "weight node outside": (_edit("pair_weight_node", lambda a: a * 0), "'pair_weight_node' has a node"),
    "missing array": (lambda arrays, meta: arrays.pop("edge_src"), "'edge_src' is missing"),
    "class names ill-typed": (_meta("class_names", [1, 2, 3]), "'class_names'"),
    "layers ill-typed": (_meta("layers", [{"index": "x"}]), "layer list is malformed"),
    "edge_via ill-typed": (_meta("edge_via", "direct"), "'edge_via'"),
    "options ill-typed": (_meta("options", [1]), "'options'"),
    "images count short": (_edit("images_per_class", lambda a: a[:1]), "'images_per_class' has 1"),
    "node offsets wrong": (_edit("node_offsets", _bump), "'node_offsets'"),
    "backwards edge": (_edit("edge_dst", lambda a: a * 0), "does not run forward"),
    "meta not an object": (lambda arrays, meta: meta.clear(), "format None"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_file_is_a_mapping_file_error(network: MultilayerNetwork, tmp_path: Path, case: str) -> None:
    path = network.save(tmp_path / "net.npz")
    change, message = DAMAGE[case]
    rewrite(path, change)
    with pytest.raises(MappingFileError) as info:
        MultilayerNetwork.load(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_format_1_is_refused_with_re_map(network: MultilayerNetwork, tmp_path: Path) -> None:
    path = network.save(tmp_path / "old.npz")
    rewrite(path, _meta("format_version", 1))
    with pytest.raises(MappingFileError, match="re-map with this version"):
        MultilayerNetwork.load(path)


def test_not_a_zip_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip at all")
    with pytest.raises(MappingFileError, match="not a cnngraph mapping file"):
        MultilayerNetwork.load(path)


@pytest.mark.parametrize("command", ["inspect", "export"])
@pytest.mark.parametrize("case", ["short arc_offsets", "arc_src out of range", "short values"])
def test_cli_refuses_damaged_file_in_one_line(
    cli_app: typer.Typer, network: MultilayerNetwork, tmp_path: Path, command: str, case: str
) -> None:
    path = network.save(tmp_path / "net.npz")
    rewrite(path, DAMAGE[case][0])
    args = [command, str(path)] + (
        ["--format", "gexf", "--out", str(tmp_path / "x.gexf")] if command == "export" else []
    )
    result = runner.invoke(cli_app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert DAMAGE[case][1] in result.output.replace("\n", " ") or "damaged" in result.output
    assert not (tmp_path / "x.gexf").exists()
