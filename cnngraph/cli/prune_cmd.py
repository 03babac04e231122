"""``cnngraph prune``: select layers by their scores in Neo4j, remove them, fine-tune, compare."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cnngraph.cli.common import GraphModel, connected, console, handle_errors, neo4j_settings
from cnngraph.cli.train_cmd import training_progress
from cnngraph.errors import ConfigError, GraphNotFoundError, Neo4jError

GammaOpt = Annotated[
    float, typer.Option("--gamma", help="Threshold factor: th = gamma x stat(delta) over all nodes.")
]
StatOpt = Annotated[str, typer.Option("--stat", help="Threshold statistic: mean or median.")]
RuleOpt = Annotated[
    str, typer.Option("--rule", help="Layer rule: 'any' (kept if one node is selected) or 'fraction:q'.")
]
AggregatorOpt = Annotated[
    str,
    typer.Option(
        "--aggregator", help="Node score: entropy (the paper), mean (class-blind) or participation."
    ),
]


def fetch_or_compute_scores(ctx: typer.Context, model: str) -> Any:
    """The model's node scores from Neo4j; computed there first when none are stored yet."""
    from cnngraph.queries.scoring import compute_scores, fetch_scores

    database = neo4j_settings(ctx).database
    with connected(ctx) as driver:
        try:
            return fetch_scores(driver, model, database=database)
        except GraphNotFoundError:
            raise
        except Neo4jError:
            console.print(f"no stored scores for '{model}'; computing them in Neo4j", style="dim")
            return compute_scores(driver, model, database=database)


def load_trained(checkpoint: Path, data: str | None) -> tuple[Any, Any, Any, Any]:
    """``(model, spec, train_data, test_data)`` with the split recorded by 'cnngraph train'."""
    from cnngraph.models import load_model, read_checkpoint
    from cnngraph.pruner.data import DataSplit, load_split

    net, spec = load_model(None, checkpoint)
    _, info = read_checkpoint(checkpoint)
    recorded = info.get("data")
    if isinstance(recorded, dict) and "source" in recorded:
        split = DataSplit.from_dict({**recorded, "source": data or recorded["source"]})
    elif data is not None:
        split = DataSplit(data)
    else:
        raise ConfigError(f"checkpoint '{checkpoint}' records no dataset; give --data")
    train_data, test_data = load_split(split)
    return net, spec, train_data, test_data


def selection_table(selection: Any) -> Table:
    """Per layer: nodes, selected nodes, delta statistics and the verdict."""
    th = "" if selection.threshold is None else f", threshold {selection.threshold:.6g}"
    table = Table(title=f"Layer selection ({selection.method}{th})")
    for name in ("layer", "name", "nodes", "selected", "mean delta", "min delta", "max delta", ""):
        table.add_column(name, justify="left" if name in ("name", "") else "right")
    for r in selection.rows:
        verdict = "[green]kept[/]" if r.kept else "[red]removed[/]"
        table.add_row(
            f"c{r.layer}",
            r.name,
            str(r.nodes),
            str(r.selected),
            f"{r.mean:.5g}",
            f"{r.min:.5g}",
            f"{r.max:.5g}",
            verdict,
        )
    return table


def comparison_table(rows: list[Any]) -> Table:
    """The paper's table: original, pruned and the relative change."""
    from cnngraph.pruner.metrics import format_value

    table = Table(title="Original vs pruned")
    for name in ("", "original", "pruned", "change"):
        table.add_column(name, justify="left" if not name else "right")
    for r in rows:
        change = "-" if r.change_pct is None else f"{r.change_pct:+.2f}%"
        table.add_row(r.label, format_value(r.original, r.unit), format_value(r.pruned, r.unit), change)
    return table


@handle_errors
def prune_cmd(
    ctx: typer.Context,
    model: GraphModel,
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="Checkpoint written by 'cnngraph train'.")],
    data: Annotated[
        str | None,
        typer.Option(
            "--data", help="Dataset (default: the one recorded in the checkpoint).", show_default=False
        ),
    ] = None,
    gamma: GammaOpt = 1.0,
    stat: StatOpt = "mean",
    rule: RuleOpt = "any",
    aggregator: AggregatorOpt = "entropy",
    select: Annotated[
        str,
        typer.Option(
            "--select", help="entropy (by score), random or weight-norm (baselines removing as many layers)."
        ),
    ] = "entropy",
    seed: Annotated[int, typer.Option("--seed", help="Seed of fine-tuning and of --select random.")] = 0,
    strategy: Annotated[
        str, typer.Option("--strategy", help="reinit (new consumer layer) or bridge (1x1 conv adapter).")
    ] = "reinit",
    epochs: Annotated[int, typer.Option("--epochs", help="Fine-tuning epochs (0: none).")] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per fine-tuning batch.")] = 64,
    lr: Annotated[float, typer.Option("--lr", help="Fine-tuning learning rate.")] = 0.01,
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
        gamma=gamma, threshold_stat=stat, layer_rule=rule, aggregator=aggregator, select=select,
        strategy=strategy, seed=seed, epochs=epochs, batch_size=batch_size, lr=lr,
        latency_repeats=latency_repeats,
    )  # fmt: skip
    options.check()
    net, spec, train_data, test_data = load_trained(checkpoint, data)
    scores = fetch_or_compute_scores(ctx, model)
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
    console.print(f"removed {len(result.pruned.removed)} of {len(result.pruned.conv_names)} convolutions; "
                  f"outputs in [bold]{out}[/]")  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command("prune")(prune_cmd)
