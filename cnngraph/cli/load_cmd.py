"""``cnngraph load FILE.npz``: write a saved mapping into Neo4j (batched, resumable)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import TaskID

from cnngraph.cli.common import (
    connected,
    console,
    err_console,
    handle_errors,
    load_mapping,
    neo4j_settings,
    progress,
)
from cnngraph.cli.interrupts import between_transactions
from cnngraph.errors import counted
from cnngraph.loader.batches import DEFAULT_BATCH

if TYPE_CHECKING:  # the driver is imported when a command runs, not for --help
    from cnngraph.loader.writer import LoadReport


def register(app: typer.Typer) -> None:
    app.command("load")(load)


@handle_errors
def load(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Mapping file written by 'cnngraph map' (.npz).")],
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="Model id in the graph \\[default: the file name without .npz].",
            show_default=False,
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
    layout: Annotated[
        str,
        typer.Option(
            "--layout",
            help="How arcs are stored: 'per-class' (one relationship per arc and class, the design's "
            "class layers) or 'compact' (one relationship per arc with per-class weight lists; "
            "t times fewer relationships, for many classes or big inputs).",
        ),
    ] = "per-class",
    descriptors: Annotated[
        str | None,
        typer.Option(
            "--descriptors",
            help="Descriptors whose arc weights are stored, comma-separated, e.g. mean,median "
            "\\[default: all four, mean,median,max,sum]; fewer make a smaller, faster load, and only "
            "the stored ones can be scored.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Load a multilayer network into Neo4j.

    Loading the same mapping again changes nothing; an interrupted load is completed by running
    the same command again."""
    from cnngraph.loader.catalog import check_model_name
    from cnngraph.loader.writer import check_layout, load_network

    model = check_model_name(file.name.removesuffix(".npz") if name is None else name)
    check_layout(layout)
    network = load_mapping(file)
    if descriptors is not None:
        network = network.with_descriptors([d.strip() for d in descriptors.split(",") if d.strip()])
    settings = neo4j_settings(ctx)
    with connected(ctx) as driver, progress() as bar, between_transactions(_notice) as check_interrupt:
        nodes_task = bar.add_task("positions", total=network.topology.num_nodes, rate="")
        arcs_task = bar.add_task("arcs", total=network.topology.num_arcs * network.num_classes, rate="")
        meter = _RateMeter(network.num_classes)
        deleting: dict[str, TaskID] = {}

        def on_batch(phase: str, done: int, total: int) -> None:
            if phase == "deleting":  # the old graph of --replace (or of an interrupted drop)
                if not deleting:
                    deleting["task"] = bar.add_task("deleting old positions", total=total, rate="")
                bar.update(deleting["task"], completed=done)
            elif phase == "nodes":
                bar.update(nodes_task, completed=done)
            else:
                bar.update(arcs_task, completed=done * network.num_classes, rate=meter.rate(done))
            check_interrupt()  # a Ctrl-C stops here, after a committed batch

        report = load_network(
            driver,
            network,
            model,
            database=settings.database,
            replace=replace,
            batch_size=batch_size,
            progress=on_batch,
            layout=layout,
        )
    _print(report, as_json)


def _notice(message: str) -> None:
    err_console.print(message, style="yellow", highlight=False, soft_wrap=True)


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
        return f"{(done - first) * self.classes / seconds:,.0f} class-arcs/s" if seconds > 0 else ""


def _print(report: LoadReport, as_json: bool) -> None:
    if as_json:
        data = {
            "model": report.model,
            "status": report.status,
            "nodes": report.nodes,
            "arcs": report.arcs,
            "relationships": report.relationships,
            "seconds": round(report.seconds, 3),
            "delete_seconds": round(report.delete_seconds, 3),
            "relationships_per_second": round(report.relationships_per_second, 1),
            "layout": report.layout,
            "classes": report.classes,
        }
        console.print_json(json.dumps(data))
        return
    if report.status == "already loaded":
        console.print(
            f"model '{report.model}' is already loaded "
            f"({report.relationships:,} relationships); nothing to do"
        )
        return
    classes = report.relationships // max(report.arcs, 1)
    deleted = f" (after {report.delete_seconds:.1f} s deleting the old one)" if report.delete_seconds else ""
    stored = (
        f"{report.arcs:,} arcs (compact layout: one relationship each, weights of "
        f"{counted(report.classes, 'class')})"
        if report.layout == "compact"
        else f"{report.relationships:,} relationships ({report.arcs:,} arcs x {counted(classes, 'class')})"
    )
    console.print(
        f"model '{report.model}' {report.status}: {report.nodes:,} positions, {stored} "
        f"in {report.seconds:.1f} s, {report.relationships_per_second:,.0f} relationships/s{deleted}",
        soft_wrap=True,
    )
