"""``cnngraph load FILE.npz``: write a saved mapping into Neo4j (batched, resumable)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from cnngraph.cli.common import connected, console, handle_errors, neo4j_settings, progress
from cnngraph.loader.writer import DEFAULT_BATCH, LoadReport, load_network
from cnngraph.mapping.network import MultilayerNetwork


def register(app: typer.Typer) -> None:
    app.command("load")(load)


@handle_errors
def load(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Mapping file written by 'cnngraph map' (.npz).")],
    name: Annotated[
        str | None,
        typer.Option(
            "--name", help="Model id in the graph [default: the file name without .npz].", show_default=False
        ),
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Delete a model of the same name first.")
    ] = False,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size", min=1, help="Arcs per transaction (each writes one relationship per class)."
        ),
    ] = DEFAULT_BATCH,
    as_json: Annotated[bool, typer.Option("--json", help="Print the load report as JSON.")] = False,
) -> None:
    """Load a multilayer network into Neo4j. Loading the same mapping again changes nothing; an
    interrupted load is completed by running the same command again."""
    network = MultilayerNetwork.load(file)
    model = name or file.name.removesuffix(".npz")
    settings = neo4j_settings(ctx)
    with connected(ctx) as driver, progress() as bar:
        nodes_task = bar.add_task("positions", total=network.topology.num_nodes, rate="")
        arcs_task = bar.add_task("arcs", total=network.topology.num_arcs * network.num_classes, rate="")
        meter = _RateMeter(network.num_classes)

        def on_batch(phase: str, done: int, total: int) -> None:
            if phase == "nodes":
                bar.update(nodes_task, completed=done)
            else:
                bar.update(arcs_task, completed=done * network.num_classes, rate=meter.rate(done))

        report = load_network(
            driver,
            network,
            model,
            database=settings.database,
            replace=replace,
            batch_size=batch_size,
            progress=on_batch,
        )
    _print(report, as_json)


class _RateMeter:
    """Relationships (arc x class) written per second since the first report."""

    def __init__(self, classes: int) -> None:
        self.classes = classes
        self.start: tuple[float, int] | None = None

    def rate(self, done: int) -> str:
        now = time.perf_counter()
        if self.start is None:
            self.start = (now, done)
            return ""
        seconds, first = now - self.start[0], self.start[1]
        return f"{(done - first) * self.classes / seconds:,.0f} arcs/s" if seconds > 0 else ""


def _print(report: LoadReport, as_json: bool) -> None:
    if as_json:
        data = {
            "model": report.model,
            "status": report.status,
            "nodes": report.nodes,
            "arcs": report.arcs,
            "relationships": report.relationships,
            "seconds": round(report.seconds, 3),
            "relationships_per_second": round(report.relationships_per_second, 1),
        }
        console.print_json(json.dumps(data))
        return
    if report.status == "already loaded":
        console.print(
            f"model '{report.model}' is already loaded ({report.relationships:,} arcs); nothing to do"
        )
        return
    classes = report.relationships // max(report.arcs, 1)
    console.print(
        f"model '{report.model}' {report.status}: {report.nodes:,} positions, {report.relationships:,} arcs "
        f"({report.arcs:,} x {classes} classes) in {report.seconds:.1f} s, "
        f"{report.relationships_per_second:,.0f} arcs/s"
    )
