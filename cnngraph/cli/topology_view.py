"""``cnngraph inspect MODEL --input-size N``: a model's topology without images or weights."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.table import Table

from cnngraph.cli.common import console


def model_topology_summary(
    source: str, input_size: int, in_channels: int, num_classes: int, width: float
) -> dict[str, Any]:
    """Build ``source`` with its weights on the meta device, trace it and summarise its topology."""
    from cnngraph.errors import ConfigError
    from cnngraph.mapping.topology import model_topology, topology_summary
    from cnngraph.models import ModelSpec

    for value, option in (
        (input_size, "--input-size"),
        (in_channels, "--in-channels"),
        (num_classes, "--num-classes"),
    ):
        if value < 1:
            raise ConfigError(f"{option} must be at least 1, got {value}")
    if width <= 0:
        raise ConfigError(f"--width must be positive, got {width}")
    spec = ModelSpec(
        source, num_classes=num_classes, in_channels=in_channels, input_size=input_size, width=width
    )
    found = model_topology(spec)
    summary = topology_summary(found.topology)
    return {
        "model": source,
        "input_shape": [in_channels, input_size, input_size],
        "seconds": round(found.seconds, 4),
        **summary,
    }


def print_model_topology(
    source: str, input_size: int, in_channels: int, num_classes: int, width: float, as_json: bool
) -> None:
    """Print (or dump as JSON) the topology of ``source`` for ``in_channels x input_size^2`` inputs."""
    summary = model_topology_summary(source, input_size, in_channels, num_classes, width)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    console.print(
        f"{source} on {in_channels}x{input_size}x{input_size} inputs: "
        f"{summary['layers_count']} convolutions, {summary['nodes']:,} nodes, "
        f"{summary['arcs_per_class']:,} arcs per class, "
        f"{summary['layer_pairs']:,} layer pairs (found in {summary['seconds']:.2f} s from shapes alone: "
        "no images, no weights)",
        highlight=False,
    )
    layers = Table(title="layers")
    for col in ("layer", "name", "filters", "HxW", "nodes", "arcs out", "arcs in"):
        layers.add_column(col, justify="left" if col == "name" else "right")
    for r in summary["layers"]:
        layers.add_row(
            str(r["layer"]), r["name"], str(r["filters"]), f"{r['height']}x{r['width']}", f"{r['nodes']:,}",
            f"{r['arcs_out']:,}", f"{r['arcs_in']:,}",
        )  # fmt: skip
    console.print(layers)
    pairs = Table(title="layer pairs (c_a feeds c_b)")
    for col in ("a", "b", "via", "arcs"):
        pairs.add_column(col, justify="left" if col == "via" else "right")
    for e in summary["edges"]:
        pairs.add_row(str(e["src"]), str(e["dst"]), e["via"], f"{e['arcs']:,}")
    console.print(pairs)
