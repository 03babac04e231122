"""The compact graph layout (``load --layout compact``) against the real Neo4j: the exact graph,
reload, resume (after an in-process cut and after a real ``kill -9``), replace, layout conflicts,
other models untouched."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_cypher_text import _operators
from test_loader import Interrupt, graph_counts, interrupt_after, synthetic_network

from cnngraph.errors import ConfigError, Neo4jError
from cnngraph.loader import rows, schema
from cnngraph.loader.catalog import drop_model, get_model
from cnngraph.loader.writer import load_network
from cnngraph.mapping.network import MultilayerNetwork

ALL_ARCS = """
MATCH (a:Position {model: $model})-[r:ARC]->(b:Position)
RETURN a.nid AS src, b.nid AS dst, r.class AS class, r.mean AS mean, r.median AS median
"""


def assert_exact(driver: Any, model: str, net: MultilayerNetwork, layout: str = "compact") -> None:
    """Every arc exactly once (per class on per-class), between the right positions, with the
    mapping's weights: the whole graph read back and compared with the arrays."""
    records, _, _ = driver.execute_query(ALL_ARCS, model=model)
    topo, t = net.topology, net.num_classes
    per_class = layout == "per-class"
    assert len(records) == topo.num_arcs * (t if per_class else 1)
    src = np.array([r["src"] for r in records], dtype=np.int64)
    dst = np.array([r["dst"] for r in records], dtype=np.int64)
    cls = np.array([-1 if r["class"] is None else r["class"] for r in records], dtype=np.int64)
    order = np.lexsort((cls, dst, src))
    expected_order = np.lexsort((topo.arc_dst, topo.arc_src))
    repeat = t if per_class else 1
    np.testing.assert_array_equal(src[order], np.repeat(topo.arc_src[expected_order], repeat))
    np.testing.assert_array_equal(dst[order], np.repeat(topo.arc_dst[expected_order], repeat))
    np.testing.assert_array_equal(cls[order], np.tile(np.arange(t), topo.num_arcs) if per_class else -1)
    for descriptor in ("mean", "median"):
        stored = np.array([r[descriptor] for r in records], dtype=np.float64)[order].reshape(topo.num_arcs, t)
        expected = net.weights(descriptor).T.astype(np.float64)[expected_order]  # [E, t]
        np.testing.assert_array_equal(stored, expected)
    props = get_model(driver, model)
    assert props is not None and props["status"] == "complete" and props["layout"] == layout
    assert props["num_relationships"] == len(records) and props["num_classes"] == t
    counts = graph_counts(driver, model)
    assert counts["positions"] == topo.num_nodes and counts["arcs"] == len(records)


def assert_exact_compact(driver: Any, model: str, net: MultilayerNetwork) -> None:
    assert_exact(driver, model, net, "compact")


# ------------------------------------------------------------------ no server
def test_compact_batch_adds_the_two_nid_ranges() -> None:
    net = synthetic_network([(4, 4), (4, 4)], classes=3)
    batch = rows.compact_arc_batch(net, 5, 25)
    src, dst = net.topology.arc_src[5:25], net.topology.arc_dst[5:25]
    assert (batch["src_lo"], batch["src_hi"]) == (int(src.min()), int(src.max()))
    assert (batch["dst_lo"], batch["dst_hi"]) == (int(dst.min()), int(dst.max()))
    plain = rows.arc_batch(net, 5, 25)
    assert {k: v for k, v in batch.items() if not k.endswith(("_lo", "_hi"))} == plain
    used = set(re.findall(r"\$(\w+)", schema.CREATE_ARCS_COMPACT)) - {"model"}
    assert used == set(batch)


def test_layout_property_and_relationship_count() -> None:
    net = synthetic_network([(4, 4), (2, 2)], classes=3)
    compact = rows.model_properties(net, "m", "x", "compact")
    assert compact["layout"] == "compact" and compact["num_relationships"] == net.topology.num_arcs
    default = rows.model_properties(net, "m", "x")
    assert default["layout"] == "per-class" and default["num_relationships"] == net.topology.num_arcs * 3


def test_unknown_layout_is_refused_before_anything_is_written() -> None:
    net = synthetic_network([(3, 3), (3, 3)], classes=2)
    with pytest.raises(ConfigError, match="unknown layout 'wide'; use --layout per-class or compact"):
        load_network(None, net, "m", layout="wide")  # type: ignore[arg-type]


def test_cli_refuses_an_unknown_layout_in_one_line(cli_app: Any, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    path = synthetic_network([(3, 3), (3, 3)], classes=2).save(tmp_path / "m.npz")
    env = {"NEO4J_URI": "bolt://127.0.0.1:9"}  # never reached: the option is checked first
    result = CliRunner().invoke(cli_app, ["load", str(path), "--layout", "wide"], env=env)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.strip() == "error: unknown layout 'wide'; use --layout per-class or compact"


# ------------------------------------------------------------------ against the server
@pytest.mark.neo4j
def test_compact_graph_is_exact(driver: Any, model_id: str) -> None:
    net = synthetic_network([(6, 6), (6, 6), (3, 3)], classes=4, seed=21)
    report = load_network(driver, net, model_id, batch_size=37, layout="compact")
    assert report.status == "loaded" and report.layout == "compact"
    assert report.relationships == net.topology.num_arcs and report.arcs_written == net.topology.num_arcs
    assert_exact_compact(driver, model_id, net)


@pytest.mark.neo4j
def test_compact_without_median_stores_mean_only(driver: Any, model_id: str) -> None:
    net = synthetic_network([(4, 4), (4, 4)], classes=2, seed=22)
    del net.node_values["median"]
    load_network(driver, net, model_id, layout="compact")
    records, _, _ = driver.execute_query(ALL_ARCS, model=model_id)
    assert len(records) == net.topology.num_arcs
    assert all(r["median"] is None and len(r["mean"]) == 2 for r in records)


@pytest.mark.neo4j
def test_compact_reload_writes_nothing_and_resume_is_exact(driver: Any, model_id: str) -> None:
    net = synthetic_network([(8, 8), (8, 8), (4, 4)], classes=3, seed=23)
    with pytest.raises(Interrupt):
        load_network(driver, net, model_id, batch_size=40, progress=interrupt_after(3), layout="compact")
    props = get_model(driver, model_id)
    assert props is not None and props["status"] == "loading" and props["arcs_loaded"] == 120
    assert graph_counts(driver, model_id)["arcs"] == 120
    resumed = load_network(driver, net, model_id, batch_size=40, layout="compact")
    assert resumed.status == "resumed" and resumed.arcs_written == net.topology.num_arcs - 120
    assert_exact_compact(driver, model_id, net)
    again = load_network(driver, net, model_id, layout="compact")
    assert again.status == "already loaded" and again.arcs_written == 0
    assert_exact_compact(driver, model_id, net)


@pytest.mark.neo4j
def test_half_done_load_in_the_other_layout_is_replaced(driver: Any, model_id: str) -> None:
    net = synthetic_network([(8, 8), (4, 4)], classes=3, seed=24)
    with pytest.raises(Interrupt):
        load_network(driver, net, model_id, batch_size=30, progress=interrupt_after(2))
    report = load_network(driver, net, model_id, batch_size=30, layout="compact")
    assert report.status == "replaced"
    assert_exact_compact(driver, model_id, net)


@pytest.mark.neo4j
def test_layout_conflict_and_replace(driver: Any, model_id: str) -> None:
    net = synthetic_network([(6, 6), (3, 3)], classes=2, seed=25)
    load_network(driver, net, model_id)
    with pytest.raises(ConfigError, match="is loaded in the per-class layout; pass --replace"):
        load_network(driver, net, model_id, layout="compact")
    assert graph_counts(driver, model_id)["arcs"] == net.topology.num_arcs * 2
    assert load_network(driver, net, model_id, layout="compact", replace=True).status == "replaced"
    assert_exact_compact(driver, model_id, net)
    other = synthetic_network([(5, 5), (5, 5)], classes=3, seed=26)
    with pytest.raises(Neo4jError, match="already loaded from a different mapping"):
        load_network(driver, other, model_id, layout="compact")
    assert load_network(driver, other, model_id, layout="compact", replace=True).status == "replaced"
    assert_exact_compact(driver, model_id, other)


@pytest.mark.neo4j
def test_other_models_are_untouched(driver: Any, model_id: str) -> None:
    neighbour = f"{model_id}-pc"
    try:
        a = synthetic_network([(6, 6), (6, 6)], classes=3, seed=27)
        load_network(driver, a, neighbour)
        before = driver.execute_query(ALL_ARCS, model=neighbour)[0]
        b = synthetic_network([(6, 6), (3, 3)], classes=3, seed=28)
        load_network(driver, b, model_id, layout="compact")
        load_network(driver, a, model_id, layout="compact", replace=True)
        drop_model(driver, model_id)
        after = driver.execute_query(ALL_ARCS, model=neighbour)[0]
        key = lambda r: (r["src"], r["dst"], r["class"])  # noqa: E731
        assert sorted(map(dict, before), key=key) == sorted(map(dict, after), key=key)
        assert len(after) == a.topology.num_arcs * 3
    finally:
        drop_model(driver, neighbour)


@pytest.mark.neo4j
def test_compact_statement_plans_range_seeks_not_scans(driver: Any, model_id: str) -> None:
    net = synthetic_network([(4, 4), (4, 4), (2, 2)], classes=3)
    load_network(driver, net, model_id, layout="compact")
    batch = rows.compact_arc_batch(net, 0, 10)
    with driver.session() as session:
        summary = session.run("EXPLAIN " + schema.CREATE_ARCS_COMPACT, batch, model=model_id).consume()
    operators = _operators(summary.plan)
    assert sum("IndexSeek" in op for op in operators) == 2, operators
    assert not any("Scan" in op for op in operators), operators


@pytest.mark.neo4j
def test_a_missing_position_fails_the_batch_instead_of_misplacing_arcs(driver: Any, model_id: str) -> None:
    net = synthetic_network([(4, 4), (4, 4)], classes=2, seed=29)
    with pytest.raises(Interrupt):
        load_network(driver, net, model_id, batch_size=10, progress=interrupt_after(1), layout="compact")
    driver.execute_query("MATCH (p:Position {model: $model, nid: 5}) DETACH DELETE p", model=model_id)
    arcs = graph_counts(driver, model_id)["arcs"]
    batch = rows.compact_arc_batch(net, 10, net.topology.num_arcs)
    with pytest.raises(Exception, match=r"(?i)null|missing"):
        driver.execute_query(schema.CREATE_ARCS_COMPACT, batch, model=model_id)
    assert graph_counts(driver, model_id)["arcs"] == arcs


# ------------------------------------------------------------------ a real kill -9
def _cli(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cnngraph", *args],
        env={**os.environ, **env, "COLUMNS": "250"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.neo4j
@pytest.mark.slow
@pytest.mark.parametrize("layout", ["per-class", "compact"])
def test_load_killed_midway_resumes_exactly(
    driver: Any, model_id: str, neo4j_env: dict[str, str], tmp_path: Path, layout: str
) -> None:
    net = synthetic_network([(48, 48), (48, 48), (24, 24)], classes=4, seed=30)
    path = net.save(tmp_path / "killed.npz")
    args = ["load", str(path), "--name", model_id, "--layout", layout, "--batch-size", "300"]
    proc = _cli(args, neo4j_env)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            props = get_model(driver, model_id)
            if props is not None and int(props.get("arcs_loaded", 0)) > 0:
                break
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    props = get_model(driver, model_id)
    assert props is not None and props["status"] == "loading"
    done = int(props["arcs_loaded"])
    assert 0 < done < net.topology.num_arcs
    per_arc = net.num_classes if layout == "per-class" else 1
    assert graph_counts(driver, model_id)["arcs"] == done * per_arc  # the counter is exactly what is there
    rerun = _cli([*args[:-2], "--json"], neo4j_env)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert '"status": "resumed"' in out and f'"layout": "{layout}"' in out
    assert_exact(driver, model_id, net, layout)
