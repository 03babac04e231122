"""``cnngraph export FILE --format gexf|graphml``: class networks for Gephi."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnngraph.cli.common import check_output_file, console, handle_errors, load_mapping
from cnngraph.errors import ConfigError


@handle_errors
def export_cmd(
    file: Annotated[Path, typer.Argument(help="A mapping file written by 'cnngraph map' (.npz).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write.")],
    fmt: Annotated[str, typer.Option("--format", help="gexf or graphml.")] = "gexf",
    class_name: Annotated[
        str,
        typer.Option("--class", help="Class network to export, or 'all' (one edge per arc per class)."),
    ] = "all",
    descriptor: Annotated[
        str | None,
        typer.Option(
            "--descriptor",
            help="Node values giving the arc weights (the edge 'weight'): mean, median, max or sum "
            "\\[default: the mapping's]; every descriptor is also written as an edge attribute.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Export one class network, or all of them, to GEXF or GraphML (nodes carry layer, i, j)."""
    from cnngraph.mapping.export import FORMATS, export_gexf, export_graphml

    if fmt not in FORMATS:
        raise ConfigError(f"unknown format '{fmt}'; use one of {', '.join(FORMATS)}")
    check_output_file(out)
    network = load_mapping(file)
    chosen = descriptor or str(network.options.get("descriptor", "mean"))
    write = export_gexf if fmt == "gexf" else export_graphml
    try:
        path = write(network, out, classes=class_name, descriptor=chosen)
    except OSError as e:
        raise ConfigError(f"cannot write '{out}' ({e.strerror or e}); choose a writable place") from e
    count = network.num_classes if class_name == "all" else 1
    console.print(
        f"wrote {path}: {network.topology.num_nodes:,} nodes, {count * network.topology.num_arcs:,} edges",
        highlight=False,
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
