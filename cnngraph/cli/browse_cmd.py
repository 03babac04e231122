"""``cnngraph browse``: where Neo4j Browser is, how to style the graph, queries to start with."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

import typer

from cnngraph.cli.common import console, handle_errors, neo4j_settings
from cnngraph.queries import style_path

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}
DEFAULT_HTTP_PORT = 7474


def register(app: typer.Typer) -> None:
    app.command("browse")(browse)


@handle_errors
def browse(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", help="Model id to put in the starter query.")] = "MODEL",
    http_port: Annotated[
        int | None,
        typer.Option(
            "--http-port",
            envvar="CNNGRAPH_HTTP_PORT",
            help="HTTP port of the server's Browser \\[default: the running 'cnngraph server' one's, "
            "else 7474].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Print the Neo4j Browser URL, the style sheet and starter queries (needs no connection)."""
    settings = neo4j_settings(ctx)
    local_port = local_http_port(settings.uri)
    port = http_port if http_port is not None else local_port or DEFAULT_HTTP_PORT
    auth = settings.password is not None
    console.print(f"Neo4j Browser: {browser_url(settings.uri, port, auth)}", highlight=False, soft_wrap=True)
    console.print(f"Connect URL:   {settings.uri}", highlight=False, soft_wrap=True)
    if auth:
        console.print(f"User:          {settings.user} (and your password)", highlight=False, soft_wrap=True)
    console.print(
        "Style: drop this file onto the panel that ':style' opens, or run ':style' followed by its "
        f"text: {style_path()}",
        highlight=False,
        soft_wrap=True,
    )
    if local_port is None:  # the 'cnngraph server' turns it off when Browser connects
        console.print(
            "Turn off 'Connect result nodes' in Browser's settings (or run ':config autoComplete: false'), "
            "else Browser draws the arcs of every class between the nodes shown.",
            highlight=False,
            soft_wrap=True,
        )
    console.print("Starter query (paste into Browser's editor and run it):", highlight=False)
    console.print(starter_query(model), highlight=False, markup=False, soft_wrap=True)


def local_http_port(bolt_uri: str) -> int | None:
    """The HTTP port of the running 'cnngraph server' whose Bolt address is ``bolt_uri``, if any."""
    from cnngraph.server import local

    config = local.ServerConfig(state_dir=local.default_state_dir())
    try:
        info = local.status(config)
    except (OSError, ValueError):
        return None
    if info is None or _address(info.bolt_uri) != _address(bolt_uri):
        return None
    return urlsplit(info.browser_url).port


def _address(uri: str) -> tuple[str, int]:
    parts = urlsplit(uri)
    host = parts.hostname or "127.0.0.1"
    return ("127.0.0.1" if host in LOCAL_HOSTS else host), parts.port or 7687


def browser_url(bolt_uri: str, http_port: int = DEFAULT_HTTP_PORT, auth: bool = True) -> str:
    """The Browser's address with the server preselected; with auth off it connects by itself.

    Encrypted URIs (Aura, ``+s``/``+ssc``) open the hosted Browser instead.
    """
    parts = urlsplit(bolt_uri)
    host = parts.hostname or "127.0.0.1"
    shown = f"[{host}]" if ":" in host else host
    bolt_port = parts.port or 7687
    if parts.scheme.endswith("+s") or parts.scheme.endswith("+ssc"):
        return f"https://browser.neo4j.io/?connectURL={parts.scheme}://{shown}"
    scheme = parts.scheme or "bolt"
    url = f"http://{shown}:{http_port}/browser/?dbms={scheme}://{shown}:{bolt_port}"
    return url + ("" if auth else "&preselectAuthMethod=NO_AUTH")


def _quoted(model: str) -> str:
    return model.replace("\\", "\\\\").replace("'", "\\'")


def starter_query(model: str) -> str:
    """The ``:param`` line and a query showing the 20 most class-shared positions' class-0 arcs.

    Each statement ends with ``;`` so that the block runs as it is when pasted into Browser.
    """
    return (
        f":param model => '{_quoted(model)}';\n"
        "MATCH (p:Position {model: $model})\n"
        "WITH p ORDER BY coalesce(p.delta, 0) DESC LIMIT 20\n"
        # Class network 0 on both layouts: per-class keeps the class-0 relationships, compact
        # (no class property) every arc, whose mean[0] is that class's weight.
        "MATCH path = (p)-[r:ARC]->(:Position) WHERE coalesce(r.class, 0) = 0\n"
        "RETURN path;"
    )
