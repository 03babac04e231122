"""``cnngraph server start | stop | status``: a local Neo4j 5.26 without Docker."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from cnngraph.cli.common import console, err_console, handle_errors
from cnngraph.errors import ServerError
from cnngraph.settings import SERVER_START_TIMEOUT

if TYPE_CHECKING:  # the launcher module is imported when a command runs, not for --help
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
        help="Folder for the store, PID file, log and password \\[default: ~/.local/state/cnngraph].",
        show_default=False,
    ),
]
BoltPort = Annotated[
    int, typer.Option("--bolt-port", envvar="CNNGRAPH_BOLT_PORT", help="Bolt port on 127.0.0.1.")
]
NOTED_STAGES = frozenset({"build", "wait-build", "unclean", "recovery"})
"""Stages of a start that are said in a line of their own, not only in the spinner."""
HttpPort = Annotated[
    int,
    typer.Option("--http-port", envvar="CNNGRAPH_HTTP_PORT", help="HTTP port (Neo4j Browser) on 127.0.0.1."),
]


def _config(
    state_dir: Path | None,
    bolt_port: int,
    http_port: int,
    password: str | None = None,
    auth: bool = True,
    **kw: str,
) -> local.ServerConfig:
    from cnngraph.server import local

    return local.ServerConfig(
        state_dir=(state_dir or local.default_state_dir()).resolve(),
        bolt_port=bolt_port,
        http_port=http_port,
        password=password,
        auth=auth,
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
            help="Password of user 'neo4j' (8+ characters) \\[default: the one stored in the state "
            "directory, generated at the first start].",
            show_default=False,
        ),
    ] = None,
    no_auth: Annotated[
        bool,
        typer.Option(
            "--no-auth",
            help="Turn auth off: then any local program, and any web page open in a browser here, can run "
            "Cypher over Bolt.",
        ),
    ] = False,
    heap: Annotated[str, typer.Option(help="JVM heap (-Xms/-Xmx).")] = "1g",
    pagecache: Annotated[str, typer.Option(help="Neo4j page cache size.")] = "512m",
    timeout: Annotated[
        float,
        typer.Option(
            help="Seconds to wait until Neo4j is ready (a large store recovers for minutes after a crash); "
            "a server still starting then keeps running."
        ),
    ] = SERVER_START_TIMEOUT,
) -> None:
    """Build the launcher if needed, start Neo4j in the background and wait until Bolt answers.

    The first start of an installed cnngraph builds the launcher with Maven (Java 17 and Maven 3.8
    needed; about 150 MB of Neo4j jars are downloaded into ~/.m2) into ~/.cache/cnngraph/launcher
    ($XDG_CACHE_HOME); later starts reuse it. A store whose last server did not stop cleanly is
    recovered first, which is said.

    Auth is on: the password of user 'neo4j' is generated at the first start and kept, owner-only,
    in the state directory, where every cnngraph command finds it (NEO4J_PASSWORD overrides it).
    """
    if no_auth and password is not None:
        raise ServerError("give either --password or --no-auth, not both (NEO4J_PASSWORD sets --password)")
    if password is not None and len(password) < 8:
        raise ServerError("the Neo4j password must have at least 8 characters")
    config = _config(
        state_dir, bolt_port, http_port, password, auth=not no_auth, heap=heap, pagecache=pagecache
    )
    if no_auth:
        err_console.print(
            "[bold yellow]warning:[/] auth is OFF: any program on this machine, and any web page open in a "
            "browser here, can read and change this database over Bolt",
            highlight=False,
            soft_wrap=True,
        )
    with console.status("starting Neo4j...") as spinner:

        def on_stage(stage: str, message: str) -> None:
            spinner.update(f"{message}...")
            if stage in NOTED_STAGES:  # a line too, for piped output where no spinner shows
                err_console.print(f"[bold]note:[/] {message}", highlight=False, soft_wrap=True)

        from cnngraph.server import local

        info = local.start(config, timeout=timeout, on_stage=on_stage)
    auth = f"auth on (user neo4j, password in {config.password_file})" if info.auth else "auth OFF"
    recovered = ", after recovering the store" if info.recovered else ""
    console.print(
        f"Neo4j started in {info.startup_seconds:.1f} s{recovered} (pid {info.pid}): {info.bolt_uri}, "
        f"Browser {info.browser_url}, {auth}",
        highlight=False,
        soft_wrap=True,
    )


@server_app.command("stop")
@handle_errors
def stop_cmd(state_dir: StateDir = None, bolt_port: BoltPort = 7687, http_port: HttpPort = 7474) -> None:
    """Stop the server started from this state directory (only a process running its store)."""
    from cnngraph.server import local

    config = _config(state_dir, bolt_port, http_port)
    pid = local.stop(config)
    console.print(
        f"no cnngraph Neo4j is running from {config.state_dir}"
        if pid is None
        else f"Neo4j stopped (pid {pid})",
        highlight=False,
        soft_wrap=True,
    )


@server_app.command("status")
@handle_errors
def status_cmd(
    state_dir: StateDir = None,
    bolt_port: BoltPort = 7687,
    http_port: HttpPort = 7474,
    password: Annotated[str | None, typer.Option("--password", envvar="NEO4J_PASSWORD", hidden=True)] = None,
) -> None:
    """Say whether the server runs, where it listens, its version, store and Browser URL."""
    from cnngraph.server import local

    config = _config(state_dir, bolt_port, http_port, password)
    info = local.status(config)
    if info is None:
        console.print(
            f"no cnngraph Neo4j is running from {config.state_dir}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(1)
    try:
        version = local.server_version(
            info.bolt_uri, (password or local.stored_password(config)) if info.auth else None
        )
    except Exception as e:  # the process runs but does not answer: report it, do not crash
        version = (
            f"not answering ({type(e).__name__}){'' if info.ready else '; still starting or recovering'}"
        )
    table = Table(show_header=False, box=None)
    for key, value in [
        ("pid", str(info.pid)),
        ("bolt", info.bolt_uri),
        ("browser", info.browser_url),
        ("version", version),
        ("store", info.store),
        ("auth", f"on (password in {config.password_file})" if info.auth else "OFF"),
        ("log", str(config.log_file)),
    ]:
        table.add_row(f"[bold]{key}", value)
    console.print(table, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.add_typer(server_app, name="server")
