"""``cnngraph models``: the models loaded in the database, with their sizes and load status."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from cnngraph.cli.common import connected, console, handle_errors, neo4j_settings
from cnngraph.queries.scoring import list_models

COLUMNS = ("id", "architecture", "layers", "classes", "positions", "arcs", "status", "scored", "created")


def register(app: typer.Typer) -> None:
    app.command("models")(models)


@handle_errors
def models(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
) -> None:
    """List the models loaded in Neo4j."""
    with connected(ctx) as driver:
        rows = [summarise(m) for m in list_models(driver, neo4j_settings(ctx).database)]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    if not rows:
        console.print("no models loaded; load one with 'cnngraph load FILE.npz'")
        return
    table = Table(title="models in Neo4j")
    for column in COLUMNS:
        table.add_column(
            column, justify="right" if column in ("layers", "classes", "positions", "arcs") else "left"
        )
    for row in rows:
        table.add_row(*(f"{row[c]:,}" if isinstance(row[c], int) else str(row[c] or "") for c in COLUMNS))
    console.print(table)


def summarise(props: dict[str, Any]) -> dict[str, Any]:
    """The listing's fields; a partly loaded model shows how far it got."""
    arcs = int(props.get("num_relationships", 0))
    status = str(props.get("status", "?"))
    if status != "complete":
        done = int(props.get("arcs_loaded", 0)) * int(props.get("num_classes", 0))
        status = f"{status} {100.0 * done / arcs if arcs else 0.0:.0f}%"
    return {
        "id": props.get("id"),
        "architecture": props.get("architecture"),
        "layers": int(props.get("num_layers", 0)),
        "classes": int(props.get("num_classes", 0)),
        "positions": int(props.get("num_nodes", 0)),
        "arcs": arcs,
        "status": status,
        "scored": props.get("scored_descriptor"),
        "created": str(props.get("created", ""))[:19],
    }
