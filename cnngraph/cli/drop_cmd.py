"""``cnngraph drop``: delete one model's graph (in batched transactions)."""

from __future__ import annotations

from typing import Annotated

import typer

from cnngraph.cli.common import GraphModel, connected, console, handle_errors, neo4j_settings
from cnngraph.errors import GraphNotFoundError
from cnngraph.queries.scoring import drop_model


def register(app: typer.Typer) -> None:
    app.command("drop")(drop)


@handle_errors
def drop(
    ctx: typer.Context,
    model: GraphModel,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a model: its positions, arcs, layers, classes and the model node."""
    if not yes and not typer.confirm(f"Delete model '{model}' from Neo4j?"):
        console.print("nothing deleted")
        raise typer.Exit(1)
    with connected(ctx) as driver:
        if not drop_model(driver, model, neo4j_settings(ctx).database):
            raise GraphNotFoundError(f"model '{model}' is not loaded; 'cnngraph models' lists what is")
    console.print(f"dropped model '{model}'")
