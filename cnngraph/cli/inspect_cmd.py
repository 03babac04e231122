"""``cnngraph inspect FILE``: a per-layer summary of a saved mapping."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from cnngraph.cli.common import console, handle_errors, load_mapping
from cnngraph.errors import counted

if TYPE_CHECKING:
    from cnngraph.mapping.network import MultilayerNetwork


def layer_table(rows: list[dict[str, Any]], descriptor: str) -> Table:
    """The per-layer table shared by ``map`` and ``inspect``."""
    table = Table(title=f"layers (node values: {descriptor} over filters, all classes)")
    for col in ("layer", "name", "filters", "HxW", "nodes", "arcs out", "arcs in", "mean", "min", "max"):
        table.add_column(col, justify="left" if col == "name" else "right")
    for r in rows:
        table.add_row(
            str(r["layer"]), r["name"], str(r["filters"]), f"{r['height']}x{r['width']}",
            f"{r['nodes']:,}", f"{r['arcs_out']:,}", f"{r['arcs_in']:,}",
            f"{r['mean_value']:.4g}", f"{r['min_value']:.4g}", f"{r['max_value']:.4g}",
        )  # fmt: skip
    return table


def print_summary(network: MultilayerNetwork, descriptor: str) -> None:
    """Totals, the layer table, the classes and the options of ``network``."""
    from cnngraph.mapping.summary import network_summary

    summary = network_summary(network, descriptor)
    console.print(
        f"{summary['nodes']:,} nodes, {summary['arcs_per_class']:,} arcs per class, "
        f"{counted(network.num_classes, 'class')}"
    )
    subset = network.options.get("class_indices")
    if subset is not None:
        console.print(
            f"class subset: {len(subset)} of the dataset's {network.options.get('dataset_classes')} classes, "
            f"dataset indices {', '.join(str(h) for h in subset)}",
            highlight=False,
            soft_wrap=True,
        )
    console.print(layer_table(summary["layers"], descriptor))
    classes = Table(title="classes")
    classes.add_column("class")
    classes.add_column("images", justify="right")
    for c in summary["classes"]:
        classes.add_row(c["name"], str(c["images"]))
    console.print(classes)
    options = ", ".join(f"{k}={v}" for k, v in network.options.items())
    console.print(f"options: {options}", highlight=False, soft_wrap=True)


@handle_errors
def inspect_cmd(
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE|MODEL",
            help="A mapping file written by 'cnngraph map' (.npz); or, with --input-size, a model named as "
            "for 'cnngraph map' (vgg16, torchvision:NAME, file.py:factory), whose topology is printed "
            "without images or weights.",
        ),
    ],
    descriptor: Annotated[
        str | None,
        typer.Option(
            "--descriptor",
            help="Node values to summarise: mean, median, max or sum over the filters "
            "\\[default: the mapping's].",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    input_size: Annotated[
        int | None,
        typer.Option(
            "--input-size",
            help="Inspect MODEL's topology for square inputs of this side: nodes, arcs and layer pairs "
            "from shapes alone (weights on the meta device, so a model too big for memory works too).",
            show_default=False,
        ),
    ] = None,
    in_channels: Annotated[int, typer.Option("--in-channels", help="Input channels of MODEL.")] = 3,
    num_classes: Annotated[int, typer.Option("--num-classes", help="Outputs of MODEL.")] = 10,
    width: Annotated[float, typer.Option("--width", help="Width multiplier of a reference MODEL.")] = 1.0,
) -> None:
    """Summarise a mapping per layer, or a model's topology with --input-size.

    For a mapping file: filters, size, nodes, arcs, node values and classes per layer. With
    --input-size, the topology of a model without images or weights."""
    from cnngraph.mapping.summary import network_summary

    if input_size is not None:
        from cnngraph.cli.topology_view import print_model_topology

        print_model_topology(str(file), input_size, in_channels, num_classes, width, as_json)
        return

    network = load_mapping(file)
    chosen = descriptor or str(network.options.get("descriptor", "mean"))
    if as_json:
        typer.echo(json.dumps(network_summary(network, chosen), indent=2))
        return
    print_summary(network, chosen)


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect_cmd)
