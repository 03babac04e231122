"""``cnngraph models``: the models loaded in the database, with their sizes and load status."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from cnngraph.cli.common import connected, console, handle_errors, neo4j_settings

COLUMNS = (
    "id", "architecture", "layout", "layers", "classes", "positions", "arcs", "relationships", "status",
    "scored", "created",
)  # fmt: skip
NUMERIC = ("layers", "classes", "positions", "arcs", "relationships")


def register(app: typer.Typer) -> None:
    app.command("models")(models)


@handle_errors
def models(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
) -> None:
    """List the models loaded in Neo4j."""
    with connected(ctx) as driver:
        from cnngraph.queries.scoring import list_models

        rows = [summarise(m) for m in list_models(driver, neo4j_settings(ctx).database)]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    if not rows:
        console.print("no models loaded; load one with 'cnngraph load FILE.npz'")
        return
    table = Table(title="models in Neo4j")
    for column in COLUMNS:
        table.add_column(column, justify="right" if column in NUMERIC else "left")
    for row in rows:
        table.add_row(*(f"{row[c]:,}" if isinstance(row[c], int) else str(row[c] or "") for c in COLUMNS))
    console.print(table)


def summarise(props: dict[str, Any]) -> dict[str, Any]:
    """The listing's fields; a model being loaded shows how far it got (arcs written of all arcs)."""
    arcs = int(props.get("num_arcs", 0))
    status = str(props.get("status", "?"))
    if status == "loading":
        done = int(props.get("arcs_loaded", 0))
        status = f"{status} {100.0 * done / arcs if arcs else 0.0:.0f}%"
    return {
        "id": props.get("id"),
        "architecture": props.get("architecture"),
        "layers": int(props.get("num_layers", 0)),
        "classes": int(props.get("num_classes", 0)),
        "positions": int(props.get("num_nodes", 0)),
        "layout": props.get("layout", "per-class"),
        "arcs": arcs,
        "relationships": int(props.get("num_relationships", 0)),
        "status": status,
        "scored": props.get("scored_descriptor"),
        "created": str(props.get("created", ""))[:19],
    }
