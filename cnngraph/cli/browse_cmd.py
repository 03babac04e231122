"""``cnngraph browse``: where Neo4j Browser is, how to style the graph, a query to start with."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

import typer

from cnngraph.cli.common import console, handle_errors, neo4j_settings
from cnngraph.queries import style_path

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


def register(app: typer.Typer) -> None:
    app.command("browse")(browse)


@handle_errors
def browse(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", help="Model id to put in the starter query.")] = "MODEL",
    http_port: Annotated[int, typer.Option("--http-port", help="HTTP port of a self-hosted server.")] = 7474,
) -> None:
    """Print the Neo4j Browser URL, the style command and a starter query (needs no connection)."""
    uri = neo4j_settings(ctx).uri
    console.print(f"Neo4j Browser: {browser_url(uri, http_port)}", highlight=False, soft_wrap=True)
    console.print(f"Connect URL:   {uri}", highlight=False, soft_wrap=True)
    console.print(
        f"Style: run ':style' in Browser and drop this file onto the panel: {style_path()}",
        highlight=False,
        soft_wrap=True,
    )
    console.print("Starter query (paste into Browser):", highlight=False)
    console.print(starter_query(model), highlight=False, markup=False, soft_wrap=True)


def browser_url(bolt_uri: str, http_port: int = 7474) -> str:
    """http://HOST:7474/browser/ for a plain Bolt URI; the hosted Browser for encrypted (Aura) ones."""
    parts = urlsplit(bolt_uri)
    host = parts.hostname or "127.0.0.1"
    shown = f"[{host}]" if ":" in host else host
    if parts.scheme.endswith("+s") or parts.scheme.endswith("+ssc"):
        return f"https://browser.neo4j.io/?connectURL={parts.scheme}://{shown}"
    return f"http://{shown}:{http_port}/browser/"


def starter_query(model: str) -> str:
    """The ``:param`` line and a query that shows one layer's most class-shared positions."""
    quoted = model.replace("\\", "\\\\").replace("'", "\\'")
    return (
        f":param model => '{quoted}'\n"
        "MATCH (p:Position {model: $model})\n"
        "WITH p ORDER BY coalesce(p.delta, 0) DESC LIMIT 20\n"
        "MATCH path = (p)-[:ARC {class: 0}]->(:Position)\n"
        "RETURN path"
    )
