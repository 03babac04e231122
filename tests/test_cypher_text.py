"""The loader's Cypher text and parameters, pinned; the documented Browser queries run."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from test_loader import synthetic_network

from cnngraph.loader import rows, schema
from cnngraph.loader.catalog import drop_model
from cnngraph.loader.writer import load_network
from cnngraph.queries import QUERY_NAMES, cypher, style_path
from cnngraph.queries.scoring import compute_scores

README = Path(__file__).resolve().parents[1] / "README.md"


def test_arc_statement_is_one_match_pair_per_arc() -> None:
    assert schema.CREATE_ARCS.strip() == (
        "UNWIND range(0, size($src) - 1) AS k\n"
        "CALL (k) {\n"
        "  MATCH (a:Position {model: $model, nid: $src[k]}) USING INDEX SEEK a:Position(model, nid)\n"
        "  MATCH (b:Position {model: $model, nid: $dst[k]}) USING INDEX SEEK b:Position(model, nid)\n"
        "  UNWIND range(0, $classes - 1) AS h\n"
        "  CREATE (a)-[:ARC {class: h, mean: $w_mean[k * $classes + h], "
        "median: $w_median[k * $classes + h]}]->(b)\n"
        "}"
    )


def _operators(plan: dict[str, Any]) -> list[str]:
    found = [str(plan.get("operatorType", "")).split("@")[0]]
    for child in plan.get("children", []):
        found += _operators(child)
    return found


@pytest.mark.neo4j
def test_arc_statement_plans_index_seeks_not_scans(neo4j_driver: Any) -> None:
    """A flat MATCH pair was once planned as a full index scan per arc: 1,000x the work."""
    name = f"plan-{uuid.uuid4().hex[:8]}"
    net = synthetic_network([(4, 4), (4, 4), (2, 2)], classes=3)
    try:
        load_network(neo4j_driver, net, name)
        batch = rows.arc_batch(net, 0, 10)
        with neo4j_driver.session() as session:
            summary = session.run("EXPLAIN " + schema.CREATE_ARCS, batch, model=name).consume()
        operators = _operators(summary.plan)
        assert sum(op.startswith("NodeUniqueIndexSeek") for op in operators) == 2, operators
        assert not any("Scan" in op for op in operators), operators
    finally:
        drop_model(neo4j_driver, name)


def test_arc_batch_parameters_match_statement() -> None:
    net = synthetic_network([(3, 3), (3, 3)], classes=2)
    batch = rows.arc_batch(net, 0, 3)
    used = set(re.findall(r"\$(\w+)", schema.CREATE_ARCS)) - {"model"}
    assert used == set(batch)
    assert len(batch["w_mean"]) == len(batch["src"]) * batch["classes"] == 6


def test_position_statement_and_parameters() -> None:
    net = synthetic_network([(2, 2), (2, 2)], classes=2)
    batch = rows.position_batch(net, 0, net.topology.num_nodes)
    used = set(re.findall(r"\$(\w+)", schema.CREATE_POSITIONS)) - {"model"}
    assert used == set(batch)
    assert 'Position:$("L" + toString($layer[k]))' in schema.CREATE_POSITIONS


def test_schema_is_idempotent_and_community_only() -> None:
    for statement in schema.SCHEMA:
        assert "IF NOT EXISTS" in statement
        assert "NODE KEY" not in statement and "IS NOT NULL" not in statement
    assert any("(p.model, p.nid) IS UNIQUE" in s for s in schema.SCHEMA)


def test_deletes_run_in_batches() -> None:
    for statement in (schema.DELETE_ARCS, schema.DELETE_POSITIONS):
        assert "IN TRANSACTIONS OF $batch ROWS" in statement


def test_query_files_document_their_parameters() -> None:
    for name in QUERY_NAMES:
        text = cypher(name)
        params = set(re.findall(r"\$(\w+)", text))
        documented = set(re.findall(r":param (\w+) =>", text))
        assert params == documented, name


def test_style_sheet_styles_layers_sizes_and_arcs() -> None:
    text = Path(style_path()).read_text()
    assert "node.L0 {" in text and "node.L12 {" in text
    assert all(f"node.D{k} {{ diameter:" in text for k in range(5))
    assert 'relationship.ARC { color: #7F8C8D; caption: "{mean}"; }' in text


@pytest.mark.neo4j
def test_documented_browser_queries_run(neo4j_driver: Any) -> None:
    blocks = re.findall(r"```cypher\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 5
    net = synthetic_network([(6, 6), (6, 6)], classes=3)
    model = f"test-doc-{uuid.uuid4().hex[:8]}"
    try:
        load_network(neo4j_driver, net, model)
        compute_scores(neo4j_driver, model)
        params = {"model": model, "layer": 0, "i": 2, "j": 2}
        counts = []
        for block in blocks:
            records, _, _ = neo4j_driver.execute_query(block, params)
            counts.append(len(records))
        assert counts[1] == 9 and counts[3] == 2 and counts[4] == 20
        assert counts[2] > 0 and counts[0] >= 1
    finally:
        drop_model(neo4j_driver, model)
