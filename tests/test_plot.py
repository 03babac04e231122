"""``cnngraph plot`` and :mod:`cnngraph.figures` on resnet20 and a VGG mapped on builtin:digits:
one panel per convolution, one box per convolution and one arrow per FEEDS pair in the DAG (with
Graphviz and with the layered layout, counted in the SVG), verdicts from a ``prune --dry-run
--json`` selection, from Neo4j and from a mapping file with the scores of ``score --out``, and
one-line refusals of bad input that leave nothing written."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_browse_cmd import RESNET20_LAYERS, mapped
from typer.testing import CliRunner

from cnngraph import figures
from cnngraph.errors import ConfigError, Neo4jError
from cnngraph.figures.dag import ranks
from cnngraph.loader.catalog import drop_model, get_model
from cnngraph.loader.writer import load_network
from cnngraph.pruner.units import RESIDUAL

runner = CliRunner()


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mapped("resnet20", 8).save(tmp_path_factory.mktemp("maps") / "resnet20.npz")


@pytest.fixture(scope="module")
def resnet(resnet_file: Path) -> figures.FigureData:
    return figures.from_mapping(resnet_file)


def svg_ids(path: Path, prefix: str) -> list[str]:
    return re.findall(rf'id="({prefix}[^"]*)"', path.read_text())


def test_resnet20_data_has_its_units_and_feeds(resnet: figures.FigureData) -> None:
    assert len(resnet.layers) == RESNET20_LAYERS
    assert len(resnet.feeds) == mapped("resnet20", 8).topology.num_edges
    assert sum(u.kind == RESIDUAL for u in resnet.units) == 9  # nine basic blocks
    assert not resnet.units_note
    rank = ranks(len(resnet.layers), resnet.feeds)
    assert all(rank[dst] > rank[src] for src, dst, _ in resnet.feeds)  # left to right


@pytest.mark.parametrize("suffix", ["png", "svg"])
def test_delta_maps_have_one_panel_per_convolution(
    resnet: figures.FigureData, tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"deltas.{suffix}"
    panels = figures.plot_delta_maps(resnet, path)
    assert panels.count == RESNET20_LAYERS and path.stat().st_size > 10_000
    pairs = enumerate(zip(panels.titles, resnet.layers, strict=True))
    assert all(re.match(rf"c{k} {layer.name}\n", title) for k, (title, layer) in pairs)
    if suffix == "svg":
        assert sorted(svg_ids(path, "panel-c"), key=lambda s: int(s[7:])) == [
            f"panel-c{k}" for k in range(21)
        ]
        assert svg_ids(path, "colorbar") == ["colorbar"]  # one shared colour scale
    else:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_verdicts_from_a_prune_dry_run_selection(resnet: figures.FigureData, tmp_path: Path) -> None:
    chosen = figures.select(resnet, 1.0, remove=3)
    json_path = tmp_path / "selection.json"
    json_path.write_text(json.dumps(chosen.to_dict()))  # what 'prune --dry-run --json' prints
    read = figures.read_selection(json_path, resnet)
    assert read.removed == chosen.removed and read.threshold == pytest.approx(chosen.threshold)
    panels = figures.plot_delta_maps(resnet, tmp_path / "d.svg", read)
    verdicts = [t.split("\n")[1] for t in panels.titles]
    assert verdicts.count("removed") == len(chosen.removed) and "not removable" in verdicts
    units = figures.plot_unit_deltas(read, tmp_path / "units.svg", resnet.model)
    assert units.count == 2 and svg_ids(units.path, "panel-") == ["panel-delta", "panel-decision"]


@pytest.mark.parametrize("engine", ["graphviz", "layered"])
def test_dag_has_a_box_per_convolution_and_an_arrow_per_feeds_pair(
    resnet: figures.FigureData, tmp_path: Path, engine: str
) -> None:
    if engine == "graphviz" and not figures.graphviz_available():
        pytest.skip("Graphviz's dot is not installed (apt install graphviz)")
    chosen = figures.select(resnet, 1.0, remove=3)
    path = tmp_path / f"dag-{engine}.svg"
    drawn = figures.plot_layer_dag(resnet, path, chosen, engine=engine)
    assert drawn.engine == engine
    assert len(drawn.boxes) == RESNET20_LAYERS and len(drawn.arrows) == len(resnet.feeds)
    boxes = svg_ids(path, "node_c")
    arrows = svg_ids(path, "edge_c")
    assert sorted(boxes) == sorted(f"node_c{k}" for k in range(RESNET20_LAYERS))
    assert sorted(arrows) == sorted(f"edge_c{s}_c{d}" for s, d, _ in resnet.feeds)
    text = path.read_text()
    for via in {v for _, _, v in resnet.feeds}:
        assert text.count(f">{via}<") >= sum(v == via for _, _, v in resnet.feeds)  # each arrow labelled
    if engine == "graphviz":
        assert text.count('class="node"') == RESNET20_LAYERS and text.count('class="edge"') == len(
            resnet.feeds
        )
        assert text.count('class="cluster"') == 9  # the residual branches
    figures.plot_layer_dag(resnet, tmp_path / f"dag-{engine}.png", chosen, engine=engine)
    assert (tmp_path / f"dag-{engine}.png").read_bytes()[:4] == b"\x89PNG"


def test_auto_engine_falls_back_to_the_layered_layout_without_dot(
    resnet: figures.FigureData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no 'dot' anywhere
    assert not figures.graphviz_available()
    assert figures.plot_layer_dag(resnet, tmp_path / "dag.svg").engine == "layered"
    with pytest.raises(ConfigError, match="not installed"):
        figures.plot_layer_dag(resnet, tmp_path / "dag2.svg", engine="graphviz")


def test_class_degree_maps_are_the_reference_degrees(
    resnet_file: Path, resnet: figures.FigureData, tmp_path: Path
) -> None:
    from cnngraph.mapping import reference

    panels = figures.plot_class_degrees(resnet, 7, tmp_path / "classes.svg")
    assert panels.count == 3 and svg_ids(panels.path, "panel-class") == [
        "panel-class0",
        "panel-class1",
        "panel-class2",
    ]
    total = resnet.degrees()[3]
    expected = reference.degrees(mapped("resnet20", 8), "mean").total
    assert np.array_equal(total, expected)
    shares = [float(t.split("\n")[1].split("%")[0]) for t in panels.titles]
    assert sum(shares) == pytest.approx(100.0, abs=0.2)
    with pytest.raises(ConfigError, match="--layer 99"):
        figures.plot_class_degrees(resnet, 99, tmp_path / "x.png")


# ------------------------------------------------------------------------------------------ CLI
def test_plot_all_from_a_mapping(cli_app: Any, resnet_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "figs"
    result = runner.invoke(cli_app, ["plot", "all", "--mapping", str(resnet_file), "--out", str(out),
                                     "--format", "svg", "--gamma", "1.0"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["classes.svg", "dag.svg", "deltas.svg", "units.svg"]
    assert "21 panels, one per convolution" in result.output
    assert f"21 convolutions, {len(mapped('resnet20', 8).topology.edge_src)} FEEDS arrows" in result.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["plot", "nothing", "--mapping", "{map}"], "unknown figure 'nothing'"),
        (["plot", "dag"], "give either --model NAME"),
        (["plot", "dag", "--model", "m", "--mapping", "{map}"], "give either --model NAME"),
        (["plot", "dag", "--mapping", "{map}", "--out", "{tmp}/dag.jpg"], "ending in .png or .svg"),
        (["plot", "all", "--mapping", "{map}", "--out", "{tmp}/all.png"], "give --out a folder"),
        (["plot", "deltas", "--mapping", "{tmp}/none.npz", "--out", "{tmp}/d.png"], "does not exist"),
        (["plot", "deltas", "--mapping", "{map}", "--scores", "{tmp}/bad.csv", "--out", "{tmp}/d.png"],
         "no column"),
        (["plot", "units", "--mapping", "{map}", "--selection", "{tmp}/bad.json", "--out", "{tmp}/u.png"],
         "is not the JSON"),
        (["plot", "units", "--mapping", "{map}", "--selection", "{tmp}/vgg.json", "--out", "{tmp}/u.png"],
         "covers 5 convolutions"),
        (["plot", "classes", "--mapping", "{map}", "--layer", "99", "--out", "{tmp}/c.png"], "--layer 99"),
        (["plot", "dag", "--mapping", "{map}", "--engine", "neato", "--out", "{tmp}/g.png"],
         "unknown engine"),
        (["plot", "units", "--mapping", "{map}", "--rule", "most", "--gamma", "1", "--out", "{tmp}/u.png"],
         "bad layer rule"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_writes_nothing(
    cli_app: Any, resnet_file: Path, tmp_path: Path, args: list[str], says: str
) -> None:
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    (tmp_path / "bad.json").write_text('{"units": [{"unit": 0}]}')
    vgg = figures.from_mapping(mapped("small_cnn", 16).save(tmp_path / "vgg.npz"))
    (tmp_path / "vgg.json").write_text(json.dumps(figures.select(vgg, 1.0).to_dict()))
    before = set(tmp_path.iterdir())
    filled = [a.replace("{map}", str(resnet_file)).replace("{tmp}", str(tmp_path)) for a in args]
    result = runner.invoke(cli_app, filled)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in result.output, result.output
    assert set(tmp_path.iterdir()) == before  # nothing written


# ---------------------------------------------------------------------------------------- Neo4j
@pytest.fixture(scope="module")
def loaded_resnet(neo4j_driver: Any) -> Iterator[str]:
    name = f"plot-resnet-{uuid.uuid4().hex[:6]}"
    load_network(neo4j_driver, mapped("resnet20", 8), name, layout="compact")
    try:
        yield name
    finally:
        drop_model(neo4j_driver, name)


@pytest.mark.neo4j
def test_from_neo4j_equals_from_the_mapping(
    neo4j_driver: Any, loaded_resnet: str, resnet: figures.FigureData
) -> None:
    data = figures.from_neo4j(neo4j_driver, loaded_resnet)
    assert [(b.index, b.name, b.height, b.width) for b in data.layers] == [
        (b.index, b.name, b.height, b.width) for b in resnet.layers
    ]
    assert data.feeds == resnet.feeds
    assert np.allclose(data.scores.get("entropy"), resnet.scores.get("entropy"), rtol=1e-9, atol=1e-12)
    assert [u.convs for u in data.units] == [u.convs for u in resnet.units]  # units from the recorded spec
    assert get_model(neo4j_driver, loaded_resnet).get("scored_descriptor") is None  # nothing written


@pytest.mark.neo4j
def test_plot_from_neo4j_and_from_score_out(
    cli_app: Any, neo4j_env: dict[str, str], loaded_resnet: str, resnet_file: Path, tmp_path: Path
) -> None:
    dag = tmp_path / "dag.svg"
    result = runner.invoke(
        cli_app, ["plot", "dag", "--model", loaded_resnet, "--out", str(dag)], env=neo4j_env
    )
    assert result.exit_code == 0, result.output
    assert len(svg_ids(dag, "node_c")) == RESNET20_LAYERS
    assert len(svg_ids(dag, "edge_c")) == len(mapped("resnet20", 8).topology.edge_src)
    scores = tmp_path / "scores.csv"
    scored = runner.invoke(cli_app, ["score", "--model", loaded_resnet, "--out", str(scores)], env=neo4j_env)
    assert scored.exit_code == 0, scored.output
    deltas = tmp_path / "deltas.png"
    result = runner.invoke(
        cli_app,
        ["plot", "deltas", "--mapping", str(resnet_file), "--scores", str(scores), "--out", str(deltas)],
    )
    assert result.exit_code == 0, result.output
    assert "21 panels" in result.output and deltas.is_file()
    other = mapped("small_cnn", 16).save(tmp_path / "other.npz")
    result = runner.invoke(cli_app, ["plot", "deltas", "--mapping", str(other), "--scores", str(scores),
                                     "--out", str(tmp_path / "x.png")])  # fmt: skip
    assert result.exit_code == 2 and "use this mapping's scores" in result.output


@pytest.mark.neo4j
def test_a_model_reloaded_between_its_scores_and_its_degrees_is_refused(neo4j_driver: Any) -> None:
    """The degrees (read when 'classes' first needs them) must be of the model the scores came from:
    a reload in between (even of the same mapping) is refused in one line, nothing drawn."""
    name = f"plot-race-{uuid.uuid4().hex[:6]}"
    net = mapped("small_cnn", 16)
    load_network(neo4j_driver, net, name)
    try:
        data = figures.from_neo4j(neo4j_driver, name)
        load_network(neo4j_driver, net, name, replace=True)
        with pytest.raises(Neo4jError, match="replaced by another load while this command read it"):
            data.degrees()
        fresh = figures.from_neo4j(neo4j_driver, name)
        assert fresh.degrees()[3].shape == (3, net.topology.num_nodes)
    finally:
        drop_model(neo4j_driver, name)
