"""What every command shares: the console, Neo4j settings from the root callback, error exits."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from cnngraph.errors import CnnGraphError
from cnngraph.settings import Neo4jSettings

console = Console()

GraphModel = Annotated[
    str,
    typer.Option(
        "--model", help="Model id in Neo4j, as 'cnngraph load' named it and 'cnngraph models' lists it."
    ),
]
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one line to stderr and return the exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Turn a :class:`CnnGraphError` (a user's mistake) into one line and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CnnGraphError as e:
            raise fail(str(e), e.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None

    return wrapper  # type: ignore[return-value]


def neo4j_settings(ctx: typer.Context) -> Neo4jSettings:
    """The settings the root callback built from options and environment variables."""
    obj = ctx.find_root().obj
    if isinstance(obj, Neo4jSettings):
        return obj
    return Neo4jSettings.from_env()


@contextmanager
def connected(ctx: typer.Context) -> Iterator[Any]:
    """A verified driver for the command's duration."""
    from cnngraph.loader.connection import connect

    driver = connect(neo4j_settings(ctx))
    try:
        yield driver
    finally:
        driver.close()


def progress(transient: bool = False) -> Progress:
    """A Rich progress bar with counts, rate and time left; quiet when stderr is no terminal."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[rate]}"),
        console=err_console,
        transient=transient,
        disable=not sys.stderr.isatty() and os.environ.get("CNNGRAPH_PROGRESS", "") != "1",
    )
