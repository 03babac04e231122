"""``cnngraph prune``: select units by their scores in Neo4j, remove them, fine-tune, compare."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from cnngraph.cli.common import GraphModel, connected, console, handle_errors, neo4j_settings
from cnngraph.cli.train_cmd import AugmentOpt, PrecisionOpt, ScheduleOpt, training_progress, warn_precision
from cnngraph.errors import ConfigError, PruningError, counted

GammaOpt = Annotated[
    float, typer.Option("--gamma", help="Threshold factor: th = gamma x stat(delta) over all nodes.")
]
StatOpt = Annotated[str, typer.Option("--stat", help="Threshold statistic: mean or median.")]
RuleOpt = Annotated[
    str,
    typer.Option(
        "--rule",
        help="Layer rule: 'any' (kept if one node is selected), 'fraction:q' (if a share q is) "
        "or 'mean' (if the unit's mean delta is above the threshold).",
    ),
]
AggregatorOpt = Annotated[
    str,
    typer.Option(
        "--aggregator", help="Node score: entropy (the paper), mean (class-blind) or participation."
    ),
]
DescriptorOpt = Annotated[
    str | None,
    typer.Option(
        "--descriptor",
        help="Arc weight the scores use: mean, median, max or sum over the filters \\[default: the "
        "stored scores', else the mapping's]; scores of another descriptor are computed first.",
        show_default=False,
    ),
]


def fetch_or_compute_scores(
    ctx: typer.Context, model: str, net: Any = None, write: bool = True, descriptor: str | None = None
) -> Any:
    """The model's node scores from Neo4j; computed there first when none are stored yet, or when
    the stored ones use another ``descriptor`` than the one asked for.

    Refuses, before computing or writing anything, a model that is not completely loaded and (given
    the checkpoint's ``net``) a graph whose layers are not the checkpoint's convolutions. With
    ``write=False`` (``prune --dry-run``) missing scores are computed in memory, not stored.
    """
    from cnngraph.loader.guard import unchanged_model
    from cnngraph.mapping.network import DESCRIPTORS
    from cnngraph.queries.scoring import compute_scores, fetch_scores, preview_scores

    if descriptor is not None and descriptor not in DESCRIPTORS:
        raise ConfigError(f"unknown descriptor '{descriptor}'; use one of {', '.join(DESCRIPTORS)}")
    database = neo4j_settings(ctx).database
    with connected(ctx) as driver, unchanged_model(driver, model, database) as snap:  # one model throughout
        props = snap.props
        if net is not None:
            _check_layer_count(net, model, int(props.get("num_layers", 0)))
        stored = props.get("scored_descriptor")
        if stored is not None and descriptor in (None, stored):
            return fetch_scores(driver, model, database=database)
        why = f"no stored scores for '{model}'"
        if stored is not None:
            why = f"the stored scores of '{model}' use '{stored}', not '{descriptor}'"
        if not write:
            console.print(f"{why}; computing them in memory (dry run)", style="dim")
            return preview_scores(driver, model, descriptor, database=database)
        console.print(f"{why}; computing them in Neo4j", style="dim")
        return compute_scores(driver, model, descriptor, database=database)


def _check_layer_count(net: Any, model: str, layers: int) -> None:
    """The graph's layers must be the checkpoint's convolutions (the check prune repeats on scores)."""
    from cnngraph.pruner.units import conv_names

    convolutions = len(conv_names(net))
    if layers != convolutions:
        raise PruningError(
            f"graph model '{model}' has {counted(layers, 'layer')} but the checkpoint's model has "
            f"{counted(convolutions, 'convolution')}; map and load this checkpoint first"
        )


ArchOpt = Annotated[
    str | None,
    typer.Option(
        "--arch",
        help="Architecture of a checkpoint not written by 'cnngraph train', as 'cnngraph map' takes MODEL "
        "\\[default: the checkpoint's, else the one recorded with the mapping in Neo4j].",
        show_default=False,
    ),
]


def recorded_spec(ctx: typer.Context, model: str) -> dict[str, Any] | None:
    """The model spec 'cnngraph map' recorded on the graph's ``:Model`` node, if it recorded one."""
    from cnngraph.loader.catalog import require_model

    with connected(ctx) as driver:
        props = require_model(driver, model, neo4j_settings(ctx).database, complete=False)
    from cnngraph.models import spec_on_graph

    return spec_on_graph(props)


def load_trained(
    ctx: typer.Context, model: str, checkpoint: Path, data: str | None, arch: str | None = None
) -> tuple[Any, Any, Any, Any]:
    """``(net, spec, train_data, test_data)`` for a checkpoint, from 'cnngraph train' or elsewhere.

    The data split is the one the checkpoint records, else ``--data`` (a seeded 80/20 split).
    The architecture is ``--arch``, else the checkpoint's, else the one recorded with the mapping,
    so every model that 'cnngraph map' took (a plain state dict included) can be pruned.
    """
    from cnngraph.datasets import check_recorded_source
    from cnngraph.models import load_model, read_checkpoint, spec_for_arch
    from cnngraph.pruner.data import DataSplit, load_split

    _, info = read_checkpoint(checkpoint)
    recorded = info.get("data")
    if isinstance(recorded, dict) and "source" in recorded:
        if data is None:
            check_recorded_source(str(recorded["source"]), checkpoint)
        split = DataSplit.from_dict({**recorded, "source": data or recorded["source"]})
    elif data is not None:
        split = DataSplit(data)
    else:
        raise ConfigError(f"checkpoint '{checkpoint}' records no dataset; give --data")
    train_data, test_data = load_split(split)
    own = info.get("spec") if isinstance(info.get("spec"), dict) else None
    base = own if own is not None else recorded_spec(ctx, model)
    c, h, _ = train_data.input_shape
    spec = spec_for_arch(
        arch, base, lambda: {"num_classes": len(train_data.class_names), "in_channels": c, "input_size": h}
    )
    if spec is None:
        raise ConfigError(
            f"checkpoint '{checkpoint}' does not say which model it is and the mapping of '{model}' "
            "recorded none; give --arch (as 'cnngraph map' took MODEL)"
        )
    net, spec = load_model(spec, checkpoint)
    return net, spec, train_data, test_data


def selection_table(selection: Any) -> Table:
    """One row per unit: kind, convolutions, nodes, selected nodes, delta statistics, the verdict.

    A chain convolution, a residual branch with its convolutions, or a convolution that is not
    removable, with why.
    """
    th = "" if selection.threshold is None else f", threshold {selection.threshold:.6g}"
    table = Table(title=f"Unit selection ({selection.method}{th})")
    columns = ("unit", "kind", "name", "convolutions", "nodes", "selected", "mean delta", "min delta",
               "max delta", "verdict")  # fmt: skip
    left = ("kind", "name", "convolutions", "verdict")
    for name in columns:
        table.add_column(name, justify="left" if name in left else "right")
    styles = {"kept": "[green]kept[/]", "removed": "[red]removed[/]"}
    for r in selection.rows:
        kind = {"chain": "chain conv", "residual-branch": "residual branch"}.get(r.kind, "not removable")
        convs = ", ".join(f"c{k}" for k in r.convs)
        verdict = styles.get(r.verdict(), f"[dim]stays: {escape(r.reason)}[/]")
        table.add_row(
            f"u{r.unit}", kind, escape(r.name), convs, str(r.nodes), str(r.selected),
            f"{r.mean:.5g}", f"{r.min:.5g}", f"{r.max:.5g}", verdict,
        )  # fmt: skip
    return table


def comparison_table(rows: list[Any]) -> Table:
    """The paper's table: original, pruned and the change (percentage points for rates, else relative)."""
    from cnngraph.pruner.metrics import format_value

    table = Table(
        title="Original vs pruned",
        caption="change: rates in percentage points (pp), the rest relative (%)",
    )
    for name in ("", "original", "pruned", "change"):
        table.add_column(name, justify="left" if not name else "right")
    for r in rows:
        table.add_row(
            r.label, format_value(r.original, r.unit), format_value(r.pruned, r.unit), r.change_text()
        )
    return table


@handle_errors
def prune_cmd(
    ctx: typer.Context,
    model: GraphModel,
    checkpoint: Annotated[
        Path, typer.Option("--checkpoint", help="State-dict checkpoint ('cnngraph train' or your own).")
    ],
    data: Annotated[
        str | None,
        typer.Option(
            "--data", help="Dataset (default: the one recorded in the checkpoint).", show_default=False
        ),
    ] = None,
    arch: ArchOpt = None,
    gamma: GammaOpt = 1.0,
    remove: Annotated[
        int | None,
        typer.Option(
            "--remove",
            help="Remove this many removable units: gamma is set (instead of --gamma) halfway between "
            "the scores that decide the N-th and (N+1)-th unit under --rule; tied units go together.",
            show_default=False,
        ),
    ] = None,
    stat: StatOpt = "mean",
    rule: RuleOpt = "any",
    aggregator: AggregatorOpt = "entropy",
    descriptor: DescriptorOpt = None,
    select: Annotated[
        str,
        typer.Option(
            "--select",
            help="entropy (by score), or a baseline removing as many removable units: random, "
            "weight-norm (smallest mean |weight|) or last (the deepest).",
        ),
    ] = "entropy",
    seed: Annotated[int, typer.Option("--seed", help="Seed of fine-tuning and of --select random.")] = 0,
    strategy: Annotated[
        str, typer.Option("--strategy", help="reinit (new consumer layer) or bridge (1x1 conv adapter).")
    ] = "reinit",
    epochs: Annotated[int, typer.Option("--epochs", help="Fine-tuning epochs (0: none).")] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per fine-tuning batch.")] = 64,
    lr: Annotated[float, typer.Option("--lr", help="Fine-tuning learning rate.")] = 0.01,
    augment: AugmentOpt = False,
    schedule: ScheduleOpt = "constant",
    precision: PrecisionOpt = "fp32",
    latency_repeats: Annotated[
        int, typer.Option("--latency-repeats", help="Timed single-image runs whose median is the latency.")
    ] = 30,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the layer selection and stop.")] = False,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (replaced atomically).")] = Path(
        "pruned"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Prune the layers whose nodes score low, fine-tune, and compare with the original.

    Writes OUT/pruned.pt (state dict) + OUT/pruned.json (recipe), OUT/report.json,
    OUT/delta_heatmap.png and OUT/layers.png.
    """
    from cnngraph.pruner.pipeline import PruneOptions, check_layers, choose_layers, prune_model, write_outputs
    from cnngraph.pruner.report import dumps

    options = PruneOptions(
        gamma=gamma, remove=remove, threshold_stat=stat, layer_rule=rule, aggregator=aggregator,
        select=select, strategy=strategy, seed=seed, epochs=epochs, batch_size=batch_size, lr=lr,
        augment=augment, schedule=schedule, precision=precision,
        latency_repeats=latency_repeats,
    )  # fmt: skip
    options.check()
    if not dry_run and options.epochs > 0:  # precision only matters to the fine-tune
        warn_precision(options.precision, options.device)
    net, spec, train_data, test_data = load_trained(ctx, model, checkpoint, data, arch)
    scores = fetch_or_compute_scores(ctx, model, net, write=not dry_run, descriptor=descriptor)
    check_layers(net, scores)
    if dry_run:
        selection = choose_layers(net, scores, options)
        if as_json:
            console.print_json(dumps(selection.to_dict()))
        else:
            console.print(selection_table(selection))
        return
    bar, update = training_progress("fine-tuning")
    with bar:
        result = prune_model(net, spec, scores, train_data, test_data, options, progress=update)
    paths = write_outputs(result, scores, out)
    if as_json:
        console.print_json(dumps({**result.report, "files": {k: str(v) for k, v in paths.items()}}))
        return
    from cnngraph.pruner.metrics import compare

    console.print(selection_table(result.selection))
    console.print(comparison_table(compare(result.original, result.result)))
    units, convs = len(result.pruned.units), len(result.pruned.removed)
    console.print(f"removed {units} of {result.selection.num_removable} removable units ({convs} of "
                  f"{len(result.pruned.conv_names)} convolutions); outputs in [bold]{out}[/]")  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command("prune")(prune_cmd)
