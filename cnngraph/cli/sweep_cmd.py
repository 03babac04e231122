"""``cnngraph sweep``: units removed (and accuracy after a short fine-tune) over a range of gamma."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cnngraph import __version__
from cnngraph.cli import prune_cmd
from cnngraph.cli.common import GraphModel, console, handle_errors
from cnngraph.cli.prune_cmd import AggregatorOpt, ArchOpt, DescriptorOpt, RuleOpt, StatOpt, load_trained
from cnngraph.cli.train_cmd import training_progress
from cnngraph.errors import ConfigError


@handle_errors
def sweep_cmd(
    ctx: typer.Context,
    model: GraphModel,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint", help="Checkpoint from 'cnngraph train' (needed for accuracy).", show_default=False
        ),
    ] = None,
    data: Annotated[
        str | None, typer.Option("--data", help="Dataset (default: the checkpoint's).", show_default=False)
    ] = None,
    arch: ArchOpt = None,
    gamma_start: Annotated[float, typer.Option("--gamma-start", help="First gamma.")] = 0.0,
    gamma_stop: Annotated[float, typer.Option("--gamma-stop", help="Last gamma (inclusive).")] = 2.0,
    gamma_step: Annotated[float, typer.Option("--gamma-step", help="Step between gammas.")] = 0.1,
    stat: StatOpt = "mean",
    rule: RuleOpt = "any",
    aggregator: AggregatorOpt = "entropy",
    descriptor: DescriptorOpt = None,
    finetune_epochs: Annotated[
        int,
        typer.Option(
            "--finetune-epochs",
            help="Fine-tune each distinct pruned model this long and report accuracy (0: skip).",
        ),
    ] = 0,
    strategy: Annotated[
        str, typer.Option("--strategy", help="reinit or bridge (with --finetune-epochs).")
    ] = "reinit",
    seed: Annotated[int, typer.Option("--seed", help="Fine-tuning seed.")] = 0,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder for sweep.json and sweep.png.", show_default=False),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """How many units each gamma removes; with --finetune-epochs also the accuracy it leaves.

    The units (chain convolutions, residual branches) come from the checkpoint's model; without
    --checkpoint every convolution counts as a chain unit, which is right for VGG-style models.
    """
    from cnngraph.pruner import plots
    from cnngraph.pruner.pipeline import PruneOptions, check_layers
    from cnngraph.pruner.report import dumps, staged_directory, write_json
    from cnngraph.pruner.sweep import gamma_values, sweep

    if finetune_epochs < 0:
        raise ConfigError(f"--finetune-epochs must be >= 0, got {finetune_epochs}")
    if finetune_epochs > 0 and checkpoint is None:
        raise ConfigError("--finetune-epochs needs --checkpoint (and the data it was trained on)")
    gammas = gamma_values(gamma_start, gamma_stop, gamma_step)
    options = PruneOptions(
        threshold_stat=stat, layer_rule=rule, aggregator=aggregator, strategy=strategy, seed=seed
    )
    options.check()
    net = train_data = test_data = None
    if checkpoint is not None:
        net, _, train_data, test_data = load_trained(ctx, model, checkpoint, data, arch)
    scores = prune_cmd.fetch_or_compute_scores(ctx, model, net, descriptor=descriptor)
    if net is not None:
        check_layers(net, scores)
    bar, update = training_progress("sweeping gamma")
    with bar:
        rows = sweep(scores, gammas, options, net, train_data, test_data, finetune_epochs, update)
    document = {
        "cnngraph_version": __version__,
        "model": model,
        "descriptor": scores.descriptor,
        "options": options.to_dict(),
        "units": "model" if net is not None else "every convolution a chain unit",
        "rows": [r.to_dict() for r in rows],
    }
    if out is not None:
        with staged_directory(out) as tmp:
            write_json(tmp / "sweep.json", document)
            accuracy = [r.accuracy for r in rows] if finetune_epochs > 0 else None
            plots.plot_sweep(gammas, [len(r.removed_units) for r in rows], tmp / "sweep.png", accuracy)
    if as_json:
        console.print_json(dumps(document))
        return
    table = Table(
        title=f"gamma sweep of '{model}' ({aggregator} of {scores.descriptor} weights, {stat}, rule {rule})"
    )
    if net is None:
        table.caption = "no --checkpoint: every convolution counted as a chain unit (VGG-style)"
    for name in ("gamma", "threshold", "units removed", "convolutions removed", "removed", "accuracy"):
        table.add_column(name, justify="left" if name == "removed" else "right")
    for r in rows:
        acc = "-" if r.accuracy is None else f"{100 * r.accuracy:.2f}%"
        th = "-" if r.threshold is None else f"{r.threshold:.5g}"
        removed = "every layer (prune refuses)" if r.every_layer else ",".join(f"c{k}" for k in r.removed)
        table.add_row(f"{r.gamma:g}", th, str(len(r.removed_units)), str(len(r.removed)), removed, acc)
    console.print(table)
    if out is not None:
        console.print(f"wrote [bold]{out / 'sweep.json'}[/] and [bold]{out / 'sweep.png'}[/]")


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep_cmd)
