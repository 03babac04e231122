"""The ``cnngraph`` command: root options and the list of sub-commands."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from cnngraph import __version__
from cnngraph.settings import DEFAULT_URI, Neo4jSettings

app = typer.Typer(
    name="cnngraph",
    help=(
        "Map a trained CNN into a multilayer network, load it into Neo4j, score every node by "
        "the entropy of its degrees across class networks, and prune the layers that score low."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"cnngraph {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    uri: Annotated[
        str,
        typer.Option("--uri", envvar="NEO4J_URI", help="Bolt URI of Neo4j (bolt://, neo4j://, neo4j+s://)."),
    ] = DEFAULT_URI,
    user: Annotated[str, typer.Option("--user", envvar="NEO4J_USER", help="Neo4j user.")] = "neo4j",
    password: Annotated[
        str | None,
        typer.Option(
            "--password",
            envvar="NEO4J_PASSWORD",
            help="Neo4j password \\[default: for the local 'cnngraph server', the one in its state "
            "directory].",
            show_default=False,
        ),
    ] = None,
    database: Annotated[
        str | None,
        typer.Option(
            "--database",
            envvar="NEO4J_DATABASE",
            help="Neo4j database (default: the server's default).",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print cnngraph's version and exit.", is_eager=True, callback=_print_version
        ),
    ] = False,
) -> None:
    """Neo4j settings shared by every command that talks to the database."""
    # The driver logs connection failures itself; the commands already say them in one line.
    logging.getLogger("neo4j").setLevel(logging.CRITICAL)
    # No password given and the URI is the local 'cnngraph server': its stored password (owner-only).
    ctx.obj = Neo4jSettings(
        uri=uri, user=user, password=password or None, database=database or None
    ).with_local_password()


def _register() -> None:
    # Each command lives in its own module under cnngraph/cli/ and exposes register(app).
    from cnngraph.cli import commands

    for module in commands.MODULES:
        module.register(app)


def main() -> None:
    _register()
    app()


if __name__ == "__main__":
    main()
