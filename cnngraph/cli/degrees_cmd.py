"""``cnngraph degrees``: per-class in/out/total degree of every node, computed by Cypher, as CSV."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cnngraph.cli.common import (
    GraphModel,
    check_output_file,
    connected,
    console,
    handle_errors,
    neo4j_settings,
)
from cnngraph.errors import counted
from cnngraph.files import atomic_path

if TYPE_CHECKING:  # numpy and the driver are imported when a command runs, not for --help
    import numpy as np

    from cnngraph.queries.scoring import DegreeTable

HEADER = "layer,i,j,class,in,out,total"


def register(app: typer.Typer) -> None:
    app.command("degrees")(degrees)


@handle_errors
def degrees(
    ctx: typer.Context,
    model: GraphModel,
    out: Annotated[Path, typer.Option("--out", help="CSV file to write: one row per node and class.")],
    descriptor: Annotated[
        str, typer.Option("--descriptor", help="Arc weight: mean, median, max or sum over the filters.")
    ] = "mean",
) -> None:
    """Weighted in-, out- and total degree of every node in every class network (degrees.cypher)."""
    from cnngraph.queries.scoring import compute_degrees

    check_output_file(out)
    with connected(ctx) as driver:
        table = compute_degrees(driver, model, descriptor, database=neo4j_settings(ctx).database)
    write_degrees_csv(table, out)
    t, n = table.indegree.shape
    console.print(f"wrote {n * t:,} rows ({n:,} nodes x {counted(t, 'class')}) to {out}")


def write_degrees_csv(table: DegreeTable, path: Path) -> None:
    """Rows node-major, class-minor; written to a temporary name, then renamed."""
    import numpy as np

    t, n = table.indegree.shape
    columns = [
        np.repeat(table.layer, t),
        np.repeat(table.i, t),
        np.repeat(table.j, t),
        np.tile(np.arange(t), n),
    ]
    data = np.column_stack(
        [*columns, table.indegree.T.ravel(), table.outdegree.T.ravel(), table.total.T.ravel()]
    )
    write_csv(path, HEADER, data, ["%d"] * 4 + ["%.17g"] * 3)


def write_csv(path: Path, header: str, data: np.ndarray, fmt: list[str]) -> None:
    """``np.savetxt`` atomically: nothing half-written if it fails."""
    import numpy as np

    with atomic_path(path) as tmp:
        np.savetxt(tmp, data, fmt=fmt, delimiter=",", header=header, comments="")
