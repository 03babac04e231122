"""``cnngraph browse`` against the real test server: its model-name check, what it prints, and that
every query it prints is one statement that returns at least one node, for a VGG and a ResNet
mapped on builtin:digits, in both graph layouts, with and without an explanation.

Also the helpers that ``test_browser_ui`` and ``test_plot*`` share: the mapped models and the
parsing of ``browse``'s output into its query blocks.
"""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from cnngraph.datasets import ImageDataset, load_dataset
from cnngraph.loader.catalog import drop_model
from cnngraph.loader.writer import load_network
from cnngraph.mapping import map_model
from cnngraph.mapping.network import MultilayerNetwork
from cnngraph.models import ModelSpec, build_model
from cnngraph.queries import browser
from cnngraph.queries.scoring import compute_scores

RESNET20_LAYERS = 21


@cache
def digits(size: int = 16) -> ImageDataset:
    """builtin:digits, average-pooled to ``size`` x ``size`` (16: as it is)."""
    data = load_dataset("builtin:digits")
    if size == data.images.shape[-1]:
        return data
    factor = data.images.shape[-1] // size
    images = F.avg_pool2d(data.images, factor)
    return ImageDataset(images, data.labels, data.class_names, f"{data.source} ({size}x{size})")


@cache
def mapped(arch: str, size: int = 16, classes: int = 3) -> MultilayerNetwork:
    """``arch`` (a reference architecture, untrained, seeded) mapped on builtin:digits."""
    torch.manual_seed(0)
    spec = ModelSpec(arch, num_classes=10, in_channels=1, input_size=size)
    return map_model(
        build_model(spec).eval(),
        digits(size),
        images_per_class=4,
        max_classes=classes,
        spec=spec,
        device="cpu",
    )


MODELS = {
    # name part: (architecture, input size, layout)
    "vgg": ("small_cnn", 16, "per-class"),
    "vgg-compact": ("small_cnn", 16, "compact"),
    "resnet": ("resnet20", 8, "per-class"),
    "resnet-compact": ("resnet20", 8, "compact"),
}


@pytest.fixture(scope="module")
def loaded(neo4j_driver: Any) -> Iterator[dict[str, str]]:
    """Every model of :data:`MODELS` loaded under a unique id; the per-class ones scored."""
    out: dict[str, str] = {}
    suffix = uuid.uuid4().hex[:6]
    try:
        for key, (arch, size, layout) in MODELS.items():
            name = f"browse-{key}-{suffix}"
            load_network(neo4j_driver, mapped(arch, size), name, layout=layout)
            out[key] = name
            if layout == "per-class":
                compute_scores(neo4j_driver, name)
        yield out
    finally:
        for name in out.values():
            drop_model(neo4j_driver, name)


def query_blocks(output: str) -> list[str]:
    """The query blocks of ``browse``'s output: the lines after each ``N. title`` line up to the
    next blank line, exactly as printed."""
    blocks = []
    for paragraph in re.split(r"\n\s*\n", output):
        lines = paragraph.strip("\n").split("\n")
        if len(lines) > 1 and re.match(r"\d+\. ", lines[0]):
            blocks.append("\n".join(lines[1:]))
    return blocks


def run_browse(app: Any, env: dict[str, str], *args: str) -> Any:
    return CliRunner().invoke(app, ["browse", *args], env=env)


def drawn_nodes(driver: Any, query: str) -> set[str]:
    """The element ids of every node a query returns (as a node, in a path or at a relationship's end)."""
    records, _, _ = driver.execute_query(query)
    nodes: set[str] = set()
    for record in records:
        for value in record.values():
            if hasattr(value, "nodes"):
                nodes.update(n.element_id for n in value.nodes)
            elif hasattr(value, "labels"):
                nodes.add(value.element_id)
            elif hasattr(value, "start_node"):
                nodes.update((value.start_node.element_id, value.end_node.element_id))
    return nodes


# ------------------------------------------------------------------------------- the model name
@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("a\nMATCH (n) DETACH DELETE n //", "control character"),
        ("", "empty or blank"),
        ("x" * 8000, "8,000 characters"),
        (" padded", "starts or ends with a space"),
    ],
)
def test_bad_model_names_are_refused_in_one_line(cli_app: Any, name: str, says: str) -> None:
    result = run_browse(cli_app, {"NEO4J_URI": "bolt://127.0.0.1:1"}, "--model", name)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --model:") and says in lines[0], result.output
    assert "MATCH" not in result.output.replace(repr(name)[1:-1], "")  # nothing printed but the error
    assert "Traceback" not in result.output


def test_cypher_string_escapes_what_would_end_it() -> None:
    assert browser.cypher_string("it's") == "'it\\'s'"
    assert browser.cypher_string("a\\b") == "'a\\\\b'"
    assert browser.cypher_string("x'}) DETACH DELETE n //") == "'x\\'}) DETACH DELETE n //'"


def test_hostile_names_stay_one_string_literal(neo4j_driver: Any) -> None:
    """A name with quotes, backslashes, braces and Cypher inlined into a query is still that name."""
    for name in ("o'brien", "back\\slash'", "x'}) MATCH (n) DETACH DELETE n //", 'dq"{}$model;'):
        records, _, _ = neo4j_driver.execute_query(f"RETURN {browser.cypher_string(name)} AS name")
        assert records[0]["name"] == name


# ----------------------------------------------------------------------------------- the output
@pytest.mark.neo4j
def test_without_a_model_it_prints_the_login_and_the_style(cli_app: Any, neo4j_env: dict[str, str]) -> None:
    result = run_browse(cli_app, neo4j_env)
    assert result.exit_code == 0, result.output
    assert "dbms=bolt://neo4j@" in result.output  # the user filled in
    assert "NEO4J_PASSWORD" in result.output  # where the password is
    assert "style.grass" in result.output and "--model" in result.output


@pytest.mark.neo4j
def test_an_unknown_model_is_refused(cli_app: Any, neo4j_env: dict[str, str]) -> None:
    result = run_browse(cli_app, neo4j_env, "--model", f"missing-{uuid.uuid4().hex[:6]}")
    assert result.exit_code == 2
    assert "is not loaded" in result.output and "Traceback" not in result.output


@pytest.mark.neo4j
@pytest.mark.parametrize("key", list(MODELS))
def test_every_printed_query_is_one_statement_that_returns_nodes(
    cli_app: Any, neo4j_env: dict[str, str], neo4j_driver: Any, loaded: dict[str, str], key: str
) -> None:
    name = loaded[key]
    result = run_browse(cli_app, neo4j_env, "--model", name)
    assert result.exit_code == 0, result.output
    out = result.output
    url = re.search(r"Neo4j Browser: (\S+)", out)
    assert url is not None and re.search(r"/cnngraph/browser\?dbms=bolt://neo4j@127\.0\.0\.1:\d+$", url[1])
    assert ":guide http://127.0.0.1:" in out and ":style http://127.0.0.1:" in out
    blocks = query_blocks(out)
    assert len(blocks) == 5, out  # strongest, neighbourhood, DAG, most specific, expand
    for block in blocks:
        assert ":param" not in block and "$" not in block  # nothing to set first
        assert block.count(";") == 0, block  # one statement (the name holds no ';' here)
        assert f"model: {browser.cypher_string(name)}" in block
        assert drawn_nodes(neo4j_driver, block), block
    arch = MODELS[key][0]
    layers = RESNET20_LAYERS if arch == "resnet20" else 5
    assert len(re.findall(r"^  L\d+: #[0-9A-F]{6} ", out, flags=re.M)) == layers  # the legend
    assert "D0..D4" in out


@pytest.mark.neo4j
def test_the_dag_query_returns_every_layer_and_feeds_pair(
    cli_app: Any, neo4j_env: dict[str, str], neo4j_driver: Any, loaded: dict[str, str]
) -> None:
    name = loaded["resnet"]
    blocks = query_blocks(run_browse(cli_app, neo4j_env, "--model", name).output)
    dag = next(b for b in blocks if "FEEDS" in b)
    records, _, _ = neo4j_driver.execute_query(dag)
    layers = {r["l"].element_id for r in records}
    pairs = {r["path"].relationships[0].element_id for r in records if r["path"] is not None}
    assert len(layers) == RESNET20_LAYERS
    assert len(pairs) == len(mapped("resnet20", 8).topology.edge_src)


@pytest.mark.neo4j
def test_the_guide_and_style_are_served_without_a_login(
    cli_app: Any, neo4j_env: dict[str, str], loaded: dict[str, str]
) -> None:
    import urllib.error
    import urllib.request

    name = loaded["resnet"]
    out = run_browse(cli_app, neo4j_env, "--model", name).output
    guide = re.search(r":guide (\S+)'", out)
    style = re.search(r":style (\S+)'", out)
    assert guide is not None and style is not None
    with urllib.request.urlopen(guide[1], timeout=30) as response:
        page = response.read().decode()
    for block in query_blocks(out):
        assert f"<pre class='runnable'>{html.escape(block)}</pre>" in page
    with urllib.request.urlopen(style[1], timeout=30) as response:
        grass = response.read().decode()
    assert grass == browser.grass([name for _, name, _, _ in browser_view(neo4j_env, name).layers])
    # Only names of the guides folder: no other file, no way out of it.
    base = guide[1].rsplit("/", 1)[0]
    for bad in ("..%2Fconf%2Fneo4j.conf", "neo4j.conf", "x.txt", "0" * 32 + ".html"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{base}/{bad}", timeout=30)
        assert e.value.code in (400, 404)


def browser_view(env: dict[str, str], name: str) -> browser.ModelView:
    from cnngraph.loader.connection import connect
    from cnngraph.settings import Neo4jSettings

    with connect(Neo4jSettings(uri=env["NEO4J_URI"], password=env["NEO4J_PASSWORD"] or None)) as driver:
        return browser.model_view(driver, name)


@pytest.mark.neo4j
def test_an_explanation_joins_the_menu(
    cli_app: Any, neo4j_env: dict[str, str], neo4j_driver: Any, loaded: dict[str, str]
) -> None:
    """An explanation as 'cnngraph explain --load' writes it (the schema of docs/GRAPH.md) adds
    explanation.cypher's picture, its values written in, to the menu."""
    name = loaded["vgg"]
    neo4j_driver.execute_query(
        "MATCH (p:Position {model: $model}) WITH p ORDER BY p.nid LIMIT 30 "
        "WITH collect(p) AS ps "
        "CREATE (e:Explanation {model: $model, image: \"it's/7.png\", label: '1', predicted: '1', "
        "probability: 0.9, options: '{}'}) "
        "WITH e, ps UNWIND range(0, size(ps) - 1) AS k "
        "WITH e, ps[k] AS p, k CREATE (e)-[:HIGHLIGHTS {score: 1.0 / (k + 1)}]->(p)",
        model=name,
    )
    try:
        out = run_browse(cli_app, neo4j_env, "--model", name).output
        blocks = query_blocks(out)
        explanation = [b for b in blocks if "Explanation" in b]
        assert len(blocks) == 6 and len(explanation) == 1, out
        assert "image: 'it\\'s/7.png', label: '1'" in explanation[0] and "$" not in explanation[0]
        records, _, _ = neo4j_driver.execute_query(explanation[0])
        layers = {r["layer"] for r in records}
        assert records and all(r["e"]["image"] == "it's/7.png" for r in records)
        assert len(records) == sum(min(12, n) for n in _per_layer(neo4j_driver, name, layers))
        assert drawn_nodes(neo4j_driver, explanation[0])
    finally:
        neo4j_driver.execute_query("MATCH (e:Explanation {model: $model}) DETACH DELETE e", model=name)


def _per_layer(driver: Any, model: str, layers: set[int]) -> list[int]:
    records, _, _ = driver.execute_query(
        "MATCH (:Explanation {model: $model})-[:HIGHLIGHTS]->(p:Position) "
        "RETURN p.layer AS layer, count(*) AS n",
        model=model,
    )
    return [r["n"] for r in records if r["layer"] in layers]


def test_style_colours_every_layer_distinctly_and_readably() -> None:
    colours = [browser.layer_colour(k)[0] for k in range(RESNET20_LAYERS)]
    assert len(set(colours)) == RESNET20_LAYERS
    forbidden = {browser.BROWSER_GREY, browser.CLASS_COLOUR, browser.LAYER_COLOUR}
    assert not forbidden & set(colours)
    for colour in browser.palette():
        r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
        assert max(r, g, b) - min(r, g, b) > 60, colour  # saturated: never a grey
        assert browser.contrast(browser.CAPTION_DARK, colour) >= 4.5, colour  # WCAG AA for the captions
    assert browser.layer_colour(RESNET20_LAYERS + browser.PALETTE_SIZE) == browser.layer_colour(
        RESNET20_LAYERS
    )


def test_shipped_style_sheet_is_the_generated_one() -> None:
    from cnngraph.queries import style_path

    assert Path(style_path()).read_text() == browser.grass(browser.STATIC_LAYERS)


def test_layer_names_cannot_break_the_style_sheet() -> None:
    text = browser.grass(["conv;1", 'x"y', "a:b", "{i}", "ok.name"])
    for caption in ("conv_1", "x_y", "a_b", "_i_", "ok.name"):
        assert f'caption: "L{{layer}} {caption} {{i}},{{j}}"; }}' in text
    # Every L label up to L255 is coloured, captioned or not: another model keeps its colours.
    assert "node.L255 { color:" in text and text.count('caption: "L{layer} ') == 5 + 1  # and Position's


ROOT = Path(__file__).resolve().parents[1]
DOC_SECTION = "## Explore in Neo4j Browser"


def doc_blocks(path: Path) -> list[str]:
    """The ```cypher blocks of ``path``'s Browser section, as a person copies them (unindented)."""
    text = path.read_text()
    start = text.index(DOC_SECTION)
    end = text.find("\n## ", start + len(DOC_SECTION))
    body = text[start : end if end > 0 else len(text)]
    blocks = re.findall(r"```cypher\n(.*?)```", body, re.S)
    return ["\n".join(line.strip() for line in block.strip().splitlines()) for block in blocks]


@pytest.mark.neo4j
@pytest.mark.parametrize("key", ["vgg", "vgg-compact", "resnet", "resnet-compact"])
def test_documented_queries_are_single_statements_that_return_nodes_on_both_layouts(
    neo4j_driver: Any, loaded: dict[str, str], key: str
) -> None:
    """The README's and GRAPH.md's Browser queries, written for the walkthrough's model 'digits-cnn', on
    each loaded model (its name put in its place); pasted into Browser they are tests/test_browser_ui.py's."""
    blocks = doc_blocks(ROOT / "README.md") + doc_blocks(ROOT / "docs" / "GRAPH.md")
    assert len(blocks) >= 9
    for block in blocks:
        assert ":param" not in block and "$" not in block and ";" not in block
        assert "'digits-cnn'" in block or block.startswith("MATCH (m:Model)\n")  # query 1: every model
        query = block.replace("'digits-cnn'", browser.cypher_string(loaded[key]))
        assert drawn_nodes(neo4j_driver, query), query


@pytest.mark.neo4j
def test_documented_neighbourhood_weights_are_the_same_on_both_layouts(
    neo4j_driver: Any, loaded: dict[str, str]
) -> None:
    block = next(b for b in doc_blocks(ROOT / "README.md") if "AS weight" in b)
    weights = {}
    for key in ("vgg", "vgg-compact"):
        records, _, _ = neo4j_driver.execute_query(
            block.replace("'digits-cnn'", browser.cypher_string(loaded[key]))
        )
        weights[key] = sorted(r["weight"] for r in records)
    assert weights["vgg"] and weights["vgg"] == pytest.approx(weights["vgg-compact"], rel=1e-12)


HOSTILE = "o'brien; MATCH (n) DETACH DELETE n // {x} \\ $model"


@pytest.fixture(scope="module")
def hostile(neo4j_driver: Any) -> Iterator[str]:
    """A small VGG loaded under a name full of quotes, Cypher, a ';', braces, a backslash and '$'."""
    name = f"{HOSTILE} {uuid.uuid4().hex[:6]}"
    load_network(neo4j_driver, mapped("small_cnn", 16), name)
    try:
        yield name
    finally:
        drop_model(neo4j_driver, name)


@pytest.mark.neo4j
def test_a_hostile_model_name_stays_inside_its_string_literals(
    cli_app: Any, neo4j_env: dict[str, str], neo4j_driver: Any, hostile: str
) -> None:
    result = run_browse(cli_app, neo4j_env, "--model", hostile)
    assert result.exit_code == 0, result.output
    before, _, _ = neo4j_driver.execute_query("MATCH (n) RETURN count(n) AS n")
    for block in query_blocks(result.output):
        assert browser.cypher_string(hostile) in block
        records, _, _ = neo4j_driver.execute_query(block)
        assert records, block
        for record in records:
            for value in record.values():
                nodes = (
                    value.nodes if hasattr(value, "nodes") else [value] if hasattr(value, "labels") else []
                )
                assert all(n.get("model") in (hostile, None) for n in nodes)
    after, _, _ = neo4j_driver.execute_query("MATCH (n) RETURN count(n) AS n")
    assert after[0]["n"] == before[0]["n"]  # nothing deleted


def test_explanation_query_substitutes_each_value_once() -> None:
    """A model name or image path holding ``$image`` or ``$top`` stays as written, inside its literal."""
    query = browser.explanation_query("m$image", "/data/$label.png", "cat$top", top=5)
    assert "'m$image'" in query
    assert "'/data/$label.png'" in query
    assert "'cat$top'" in query
    assert query.count("$") == 3  # only the three inside the literals
