"""Node descriptors mean, median, max and sum (docs/METHOD.md sections 2 and 9) through map, the mapping
file, load (both layouts), Cypher scores and degrees, prune, sweep and export."""

from __future__ import annotations

import csv
import json
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from cnngraph.datasets import load_dataset, restrict_classes, select_per_class
from cnngraph.errors import ConfigError, MappingFileError
from cnngraph.loader.catalog import drop_model
from cnngraph.loader.writer import load_network
from cnngraph.mapping import reference
from cnngraph.mapping.api import map_model
from cnngraph.mapping.export import export_gexf, export_graphml
from cnngraph.mapping.network import DESCRIPTORS, MultilayerNetwork
from cnngraph.mapping.responses import FILTER_DESCRIPTORS, class_mean_responses
from cnngraph.mapping.trace import trace_model
from cnngraph.models import ModelSpec, build_model, save_checkpoint
from cnngraph.queries.scoring import AGGREGATORS, compute_degrees, compute_scores, preview_scores

runner = CliRunner()
RTOL, ATOL = 1e-9, 1e-9
LAYOUTS = ("per-class", "compact")
CLASSES = 3
SPEC = ModelSpec("resnet20", num_classes=10, in_channels=1, input_size=8, width=0.25)


@pytest.fixture(scope="module")
def digits8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in digits at 8x8 (their original size), as an .npz: a small graph to load and score."""
    data = load_dataset("builtin:digits")
    images = torch.nn.functional.avg_pool2d(data.images, 2).numpy()
    path = tmp_path_factory.mktemp("digits8") / "digits8.npz"
    np.savez(path, images=images, labels=data.labels.numpy(), classes=np.array(data.class_names))
    return path


@pytest.fixture(scope="module")
def mapped(digits8: Path) -> tuple[MultilayerNetwork, Any]:
    """A branching model (ResNet-20, a quarter wide) mapped on three digit classes."""
    torch.manual_seed(0)
    model = build_model(SPEC).eval()
    net = map_model(
        model, load_dataset(digits8), images_per_class=6, max_classes=CLASSES, spec=SPEC, device="cpu"
    )
    return net, model


def test_descriptor_lists_agree() -> None:
    assert DESCRIPTORS == FILTER_DESCRIPTORS == ("mean", "median", "max", "sum")


def test_map_computes_every_descriptor(mapped: tuple[MultilayerNetwork, Any], digits8: Path) -> None:
    net, model = mapped
    assert list(net.node_values) == list(DESCRIPTORS) and net.descriptors == list(DESCRIPTORS)
    # An oracle outside the mapper: the class mean responses by hand, then numpy over the filters.
    data = restrict_classes(load_dataset(digits8), list(range(CLASSES)))
    indices, _ = select_per_class(data.labels, CLASSES, 6)
    traced = trace_model(model, data.input_shape)
    means = [r.numpy().astype(np.float64) for r in class_mean_responses(model, traced, data.images, indices)]
    oracle = {
        "mean": [m.mean(axis=1) for m in means],
        "median": [np.median(m, axis=1) for m in means],
        "max": [m.max(axis=1) for m in means],
        "sum": [m.sum(axis=1) for m in means],
    }
    for d in DESCRIPTORS:
        expected = np.concatenate([v.reshape(CLASSES, -1) for v in oracle[d]], axis=1)
        np.testing.assert_allclose(net.values(d), expected, rtol=1e-5, atol=1e-5, err_msg=d)
    filters = np.repeat([lay.filters for lay in net.layers], [lay.nodes for lay in net.layers])
    np.testing.assert_allclose(net.values("sum"), net.values("mean") * filters, rtol=1e-5, atol=1e-5)
    assert (net.values("max") >= net.values("median") - 1e-6).all()
    assert (net.values("max") > net.values("mean") + 1e-6).any()  # really another descriptor


def test_every_descriptor_survives_the_file(mapped: tuple[MultilayerNetwork, Any], tmp_path: Path) -> None:
    net, _ = mapped
    again = MultilayerNetwork.load(net.save(tmp_path / "m.npz"))
    assert again.descriptors == list(DESCRIPTORS)
    for d in DESCRIPTORS:
        np.testing.assert_array_equal(again.values(d), net.values(d))
        np.testing.assert_array_equal(again.weights(d), net.weights(d))


def test_an_older_file_without_max_and_sum_reads_and_says_what_it_lacks(
    mapped: tuple[MultilayerNetwork, Any], tmp_path: Path
) -> None:
    net, _ = mapped
    old = MultilayerNetwork(
        net.topology, net.class_names, {d: net.node_values[d] for d in ("mean", "median")},
        net.images_per_class, net.model, net.options,
    )  # fmt: skip
    loaded = MultilayerNetwork.load(old.save(tmp_path / "old.npz"))
    assert loaded.descriptors == ["mean", "median"]
    with pytest.raises(MappingFileError, match=r"no 'max' node values .*older cnngraph.*mean or median"):
        loaded.values("max")
    with pytest.raises(
        MappingFileError, match="unknown descriptor 'mode'; use one of mean, median, max, sum"
    ):
        loaded.values("mode")


def test_a_file_with_an_unknown_descriptor_is_refused(
    mapped: tuple[MultilayerNetwork, Any], tmp_path: Path
) -> None:
    net, _ = mapped
    path = net.save(tmp_path / "m.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["values_mode"] = arrays["values_mean"]
    np.savez(path, **arrays)
    with pytest.raises(MappingFileError, match=r"damaged: 'values_mode' is not a descriptor"):
        MultilayerNetwork.load(path)


def test_map_refuses_an_unknown_descriptor(mapped: tuple[MultilayerNetwork, Any]) -> None:
    _, model = mapped
    with pytest.raises(ConfigError, match="unknown descriptor 'mode'; use one of mean, median, max, sum"):
        map_model(model, load_dataset("builtin:digits"), descriptor="mode", max_classes=2)


@pytest.mark.parametrize("fmt", ["gexf", "graphml"])
def test_export_carries_every_descriptor(
    mapped: tuple[MultilayerNetwork, Any], tmp_path: Path, fmt: str
) -> None:
    net, _ = mapped
    if fmt == "gexf":
        root = ET.parse(export_gexf(net, tmp_path / "x.gexf", classes="1", descriptor="max")).getroot()
        ns = "{http://gexf.net/1.3}"
        edges = list(root.iter(f"{ns}edge"))
        attrs = [
            {
                a.get("for"): float(a.get("value", "nan"))
                for a in e.iter(f"{ns}attvalue")
                if a.get("for") != "class"
            }
            for e in edges
        ]
        weight = np.array([float(e.get("weight", "nan")) for e in edges])
    else:
        root = ET.parse(export_graphml(net, tmp_path / "x.graphml", classes="1", descriptor="max")).getroot()
        ns = "{http://graphml.graphdrawing.org/xmlns}"
        edges = list(root.iter(f"{ns}edge"))
        attrs = [
            {d.get("key"): float(d.text or "nan") for d in e.findall(f"{ns}data") if d.get("key") != "class"}
            for e in edges
        ]
        weight = np.array([a["weight"] for a in attrs])
    assert len(edges) == net.topology.num_arcs
    np.testing.assert_allclose(weight, net.weights("max")[1], rtol=1e-6)
    for d in DESCRIPTORS:
        column = np.array([a[f"edge_{d}"] for a in attrs])
        np.testing.assert_allclose(column, net.weights(d)[1], rtol=1e-6, err_msg=d)


# ----------------------------------------------------------------- Neo4j
@pytest.fixture(scope="module")
def loaded(neo4j_driver: Any, mapped: tuple[MultilayerNetwork, Any]) -> Iterator[dict[str, str]]:
    net, _ = mapped
    names = {layout: f"desc-{layout}-{uuid.uuid4().hex[:8]}" for layout in LAYOUTS}
    try:
        for layout, name in names.items():
            load_network(neo4j_driver, net, name, layout=layout)
        yield names
    finally:
        for name in names.values():
            drop_model(neo4j_driver, name)


@pytest.mark.neo4j
@pytest.mark.parametrize("layout", LAYOUTS)
def test_arcs_store_a_weight_per_descriptor(
    neo4j_driver: Any, loaded: dict[str, str], mapped: tuple[MultilayerNetwork, Any], layout: str
) -> None:
    net, _ = mapped
    name = loaded[layout]
    records, _, _ = neo4j_driver.execute_query(
        "MATCH (m:Model {id: $m}) RETURN m.descriptors AS d, m.descriptor AS default", m=name
    )
    assert records[0]["d"] == list(DESCRIPTORS) and records[0]["default"] == "mean"
    records, _, _ = neo4j_driver.execute_query(
        "MATCH (a:Position {model: $m})-[r:ARC]->(b) RETURN a.nid AS src, b.nid AS dst, r {.*} AS r "
        "ORDER BY src, dst, r.class LIMIT 50",
        m=name,
    )
    arcs = {
        (int(s), int(t)): k
        for k, (s, t) in enumerate(zip(net.topology.arc_src, net.topology.arc_dst, strict=True))
    }
    for rec in records:
        k = arcs[rec["src"], rec["dst"]]
        r = rec["r"]
        if layout == "per-class":
            assert set(r) == {"class", *DESCRIPTORS, "w"}
            for d in DESCRIPTORS:
                assert r[d] == pytest.approx(float(net.weights(d)[r["class"], k]), rel=1e-7)
        else:
            assert set(r) == set(DESCRIPTORS)
            for d in DESCRIPTORS:
                np.testing.assert_allclose(r[d], net.weights(d)[:, k], rtol=1e-7)


@pytest.mark.neo4j
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("descriptor", DESCRIPTORS)
def test_cypher_equals_the_numpy_oracle_for_every_descriptor(
    neo4j_driver: Any,
    loaded: dict[str, str],
    mapped: tuple[MultilayerNetwork, Any],
    layout: str,
    descriptor: str,
) -> None:
    net, _ = mapped
    name = loaded[layout]
    expected = reference.degrees(net, descriptor)
    table = compute_degrees(neo4j_driver, name, descriptor)
    assert table.descriptor == descriptor
    np.testing.assert_allclose(table.indegree, expected.indegree, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(table.outdegree, expected.outdegree, rtol=RTOL, atol=ATOL)
    scores = compute_scores(neo4j_driver, name, descriptor)
    assert scores.descriptor == descriptor
    for aggregator in AGGREGATORS:
        np.testing.assert_allclose(
            scores.get(aggregator), reference.score(expected.total, aggregator), rtol=RTOL, atol=ATOL
        )
    np.testing.assert_allclose(
        scores.get("entropy"), reference.node_scores(net, descriptor), rtol=RTOL, atol=ATOL
    )
    records, _, _ = neo4j_driver.execute_query(
        "MATCH (m:Model {id: $m}) RETURN m.scored_descriptor AS d", m=name
    )
    assert records[0]["d"] == descriptor
    preview = preview_scores(neo4j_driver, name, descriptor)
    np.testing.assert_allclose(preview.get("entropy"), scores.get("entropy"), rtol=RTOL, atol=ATOL)


def test_the_descriptor_changes_the_scores(mapped: tuple[MultilayerNetwork, Any]) -> None:
    """Not four copies of one score: sum is mean times the fed layer's filters, a factor that differs
    between a node's entering and leaving arcs, so even sum and mean rank nodes differently."""
    net, _ = mapped
    deltas = {d: reference.node_scores(net, d) for d in DESCRIPTORS}
    for a, b in (("mean", "median"), ("mean", "max"), ("mean", "sum")):
        assert np.abs(deltas[a] - deltas[b]).max() > 1e-4, (a, b)


@pytest.mark.neo4j
def test_a_model_without_max_says_so(neo4j_driver: Any, mapped: tuple[MultilayerNetwork, Any]) -> None:
    net, _ = mapped
    old = MultilayerNetwork(
        net.topology, net.class_names, {d: net.node_values[d] for d in ("mean", "median")},
        net.images_per_class, net.model, net.options,
    )  # fmt: skip
    name = f"desc-old-{uuid.uuid4().hex[:8]}"
    try:
        load_network(neo4j_driver, old, name, layout="compact")
        with pytest.raises(
            ConfigError, match=rf"model '{name}' stores no 'max' arc weights .*mean or median"
        ):
            compute_scores(neo4j_driver, name, "max")
        with pytest.raises(ConfigError, match="unknown descriptor 'x'; use one of mean, median, max, sum"):
            compute_degrees(neo4j_driver, name, "x")
        records, _, _ = neo4j_driver.execute_query(
            "MATCH (:Position {model: $m})-[r:ARC]->() RETURN r {.*} AS r LIMIT 1", m=name
        )
        assert set(records[0]["r"]) == {"mean", "median"}
    finally:
        drop_model(neo4j_driver, name)


# ----------------------------------------------------------------- CLI
def _run(app: typer.Typer, env: dict[str, str] | None, *args: str) -> Any:
    return runner.invoke(app, list(args), env=env)


@pytest.mark.parametrize("command", ["map", "score", "degrees", "inspect", "export", "prune", "sweep"])
def test_every_descriptor_option_lists_all_four(cli_app: typer.Typer, command: str) -> None:
    result = _run(cli_app, {"COLUMNS": "200", "NO_COLOR": "1"}, command, "--help")
    assert result.exit_code == 0, result.output
    text = re.sub(r"[\s│]+", " ", result.output)
    at = text.index("--descriptor")
    segment = text[at : text.find(" --", at + 5)]
    assert re.search(r"mean\W+median\W+max\W+or\W+sum", segment), segment


@pytest.mark.neo4j
def test_cli_score_degrees_prune_and_sweep_take_every_descriptor(
    cli_app: typer.Typer,
    neo4j_env: dict[str, str],
    neo4j_driver: Any,
    mapped: tuple[MultilayerNetwork, Any],
    digits8: Path,
    tmp_path: Path,
) -> None:
    net, model = mapped
    name = f"desc-cli-{uuid.uuid4().hex[:8]}"
    path = net.save(tmp_path / f"{name}.npz")
    checkpoint = save_checkpoint(tmp_path / "model.pt", model, {"spec": SPEC.to_dict()})
    try:
        assert _run(cli_app, neo4j_env, "load", str(path), "--layout", "compact").exit_code == 0
        result = _run(cli_app, neo4j_env, "score", "--model", name, "--descriptor", "max", "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["descriptor"] == "max"

        out = tmp_path / "deg.csv"
        result = _run(
            cli_app, neo4j_env, "degrees", "--model", name, "--out", str(out), "--descriptor", "sum"
        )
        assert result.exit_code == 0, result.output
        with open(out) as fh:
            total = np.array([float(r["total"]) for r in csv.DictReader(fh)]).reshape(-1, CLASSES).T
        np.testing.assert_allclose(total, reference.degrees(net, "sum").total, rtol=1e-9, atol=1e-9)

        bad = _run(cli_app, neo4j_env, "score", "--model", name, "--descriptor", "mode")
        assert bad.exit_code == 2 and "unknown descriptor 'mode'" in bad.output
        assert "Traceback" not in bad.output

        # prune --dry-run with another descriptor than the stored (max) scores: computed in memory
        common = ("--model", name, "--checkpoint", str(checkpoint), "--data", str(digits8))
        result = _run(cli_app, neo4j_env, "prune", *common, "--dry-run", "--descriptor", "median", "--json")
        assert result.exit_code == 0, result.output
        assert "use 'max', not 'median'; computing them in memory" in result.output
        stored, _, _ = neo4j_driver.execute_query(
            "MATCH (m:Model {id: $m}) RETURN m.scored_descriptor AS d", m=name
        )
        assert stored[0]["d"] == "max"  # a dry run writes nothing

        result = _run(cli_app, neo4j_env, "sweep", *common[:2], "--descriptor", "sum", "--json",
                      "--gamma-start", "0.5", "--gamma-stop", "1", "--gamma-step", "0.5")  # fmt: skip
        assert result.exit_code == 0, result.output
        document = json.loads(result.output[result.output.index("{") :])
        assert document["descriptor"] == "sum"

        out_dir = tmp_path / "pruned"
        options = (
            "--epochs",
            "0",
            "--latency-repeats",
            "1",
            "--gamma",
            "0.5",
            "--out",
            str(out_dir),
            "--json",
        )
        result = _run(cli_app, neo4j_env, "prune", *common, "--descriptor", "sum", *options)
        assert result.exit_code == 0, result.output
        report = json.loads((out_dir / "report.json").read_text())
        assert report["descriptor"] == "sum"
    finally:
        drop_model(neo4j_driver, name)


def test_with_descriptors_keeps_a_subset(mapped: tuple[MultilayerNetwork, Any]) -> None:
    net, _ = mapped
    small = net.with_descriptors(["median", "mean"])
    assert small.descriptors == ["mean", "median"] and small.topology is net.topology
    with pytest.raises(MappingFileError, match="default descriptor 'mean' must be among"):
        net.with_descriptors(["max"])
    with pytest.raises(MappingFileError, match="unknown descriptor 'mode'"):
        net.with_descriptors(["mean", "mode"])


@pytest.mark.neo4j
def test_load_descriptors_stores_only_those(
    cli_app: typer.Typer, neo4j_env: dict[str, str], neo4j_driver: Any, mapped: Any, tmp_path: Path
) -> None:
    net, _ = mapped
    name = f"desc-sub-{uuid.uuid4().hex[:8]}"
    path = net.save(tmp_path / f"{name}.npz")
    try:
        result = _run(cli_app, neo4j_env, "load", str(path), "--descriptors", "mean,median")
        assert result.exit_code == 0, result.output
        records, _, _ = neo4j_driver.execute_query(
            "MATCH (m:Model {id: $m}) MATCH (:Position {model: $m})-[r:ARC]->() "
            "RETURN m.descriptors AS d, keys(r) AS k LIMIT 1",
            m=name,
        )
        assert records[0]["d"] == ["mean", "median"] and set(records[0]["k"]) == {
            "class",
            "mean",
            "median",
            "w",
        }
        bad = _run(cli_app, neo4j_env, "score", "--model", name, "--descriptor", "sum")
        assert bad.exit_code == 2 and "stores no 'sum' arc weights (loaded with --descriptors" in bad.output
        good = _run(cli_app, neo4j_env, "score", "--model", name, "--descriptor", "median", "--json")
        assert good.exit_code == 0, good.output
        # the whole mapping under the same name is another graph: refused unless --replace
        again = _run(cli_app, neo4j_env, "load", str(path))
        assert again.exit_code == 2 and "--replace" in again.output
    finally:
        drop_model(neo4j_driver, name)
