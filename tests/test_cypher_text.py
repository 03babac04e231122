"""The loader's Cypher text and parameters, pinned; the shipped style sheet's rules."""

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


def test_arc_statement_is_one_match_pair_per_arc() -> None:
    assert schema.CREATE_ARCS.strip() == (
        "UNWIND range(0, size($src) - 1) AS k\n"
        "CALL (k) {\n"
        "  MATCH (a:Position {model: $model, nid: $src[k]}) USING INDEX SEEK a:Position(model, nid)\n"
        "  MATCH (b:Position {model: $model, nid: $dst[k]}) USING INDEX SEEK b:Position(model, nid)\n"
        "  UNWIND range(0, $classes - 1) AS h\n"
        "  CREATE (a)-[:ARC {class: h, mean: $w_mean[k * $classes + h], "
        "median: $w_median[k * $classes + h],\n"
        "                    max: $w_max[k * $classes + h], sum: $w_sum[k * $classes + h],\n"
        "                    w: round($w_mean[k * $classes + h], 3)}]->(b)\n"
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
    """A graph is deleted one range of positions (and their arcs, on either layout) per transaction."""
    assert "$lo" in schema.DELETE_POSITION_RANGE and "$hi" in schema.DELETE_POSITION_RANGE
    assert "DETACH DELETE p" in schema.DELETE_POSITION_RANGE


def test_query_files_document_their_parameters() -> None:
    for name in QUERY_NAMES:
        text = cypher(name)
        params = set(re.findall(r"\$(\w+)", text))
        documented = set(re.findall(r":param (\w+) =>", text))
        assert params == documented, name


def test_style_sheet_styles_layers_sizes_and_arcs() -> None:
    text = Path(style_path()).read_text()
    assert "node.L0 {" in text and "node.L255 {" in text
    assert all(f"node.D{k} {{ diameter:" in text for k in range(5))
    assert 'relationship.ARC { color: #7F8C8D; caption: "c{class} {w}"; }' in text
    assert 'caption: "L{layer} {i},{j}"; }' in text and 'caption: "{via}"; }' in text
    # Browser's grass parser takes no comments: pasted after ':style' or dropped, they break it.
    assert "/*" not in text and "//" not in text and text.lstrip().startswith("node {")


# The documented Browser queries and those 'cnngraph browse' prints: tests/test_browse_cmd.py
# (through the driver) and tests/test_browser_ui.py (pasted into Neo4j Browser).
