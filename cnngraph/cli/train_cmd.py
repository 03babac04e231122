"""``cnngraph train``: train the baseline model on a dataset (seeded) and write its checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from cnngraph import __version__
from cnngraph.cli.common import check_output_file, console, err_console, fail, handle_errors, progress
from cnngraph.errors import ConfigError, DataError

if TYPE_CHECKING:
    from torch import nn

    from cnngraph.models import ModelSpec

AugmentOpt = Annotated[
    bool,
    typer.Option("--augment", help="Random crop (4-px zero padding) and horizontal flip of each image."),
]
ScheduleOpt = Annotated[
    str,
    typer.Option(
        "--schedule", help="Learning rate per batch: constant, cosine (from --lr) or onecycle (peak --lr)."
    ),
]
PrecisionOpt = Annotated[
    str,
    typer.Option(
        "--precision",
        help="fp32, or bf16: bfloat16 autocast mixed precision for training (weights stay fp32); "
        "about 2x faster on CPUs with AMX/AVX512-BF16 and on recent GPUs, many times slower on "
        "CPUs without AVX512 (emulated; a warning says so). Evaluation is fp32.",
    ),
]


def training_progress(description: str) -> tuple[Any, Any]:
    """A Rich progress bar and the ``(done, total)`` callback that advances it."""
    bar = progress()
    task = bar.add_task(description, total=None, rate="")

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return bar, update


def warn_precision(precision: str, device: str) -> None:
    """One line on stderr when ``precision`` is emulated (slow) on ``device``; nothing else changes."""
    from cnngraph.pruner.training import precision_warning

    warning = precision_warning(precision, device)
    if warning is not None:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)


def cost_table(title: str, columns: dict[str, dict[str, Any]]) -> Table:
    """A table of accuracy, precision, recall and cost, one column per summary dict."""
    from cnngraph.pruner.metrics import COMPARISON_ROWS, format_value

    table = Table(title=title)
    table.add_column("")
    for name in columns:
        table.add_column(name, justify="right")
    for key, label, unit in COMPARISON_ROWS:
        table.add_row(label, *(format_value(float(c[key]), unit) for c in columns.values()))
    return table


@handle_errors
def train_cmd(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Checkpoint to write (state dict + spec + split).")
    ],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="A reference architecture (vgg11, vgg13, vgg16, small_cnn, resnet20, resnet56), "
            "torchvision:NAME, package.module:factory or file.py:factory.",
        ),
    ] = "small_cnn",
    data: Annotated[
        str,
        typer.Option(
            "--data",
            help="ImageFolder directory, .npz file, CIFAR-10/100 or IDX (MNIST) folder, or builtin:digits.",
        ),
    ] = "builtin:digits",
    split: Annotated[
        str | None,
        typer.Option(
            "--split",
            help="Training folder of an ImageFolder dataset, or train of a CIFAR/IDX folder "
            "(with --test-split).",
            show_default=False,
        ),
    ] = None,
    test_split: Annotated[
        str | None,
        typer.Option(
            "--test-split",
            help="Test folder of an ImageFolder dataset, or test of a CIFAR/IDX folder.",
            show_default=False,
        ),
    ] = None,
    test_fraction: Annotated[
        float,
        typer.Option(
            "--test-fraction", help="Share of images held out for testing when no --split is given."
        ),
    ] = 0.2,
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs.")] = 5,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per batch.")] = 64,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate.")] = 0.01,
    optimizer: Annotated[str, typer.Option("--optimizer", help="sgd (momentum 0.9) or adam.")] = "sgd",
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the split, the initialisation and the shuffling.")
    ] = 0,
    width: Annotated[
        float, typer.Option("--width", help="Width multiplier of a reference architecture.")
    ] = 1.0,
    augment: AugmentOpt = False,
    schedule: ScheduleOpt = "constant",
    weight_decay: Annotated[
        float | None,
        typer.Option(
            "--weight-decay", help="Weight decay \\[default: 5e-4 with sgd, 0 with adam].", show_default=False
        ),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="Where to train: cpu, cuda, cuda:1, mps.")] = "cpu",
    channels_last: Annotated[
        bool, typer.Option("--channels-last", help="Train in the channels_last memory format.")
    ] = False,
    precision: PrecisionOpt = "fp32",
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Go on from OUT.resume, the snapshot written after every epoch (weights, optimizer, "
            "schedule, random state), when an earlier run of the same command was interrupted; the "
            "result equals an uninterrupted run. The snapshot is removed once OUT is written.",
        ),
    ] = False,
    init: Annotated[
        Path | None,
        typer.Option(
            "--init",
            help="Start from the weights of this checkpoint of the same model instead of a fresh "
            "seeded initialisation: a second training stage, e.g. a cosine restart after a "
            "one-cycle run. Its training record is kept in the new checkpoint.",
            show_default=False,
        ),
    ] = None,
    average_from: Annotated[
        int | None,
        typer.Option(
            "--average-from",
            help="Stochastic weight averaging: average the weights at the end of this epoch and of "
            "every later one, recompute the batch-norm statistics over the training images, and "
            "save that average. Usually a second stage: --init, --schedule constant, a small --lr.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as JSON instead of tables.")
    ] = False,
) -> None:
    """Train a model from scratch (seeded) and save it with everything later commands need.

    The checkpoint records the model spec and the train/test split, so 'cnngraph map' and
    'cnngraph prune' need neither --model nor the split options again. With --init the run
    goes on from another checkpoint's weights, and records which.
    """
    import torch

    from cnngraph.datasets import absolute_source
    from cnngraph.models import ModelSpec, build_model, save_atomically, save_checkpoint
    from cnngraph.pruner.data import DataSplit, load_split
    from cnngraph.pruner.metrics import evaluate as evaluate_model
    from cnngraph.pruner.metrics import measure
    from cnngraph.pruner.training import PRECISIONS, check_device, train

    if width <= 0:
        raise ConfigError(f"--width must be > 0, got {width}")
    if epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {epochs}")
    if seed < 0:
        raise ConfigError(f"--seed must be 0 or more, got {seed}")
    if average_from is not None and not 1 <= average_from <= epochs:
        raise ConfigError(f"--average-from {average_from} is not an epoch of this run; give 1 to {epochs}")
    check_output_file(out)
    if init is not None and not init.is_file():
        raise ConfigError(
            f"--init checkpoint '{init}' does not exist; give a checkpoint 'cnngraph train' wrote"
        )
    check_device(device)
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown --precision '{precision}'; use {' or '.join(PRECISIONS)}")
    warn_precision(precision, device)
    # The dataset's absolute path goes into the checkpoint: prune, sweep and explain find it from any folder.
    data_split = DataSplit(absolute_source(data), split, test_split, test_fraction, seed)
    train_data, test_data = load_split(data_split)
    c, h, w = train_data.input_shape
    if h != w:
        raise DataError(f"images are {w}x{h}; the reference models need square images")
    spec = ModelSpec(model, len(train_data.class_names), c, h, width)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_model(spec)
    training = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "optimizer": optimizer,
        "seed": seed,
        "augment": augment,
        "schedule": schedule,
        "weight_decay": weight_decay,
        "device": device,
        "channels_last": channels_last,
        "precision": precision,
    }
    if average_from is not None:
        training["average_from"] = average_from
    if init is not None:
        training["init"] = load_init(net, spec, init)
    recipe = {"spec": spec.to_dict(), "data": data_split.to_dict(), "training": training}
    snapshot_path = resume_path(out)
    snapshot = read_snapshot(snapshot_path, recipe) if resume else None
    if snapshot is not None:
        err_console.print(f"resuming after epoch {snapshot['epoch']} of {epochs} from {snapshot_path}")
    elif snapshot_path.is_file():
        err_console.print(f"note: starting over; {snapshot_path} will be replaced (--resume goes on from it)")

    def keep(snap: dict[str, Any]) -> None:
        save_atomically(snapshot_path, {**snap, "recipe": recipe})

    bar, update = training_progress(f"training {model}")
    try:
        with bar:
            history = train(
                net, train_data, epochs, batch_size, lr, seed, device, update, optimizer,
                augment=augment, schedule=schedule, weight_decay=weight_decay,
                channels_last=channels_last, precision=precision, on_epoch=keep, resume=snapshot,
                average_from=average_from,
            )  # fmt: skip
    except KeyboardInterrupt:
        if not snapshot_path.is_file():
            raise
        raise fail(
            f"interrupted; run the same command with --resume to go on from the last finished epoch "
            f"(kept in {snapshot_path})",
            130,
        ) from None
    metrics = evaluate_model(net, test_data, device=device)
    net.to("cpu").to(memory_format=torch.contiguous_format)  # cost is measured, weights saved, on CPU
    cost = measure(net, train_data.input_shape)
    summary = {**metrics.to_dict(), **cost.to_dict(), "epoch_seconds": history.mean_epoch_seconds}
    summary.pop("confusion")
    info = {
        "cnngraph_version": __version__,
        "spec": spec.to_dict(),
        "metrics": summary,
        "data": data_split.to_dict(),
        "split": {"train_images": len(train_data), "test_images": len(test_data)},
        "training": training,
        "history": history.to_dict(),
    }
    save_checkpoint(out, net, info)
    snapshot_path.unlink(missing_ok=True)
    if as_json:
        console.print_json(json.dumps({"checkpoint": str(out), **info}, default=str))
        return
    console.print(cost_table(f"{model} on {data} ({len(test_data)} test images)", {"trained": summary}))
    console.print(f"checkpoint written to [bold]{out}[/]")


def load_init(net: nn.Module, spec: ModelSpec, path: Path) -> dict[str, Any]:
    """Load the weights of checkpoint ``path`` into ``net`` (built from ``spec``); what the new
    checkpoint records of it: path, SHA-256, test accuracy and its own training record."""
    import hashlib

    from cnngraph.models import check_finite_weights, load_weights, read_checkpoint

    state, info = read_checkpoint(path)
    check_finite_weights(state, str(path))
    theirs = info.get("spec")
    if isinstance(theirs, dict):
        mine = spec.to_dict()
        differ = [k for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
        if differ:
            shown = ", ".join(f"{k} {theirs.get(k)!r} here {mine.get(k)!r}" for k in differ)
            raise ConfigError(
                f"--init '{path}' holds another model ({shown}); give the same --model, --width and data"
            )
    load_weights(net, state, str(path))
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    metrics = info.get("metrics")
    if not isinstance(metrics, dict):
        metrics = {}
    return {
        "checkpoint": str(path),
        "sha256": digest,
        "accuracy": metrics.get("accuracy"),
        "training": info.get("training"),
        "data": info.get("data"),
    }


def resume_path(out: Path) -> Path:
    """Where ``cnngraph train --out OUT`` keeps its per-epoch snapshot."""
    return out.with_name(out.name + ".resume")


def read_snapshot(path: Path, recipe: dict[str, Any]) -> dict[str, Any] | None:
    """The snapshot at ``path`` (None when there is none); refused when another command wrote it."""
    import torch

    if not path.is_file():
        err_console.print(f"note: no snapshot {path} to resume from; starting at epoch 1")
        return None
    try:
        snap = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(
            f"cannot read the snapshot '{path}' ({type(e).__name__}); delete it and start over"
        ) from e
    if not isinstance(snap, dict) or not isinstance(snap.get("recipe"), dict):
        raise ConfigError(f"'{path}' is not a cnngraph training snapshot; delete it and start over")
    theirs: dict[str, Any] = snap["recipe"]
    differ = [
        f"{part}.{key}"
        for part in ("spec", "data", "training")
        for key in sorted(set(recipe[part]) | set(theirs.get(part, {})) - {"device"})
        if recipe[part].get(key) != theirs.get(part, {}).get(key)
    ]
    if differ:
        raise ConfigError(
            f"the snapshot '{path}' was written by a command with other options ({', '.join(differ)}); "
            "give the same options, or drop --resume to start over"
        )
    return snap


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
