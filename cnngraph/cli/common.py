"""What every command shares: the console, Neo4j settings from the root callback, error exits."""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from cnngraph.errors import CnnGraphError, ConfigError, MappingFileError
from cnngraph.settings import Neo4jSettings

if TYPE_CHECKING:
    from cnngraph.mapping.network import MultilayerNetwork

UNLIMITED_WIDTH = 100_000


class FullConsole(Console):
    """A console that never cuts a table cell: a truncated number or name is a wrong one.

    Piped (not a terminal), a table prints at its natural width, however wide, and a line of
    text is not wrapped at all; on a narrow terminal table cells wrap (``fold``) instead of
    ending in an ellipsis.
    """

    def print(self, *objects: Any, **kwargs: Any) -> None:
        tables = [o for o in objects if isinstance(o, Table)]
        for table in tables:
            for column in table.columns:
                column.overflow = "fold"
        if self.is_terminal:
            super().print(*objects, **kwargs)
            return
        if not tables:
            kwargs.setdefault("soft_wrap", True)
            super().print(*objects, **kwargs)
            return
        wide = self.options.update(width=UNLIMITED_WIDTH, max_width=UNLIMITED_WIDTH)
        natural = max(Measurement.get(self, wide, t).maximum for t in tables)
        previous = self._width
        self.width = max(natural, self.width)
        try:
            super().print(*objects, **kwargs)
        finally:
            self._width = previous


console = FullConsole()

GraphModel = Annotated[
    str,
    typer.Option(
        "--model", help="Model id in Neo4j, as 'cnngraph load' named it and 'cnngraph models' lists it."
    ),
]
err_console = FullConsole(stderr=True)

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


def check_output_file(path: Path, option: str = "--out") -> None:
    """Refuse an output file that is a folder or cannot be written, before any work is done.

    Probes the nearest existing folder with a temporary file (permission bits alone say nothing
    when running as root, or on a read-only mount), then removes it.
    """
    if path.is_dir():
        raise ConfigError(f"{option} '{path}' is a folder; give the path of a file to write")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"{option} '{path}' cannot be written: '{folder}' is a file, not a folder")
    try:
        handle, probe = tempfile.mkstemp(prefix=".cnngraph-probe-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(
            f"{option} '{path}' cannot be written ({e.strerror or e}); choose a writable place"
        ) from e


def load_mapping(path: Path) -> MultilayerNetwork:
    """Read a mapping file; content of the wrong shape or type is a one-line error, not a traceback."""
    from cnngraph.mapping.network import MultilayerNetwork

    if path.suffix == ".npy":
        raise MappingFileError(
            f"'{path}' is a single .npy array, not a mapping file; give the .npz written by 'cnngraph map'"
        )
    try:
        return MultilayerNetwork.load(path)
    except CnnGraphError:
        raise
    except (AttributeError, TypeError, ValueError, KeyError, IndexError, OSError, EOFError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise MappingFileError(
            f"'{path}' is not a valid cnngraph mapping file ({type(e).__name__}: {reason}); "
            "create it again with 'cnngraph map'"
        ) from e


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
