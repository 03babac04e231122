"""``cnngraph server start | stop | status``: a local Neo4j 5.26 without Docker."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cnngraph.cli.common import console, handle_errors
from cnngraph.errors import ServerError
from cnngraph.server import local

server_app = typer.Typer(
    help="Run a local Neo4j 5.26 (embedded in a small Java launcher built with Maven), no Docker needed.",
    no_args_is_help=True,
)

StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        envvar="CNNGRAPH_STATE_DIR",
        help="Folder for the store, PID file and log [default: ~/.local/state/cnngraph].",
        show_default=False,
    ),
]
BoltPort = Annotated[
    int, typer.Option("--bolt-port", envvar="CNNGRAPH_BOLT_PORT", help="Bolt port on 127.0.0.1.")
]
HttpPort = Annotated[
    int,
    typer.Option("--http-port", envvar="CNNGRAPH_HTTP_PORT", help="HTTP port (Neo4j Browser) on 127.0.0.1."),
]


def _config(
    state_dir: Path | None, bolt_port: int, http_port: int, password: str | None = None, **kw: str
) -> local.ServerConfig:
    return local.ServerConfig(
        state_dir=(state_dir or local.default_state_dir()).resolve(),
        bolt_port=bolt_port,
        http_port=http_port,
        password=password,
        **kw,  # type: ignore[arg-type]
    )


@server_app.command("start")
@handle_errors
def start_cmd(
    state_dir: StateDir = None,
    bolt_port: BoltPort = 7687,
    http_port: HttpPort = 7474,
    password: Annotated[
        str | None,
        typer.Option(
            "--password",
            envvar="NEO4J_PASSWORD",
            help="Turn auth on with this password for user 'neo4j' (8+ characters). Without it auth is off.",
            show_default=False,
        ),
    ] = None,
    heap: Annotated[str, typer.Option(help="JVM heap (-Xms/-Xmx).")] = "1g",
    pagecache: Annotated[str, typer.Option(help="Neo4j page cache size.")] = "512m",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for Bolt to answer.")] = 180.0,
) -> None:
    """Build the launcher if needed, start Neo4j in the background and wait until Bolt answers."""
    if password is not None and len(password) < 8:
        raise ServerError("the Neo4j password must have at least 8 characters")
    config = _config(state_dir, bolt_port, http_port, password, heap=heap, pagecache=pagecache)
    with console.status("starting Neo4j (the first start builds the launcher with Maven)..."):
        info = local.start(config, timeout=timeout)
    console.print(
        f"Neo4j started in {info.startup_seconds:.1f} s (pid {info.pid}): {info.bolt_uri}, "
        f"Browser {info.browser_url}, auth {'on' if info.auth else 'off'}"
    )


@server_app.command("stop")
@handle_errors
def stop_cmd(state_dir: StateDir = None, bolt_port: BoltPort = 7687, http_port: HttpPort = 7474) -> None:
    """Stop the server started from this state directory (by its recorded PID)."""
    pid = local.stop(_config(state_dir, bolt_port, http_port))
    console.print("no cnngraph Neo4j is running" if pid is None else f"Neo4j stopped (pid {pid})")


@server_app.command("status")
@handle_errors
def status_cmd(
    state_dir: StateDir = None,
    bolt_port: BoltPort = 7687,
    http_port: HttpPort = 7474,
    password: Annotated[str | None, typer.Option("--password", envvar="NEO4J_PASSWORD", hidden=True)] = None,
) -> None:
    """Say whether the server runs, where it listens, its version, store and Browser URL."""
    config = _config(state_dir, bolt_port, http_port, password)
    info = local.status(config)
    if info is None:
        console.print(f"no cnngraph Neo4j is running from {config.state_dir}")
        raise typer.Exit(1)
    try:
        version = local.server_version(info.bolt_uri, password if info.auth else None)
    except Exception as e:  # the process runs but does not answer: report it, do not crash
        version = f"not answering ({type(e).__name__})"
    table = Table(show_header=False, box=None)
    for key, value in [
        ("pid", str(info.pid)),
        ("bolt", info.bolt_uri),
        ("browser", info.browser_url),
        ("version", version),
        ("store", info.store),
        ("auth", "on" if info.auth else "off"),
        ("log", str(config.log_file)),
    ]:
        table.add_row(f"[bold]{key}", value)
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(server_app, name="server")
