"""``cnngraph drop``: delete one model's graph (in batched transactions)."""

from __future__ import annotations

import shlex
from typing import Annotated

import typer

from cnngraph.cli.common import GraphModel, connected, console, err_console, handle_errors, neo4j_settings
from cnngraph.cli.interrupts import between_transactions
from cnngraph.errors import ConfigError, GraphNotFoundError
from cnngraph.loader.batches import DELETE_BATCH


def register(app: typer.Typer) -> None:
    app.command("drop")(drop)


@handle_errors
def drop(
    ctx: typer.Context,
    model: GraphModel,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (what a script passes).")
    ] = False,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Relationships deleted per transaction (about).")
    ] = DELETE_BATCH,
) -> None:
    """Delete a model: its positions, arcs, layers, classes and the model node.

    The model is marked 'deleting' first, so an interrupted drop leaves a model that every command
    refuses; running the same drop again (or a load) finishes it."""
    if not yes and not _confirmed(model):
        console.print("nothing deleted")
        raise typer.Exit(1)
    from cnngraph.queries.scoring import drop_model

    with connected(ctx) as driver, between_transactions(_notice) as check_interrupt:

        def after_batch(done: int, total: int) -> None:
            check_interrupt()  # a Ctrl-C stops here, after a committed batch

        if not drop_model(driver, model, neo4j_settings(ctx).database, batch_size, after_batch):
            raise GraphNotFoundError(f"model '{model}' is not loaded; 'cnngraph models' lists what is")
    console.print(f"dropped model '{model}'")


def _confirmed(model: str) -> bool:
    """The user's y/N. No answer (a script whose input ends, Ctrl-D) is a one-line error naming --yes."""
    try:
        return typer.confirm(f"Delete model '{model}' from Neo4j?")
    except typer.Abort:
        typer.echo()  # end the prompt's line
        raise ConfigError(
            f"drop asks before deleting model '{model}' and got no answer (no terminal: a script or a "
            f"pipe); pass --yes to delete it without asking: cnngraph drop --model {shlex.quote(model)} --yes"
        ) from None


def _notice(message: str) -> None:
    err_console.print(message, style="yellow", highlight=False, soft_wrap=True)
