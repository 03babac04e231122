"""``cnngraph score``: delta of every node by Cypher, written into the graph and optionally to CSV."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from cnngraph.cli.common import (
    GraphModel,
    check_output_file,
    connected,
    console,
    handle_errors,
    neo4j_settings,
)
from cnngraph.cli.degrees_cmd import write_csv

if TYPE_CHECKING:  # numpy and the driver are imported when a command runs, not for --help
    from cnngraph.scores import NodeScores


def register(app: typer.Typer) -> None:
    app.command("score")(score)


@handle_errors
def score(
    ctx: typer.Context,
    model: GraphModel,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="CSV file: one row per node (layer,i,j,delta,...).", show_default=False),
    ] = None,
    descriptor: Annotated[
        str | None,
        typer.Option(
            "--descriptor",
            help="Arc weight: mean, median, max or sum over the filters \\[default: the mapping's].",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the per-layer summary as JSON.")] = False,
) -> None:
    """Score every node by the entropy of its degrees across class networks (scores.cypher).

    The scores are stored on the nodes as delta, delta_entropy, delta_mean, delta_participation."""
    from cnngraph.loader.guard import unchanged_model
    from cnngraph.queries.scoring import compute_scores, layer_summary

    if out is not None:
        check_output_file(out)
    database = neo4j_settings(ctx).database
    # One guard around both reads: the summary must describe the graph just scored (docs/GRAPH.md).
    with connected(ctx) as driver, unchanged_model(driver, model, database):
        scores = compute_scores(driver, model, descriptor, database=database)
        summary = layer_summary(driver, model, database=database)
    if out is not None:
        write_scores_csv(scores, out)
    if as_json:
        console.print_json(json.dumps({"model": model, "descriptor": scores.descriptor, "layers": summary}))
        return
    console.print(_summary_table(model, scores.descriptor, summary))
    if out is not None:
        console.print(f"wrote {scores.layer.size:,} rows to {out}")


def write_scores_csv(scores: NodeScores, path: Path) -> None:
    """``layer,i,j,delta,entropy,mean,participation`` (delta = entropy), in (layer, i, j) order."""
    import numpy as np

    from cnngraph.queries.scoring import AGGREGATORS

    values = [scores.get(a) for a in AGGREGATORS]
    data = np.column_stack([scores.layer, scores.i, scores.j, scores.get("entropy"), *values])
    header = ",".join(["layer", "i", "j", "delta", *AGGREGATORS])
    write_csv(path, header, data, ["%d"] * 3 + ["%.17g"] * (1 + len(values)))


def _summary_table(model: str, descriptor: str, summary: list[dict[str, Any]]) -> Table:
    table = Table(title=f"delta per layer, model '{model}' (descriptor {descriptor})")
    for column in (
        "layer",
        "name",
        "filters",
        "grid",
        "nodes",
        "mean delta",
        "std",
        "min",
        "max",
        "mean degree",
    ):
        table.add_column(column, justify="left" if column == "name" else "right")
    for row in summary:
        table.add_row(
            str(row["layer"]),
            str(row["name"]),
            str(row["filters"]),
            f"{row['height']}x{row['width']}",
            f"{row['nodes']:,}",
            f"{row['mean_delta']:.4f}",
            f"{row['std_delta'] or 0.0:.4f}",
            f"{row['min_delta']:.4f}",
            f"{row['max_delta']:.4f}",
            f"{row['mean_degree']:.4g}",
        )
    return table
