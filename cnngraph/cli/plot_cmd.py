"""``cnngraph plot``: pictures of where class-specific information lives, from Neo4j or a mapping file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cnngraph.cli.common import (
    check_output_file,
    connected,
    console,
    err_console,
    handle_errors,
    neo4j_settings,
)
from cnngraph.errors import ConfigError

FIGURES = ("deltas", "classes", "dag", "units")
FIGURE_HELP = {
    "deltas": "delta of every position, one panel per convolution (H x W, one colour scale)",
    "classes": "one layer's per-class degree maps side by side (--layer)",
    "dag": "the layer DAG, execution order left to right, units coloured by verdict",
    "units": "each unit's delta (mean, min-max) against the threshold",
}


def register(app: typer.Typer) -> None:
    app.command("plot")(plot)


@handle_errors
def plot(
    ctx: typer.Context,
    figure: Annotated[
        str,
        typer.Argument(
            help="deltas (delta per position, a panel per convolution), classes (one layer's per-class "
            "degrees), dag (the layer DAG), units (delta per unit against the threshold) or all.",
            show_default=False,
        ),
    ],
    model: Annotated[
        str | None,
        typer.Option("--model", help="Model id in Neo4j ('cnngraph models' lists them).", show_default=False),
    ] = None,
    mapping: Annotated[
        Path | None,
        typer.Option(
            "--mapping", help="Mapping file of 'cnngraph map' instead of Neo4j.", show_default=False
        ),
    ] = None,
    scores: Annotated[
        Path | None,
        typer.Option(
            "--scores",
            help="With --mapping: the CSV of 'cnngraph score --out' (or a JSON of its columns) "
            "\\[default: computed from the mapping, the same numbers].",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="File (.png or .svg) for one figure, a folder for 'all' \\[default: FIGURE.png, or the "
            "folder 'figures'].",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="png or svg, for 'all' and the default names.")
    ] = "png",
    layer: Annotated[
        int | None,
        typer.Option(
            "--layer",
            help="Layer of 'classes' \\[default: the one with the lowest mean delta].",
            show_default=False,
        ),
    ] = None,
    selection: Annotated[
        Path | None,
        typer.Option(
            "--selection",
            help="The JSON of 'cnngraph prune --dry-run --json': verdicts from it.",
            show_default=False,
        ),
    ] = None,
    gamma: Annotated[
        float | None,
        typer.Option(
            "--gamma",
            help="Verdicts from the pruner's rule at this gamma (as 'prune --gamma'); 'units' uses 1 when "
            "no selection is given.",
            show_default=False,
        ),
    ] = None,
    remove: Annotated[
        int | None,
        typer.Option(
            "--remove", help="Verdicts removing this many units (as 'prune --remove').", show_default=False
        ),
    ] = None,
    rule: Annotated[
        str, typer.Option("--rule", help="Layer rule: any, mean or fraction:q (as 'prune').")
    ] = "any",
    stat: Annotated[str, typer.Option("--stat", help="Threshold statistic: mean or median.")] = "mean",
    aggregator: Annotated[
        str, typer.Option("--aggregator", help="Node score: entropy, mean or participation.")
    ] = "entropy",
    descriptor: Annotated[
        str | None,
        typer.Option(
            "--descriptor",
            help="Arc weight of the degrees: mean, median, max or sum "
            "\\[default: the scores' or the mapping's].",
            show_default=False,
        ),
    ] = None,
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help="dag: auto (Graphviz when 'dot' is installed and the model has at most 32 convolutions, "
            "else the layered layout), graphviz or layered.",
        ),
    ] = "auto",
    scale: Annotated[
        str, typer.Option("--scale", help="deltas: rank (each colour an equal share of positions) or linear.")
    ] = "rank",
) -> None:
    """Draw where class-specific information lives (delta maps, class maps, layer DAG, units).

    Delta per position, one layer's per-class degrees, the layer DAG and each unit's delta against
    the threshold, as PNG or SVG.

    From Neo4j (--model; nothing is written: unscored models are scored in memory) or from a mapping
    file (--mapping, with --scores from 'cnngraph score --out' or computed from the mapping)."""
    from cnngraph import figures

    wanted = list(FIGURES) if figure == "all" else [figure]
    if figure not in (*FIGURES, "all"):
        raise ConfigError(f"unknown figure '{figure}'; use {', '.join(FIGURES)} or all")
    if fmt not in ("png", "svg"):
        raise ConfigError(f"--format must be png or svg, got '{fmt}'")
    if (model is None) == (mapping is None):
        raise ConfigError("give either --model NAME (from Neo4j) or --mapping FILE.npz")
    if scores is not None and mapping is None:
        raise ConfigError("--scores goes with --mapping; from Neo4j the stored scores are used")
    if selection is not None and (gamma is not None or remove is not None):
        raise ConfigError("give either --selection or --gamma/--remove, not both")
    paths = _outputs(wanted, out, fmt, figure == "all")
    for path in paths.values():
        check_output_file(path)

    with err_console.status("reading the model"):
        data = _data(ctx, model, mapping, scores, descriptor)
    if data.units_note:
        err_console.print(f"note: {data.units_note}", highlight=False, soft_wrap=True)
    chosen = None
    if selection is not None:
        chosen = figures.read_selection(selection, data)
    elif gamma is not None or remove is not None:
        chosen = figures.select(data, 1.0 if gamma is None else gamma, remove=remove, threshold_stat=stat,
                                layer_rule=rule, aggregator=aggregator)  # fmt: skip
    for name, path in paths.items():
        with err_console.status(f"drawing {name}"):
            said = _draw(figures, name, data, path, chosen, layer, aggregator, engine, scale, rule, stat)
        console.print(f"wrote {path}: {said}", highlight=False, soft_wrap=True)


def _outputs(wanted: list[str], out: Path | None, fmt: str, folder: bool) -> dict[str, Path]:
    if folder:
        base = out or Path("figures")
        if base.suffix.lower() in (".png", ".svg"):
            raise ConfigError(f"'all' writes four files: give --out a folder, not '{base}'")
        return {name: base / f"{name}.{fmt}" for name in wanted}
    path = out or Path(f"{wanted[0]}.{fmt}")
    if path.suffix.lower() not in (".png", ".svg"):
        raise ConfigError(f"--out '{path}': give a file name ending in .png or .svg")
    return {wanted[0]: path}


def _data(
    ctx: typer.Context, model: str | None, mapping: Path | None, scores: Path | None, descriptor: str | None
) -> Any:
    from cnngraph import figures

    if mapping is not None:
        return figures.from_mapping(mapping, scores, descriptor)
    assert model is not None
    # Open until the command ends: 'classes' reads the per-class degrees when it is drawn.
    driver = ctx.with_resource(connected(ctx))
    return figures.from_neo4j(driver, model, neo4j_settings(ctx).database, descriptor)


def _draw(
    figures: Any,
    name: str,
    data: Any,
    path: Path,
    selection: Any,
    layer: int | None,
    aggregator: str,
    engine: str,
    scale: str,
    rule: str,
    stat: str,
) -> str:
    if name == "deltas":
        panels = figures.plot_delta_maps(data, path, selection, aggregator, scale)
        return f"{panels.count} panels, one per convolution"
    if name == "classes":
        k = layer if layer is not None else _most_specific_layer(data, aggregator)
        panels = figures.plot_class_degrees(data, k, path)
        return f"{panels.count} class maps of layer {k} ({data.layers[k].name})"
    if name == "dag":
        drawn = figures.plot_layer_dag(data, path, selection, engine)
        return f"{len(drawn.boxes)} convolutions, {len(drawn.arrows)} FEEDS arrows ({drawn.engine})"
    chosen = selection or figures.select(
        data, 1.0, threshold_stat=stat, layer_rule=rule, aggregator=aggregator
    )
    figures.plot_unit_deltas(chosen, path, data.model)
    default = "" if selection is not None else " (gamma 1, prune's default)"
    threshold = "no threshold" if chosen.threshold is None else f"threshold {chosen.threshold:.6g}"
    return f"{len(chosen.rows)} units, {threshold}{default}"


def _most_specific_layer(data: Any, aggregator: str) -> int:
    import numpy as np

    delta = data.scores.get(aggregator)
    sums = np.bincount(data.scores.layer, weights=delta, minlength=len(data.layers))
    counts = np.bincount(data.scores.layer, minlength=len(data.layers))
    return int(np.argmin(np.divide(sums, np.maximum(counts, 1))))
