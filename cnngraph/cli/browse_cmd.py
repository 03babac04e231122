"""``cnngraph browse``: where Neo4j Browser is, how to log in, the style, and queries that draw the model."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from cnngraph.cli.common import connected, console, handle_errors, neo4j_settings
from cnngraph.errors import CnnGraphError, ConfigError
from cnngraph.queries import style_path
from cnngraph.settings import (
    PASSWORD_FILE,
    Neo4jSettings,
    bolt_address,
    default_state_dir,
    local_server_password,
)

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}
DEFAULT_HTTP_PORT = 7474
EXTENSION = "org.cnngraph.server.web"
"""The package of the launcher's Browser pages (mounted at ``/cnngraph``)."""


def register(app: typer.Typer) -> None:
    app.command("browse")(browse)


@dataclass(frozen=True)
class ServerFacts:
    """What the server says about its web side: HTTP address, home folder, cnngraph's pages."""

    http_address: str | None = None  # host:port
    home: Path | None = None
    pages: bool = False  # the launcher's /cnngraph pages (guides, the Browser opener) are served


@handle_errors
def browse(
    ctx: typer.Context,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Model id ('cnngraph models' lists them): print the query menu for it and write its "
            "guide and style (needs the database).",
            show_default=False,
        ),
    ] = None,
    http_port: Annotated[
        int | None,
        typer.Option(
            "--http-port",
            envvar="CNNGRAPH_HTTP_PORT",
            help="HTTP port of the server's Browser \\[default: the server's own, else 7474].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Print how to open Neo4j Browser and log in, the style, and queries that draw the model.

    Every query is one statement (the model's name written into it): paste one at a time and run it.
    With the project's own server ('cnngraph server start') it also writes a guide, opened in
    Browser with ':guide URL', where each query runs with one click, and the model's style sheet,
    applied with ':style URL'.
    """
    from cnngraph.loader.catalog import check_model_name
    from cnngraph.queries import browser

    if model is not None:
        try:
            check_model_name(model)
        except ConfigError as e:
            raise ConfigError(f"--model: {str(e).replace('pass --name NAME', 'pass --model NAME')}") from None
    settings = neo4j_settings(ctx)
    facts = ServerFacts()
    view = None
    if model is not None:
        with connected(ctx) as driver:
            view = browser.model_view(driver, model, settings.database)
            facts = server_facts(driver)
    elif _is_local(urlsplit(settings.uri).hostname or "127.0.0.1"):
        facts = _facts_if_reachable(ctx)  # a local server answers or refuses at once
    host, port = _http_address(settings, facts, http_port)
    auth = settings.password is not None
    _say(f"Neo4j Browser: {browser_url(settings.uri, port, auth, host=host, opener=facts.pages)}")
    if auth:
        _say(f"Log in as:     {settings.user}, password {password_source(settings)}")
    else:
        _say("Log in:        no password (auth is off); the URL connects by itself")
    if not facts.pages:
        _say(
            "Browser setting: run ':config autoComplete: false' once (Browser keeps it), else Browser's "
            "'Connect result nodes' draws the arcs of every class between the nodes a query returns."
        )
    if view is None:
        _say(f"Style (any model): run ':style' in Browser and drop this file onto it: {style_path()}")
        _say("Queries: pass --model NAME ('cnngraph models' lists them) for queries that draw that model.")
        return

    items = browser.menu(view)
    style = browser.grass([name for _, name, _, _ in view.layers])
    guide = None
    if facts.pages and facts.home is not None:
        guide = _write_guide(view, items, style, facts.home, settings.password, host, port)
    if guide is not None:
        _say(f"Guide:         run ':guide {guide[0]}' in Browser: each query below runs with one click")
        _say(f"Style:         run ':style {guide[1]}' in Browser (or click it in the guide)")
    else:
        _say(f"Style (any model): run ':style' in Browser and drop this file onto it: {style_path()}")
    _say("")
    _say("Legend: positions are labelled Position, L<k> (layer k: colour and caption) and D0..D4 (size).")
    for line in browser.legend_lines(view):
        _say(f"  {line}")
    _say("")
    _say("Queries: paste one block at a time into Browser's editor and run it (each is one statement).")
    for n, item in enumerate(items, 1):
        _say("")
        _say(f"{n}. {item.title}" + (f" [{item.note}]" if item.note else ""))
        console.print(item.query, highlight=False, markup=False, soft_wrap=True)


def _say(text: str) -> None:
    console.print(text, highlight=False, markup=False, soft_wrap=True)


def server_facts(driver: Any) -> ServerFacts:
    """The server's HTTP address, home folder and whether it serves cnngraph's pages (our launcher).

    Reading settings needs an admin; for anyone else, or a server that refuses, nothing is known."""
    from cnngraph.queries.browser import server_settings

    values = server_settings(driver)
    if values is None:
        return ServerFacts()
    address = (
        values.get("server.http.advertised_address") if values.get("server.http.enabled") == "true" else None
    )
    home = values.get("server.directories.neo4j_home")
    pages = f"packageName={EXTENSION}, mountPoint=/cnngraph" in values.get(
        "server.unmanaged_extension_classes", ""
    )
    return ServerFacts(http_address=address or None, home=Path(home) if home else None, pages=pages)


def _facts_if_reachable(ctx: typer.Context) -> ServerFacts:
    """:func:`server_facts` of the configured server, or nothing when it cannot be reached."""
    try:
        with connected(ctx) as driver:
            return server_facts(driver)
    except CnnGraphError:
        return ServerFacts()


def _http_address(settings: Neo4jSettings, facts: ServerFacts, option: int | None) -> tuple[str, int]:
    """The host and port of the server's HTTP side: the option, else what the server or the local
    server's state says, else 7474 on the Bolt host."""
    parts = urlsplit(settings.uri)
    host = parts.hostname or "127.0.0.1"
    port = local_http_port(settings.uri) or DEFAULT_HTTP_PORT
    if facts.http_address is not None:
        advertised = urlsplit(f"http://{facts.http_address}")
        if advertised.port is not None:
            port = advertised.port
        if advertised.hostname and advertised.hostname not in ("0.0.0.0", "::") and _is_local(host):
            host = advertised.hostname
    return host, option if option is not None else port


def _is_local(host: str) -> bool:
    return host in LOCAL_HOSTS


def _write_guide(
    view: Any, items: Any, style: str, home: Path, password: str | None, host: str, port: int
) -> tuple[str, str] | None:
    """Write the guide and the style where this (local) server serves them; their URLs, or None
    when the server's folder is not on this machine or cannot be written."""
    from cnngraph.queries import browser

    if not _is_local(host) or not home.is_dir():
        return None
    token = browser.guide_token(view.name, password)
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{port}/cnngraph/guides/{token}"
    page = browser.guide_html(view, items, f"{base}.grass")
    try:
        browser.write_guide(home / "guides", token, page, style)
    except OSError:
        return None
    return f"{base}.html", f"{base}.grass"


def password_source(settings: Neo4jSettings) -> str:
    """Where the password is: NEO4J_PASSWORD, the local server's password file, or --password."""
    env = os.environ.get("NEO4J_PASSWORD")
    if env and env == settings.password:
        return "in the environment variable NEO4J_PASSWORD"
    state = default_state_dir()
    if settings.password is not None and local_server_password(settings.uri, state) == settings.password:
        return f"in the file {state / PASSWORD_FILE} (the local server's; owner-only)"
    return "the one given with --password"


def local_http_port(bolt_uri: str) -> int | None:
    """The HTTP port of the running 'cnngraph server' whose Bolt address is ``bolt_uri``, if any."""
    from cnngraph.server import local

    config = local.ServerConfig(state_dir=local.default_state_dir())
    try:
        info = local.status(config)
    except (OSError, ValueError):
        return None
    if info is None or bolt_address(info.bolt_uri) != bolt_address(bolt_uri):
        return None
    return urlsplit(info.browser_url).port


def browser_url(
    bolt_uri: str,
    http_port: int = DEFAULT_HTTP_PORT,
    auth: bool = True,
    user: str = "neo4j",
    host: str | None = None,
    opener: bool = False,
) -> str:
    """The Browser's address with the server and user filled in; with auth off it connects by itself.

    ``opener``: through the launcher's ``/cnngraph/browser`` page, which turns Browser's "Connect
    result nodes" off before opening it (no settings frame after login). Encrypted URIs (Aura,
    ``+s``/``+ssc``) open the hosted Browser instead.
    """
    parts = urlsplit(bolt_uri)
    bolt_host = parts.hostname or "127.0.0.1"
    web_host = host or bolt_host
    shown = f"[{web_host}]" if ":" in web_host else web_host
    bolt_shown = f"[{web_host}]" if ":" in web_host else web_host
    bolt_port = parts.port or 7687
    if parts.scheme.endswith("+s") or parts.scheme.endswith("+ssc"):
        return f"https://browser.neo4j.io/?connectURL={parts.scheme}://{bolt_host}"
    scheme = parts.scheme or "bolt"
    who = f"{user}@" if auth and user and "@" not in user and ":" not in user and "/" not in user else ""
    path = "cnngraph/browser" if opener else "browser/"
    url = f"http://{shown}:{http_port}/{path}?dbms={scheme}://{who}{bolt_shown}:{bolt_port}"
    return url + ("" if auth else "&preselectAuthMethod=NO_AUTH")
