"""``cnngraph map [MODEL] DATA --out FILE``: map a trained CNN into its multilayer network."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnngraph.cli.common import check_output_file, console, err_console, handle_errors, progress
from cnngraph.errors import ConfigError

MODEL_HELP = (
    "[MODEL] DATA. MODEL: a reference architecture (vgg11, vgg13, vgg16, small_cnn, resnet20, "
    "resnet56), torchvision:NAME, "
    "package.module:factory, path/to/file.py:factory or path/to/model.onnx (weights included); "
    "constructor arguments after '?', e.g. torchvision:googlenet?aux_logits=false; omit MODEL when "
    "--checkpoint comes from 'cnngraph train'. DATA: an ImageFolder directory, an .npz (images, labels, "
    "classes), a CIFAR-10/100 python folder (cifar-10-batches-py), an MNIST-style IDX folder or "
    "builtin:digits."
)


def parse_floats(text: str | None, what: str) -> list[float] | None:
    """``'0.5,0.25'`` -> ``[0.5, 0.25]``; a clear error for anything else."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise ConfigError(f"{what} must be comma-separated numbers such as 0.5,0.5,0.5, got '{text}'") from e


def parse_images_per_class(text: str) -> int | None:
    """``'all'`` -> None, else a positive integer."""
    if text.strip().lower() == "all":
        return None
    try:
        n = int(text)
    except ValueError as e:
        raise ConfigError(f"--images-per-class takes a positive number or 'all', got '{text}'") from e
    if n < 1:
        raise ConfigError(f"--images-per-class takes a positive number or 'all', got '{text}'")
    return n


def parse_classes(text: str | None) -> list[str] | None:
    """``'cat, dog'`` -> ``['cat', 'dog']`` (names or indices are told apart against the dataset)."""
    if text is None:
        return None
    return [item.strip() for item in text.split(",") if item.strip()]


@handle_errors
def map_cmd(
    targets: Annotated[
        list[str], typer.Argument(metavar="[MODEL] DATA", help=MODEL_HELP, show_default=False)
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Mapping file to write (.npz).")],
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint", help="State-dict checkpoint (loaded with weights_only=True).", show_default=False
        ),
    ] = None,
    width: Annotated[
        float, typer.Option("--width", help="Width multiplier of a reference architecture.")
    ] = 1.0,
    input_size: Annotated[
        int | None,
        typer.Option(
            "--input-size",
            help="Input side of a reference architecture \\[default: the images' height].",
            show_default=False,
        ),
    ] = None,
    in_channels: Annotated[
        int | None,
        typer.Option(
            "--in-channels",
            help="Input channels of a reference architecture \\[default: the images'].",
            show_default=False,
        ),
    ] = None,
    num_classes: Annotated[
        int | None,
        typer.Option(
            "--num-classes",
            help="Outputs of a reference architecture \\[default: the dataset's classes].",
            show_default=False,
        ),
    ] = None,
    images_per_class: Annotated[
        str,
        typer.Option(
            "--images-per-class", help="Images per class (n or 'all'); a class with fewer uses what it has."
        ),
    ] = "64",
    shuffle_seed: Annotated[
        int | None,
        typer.Option(
            "--shuffle-seed",
            help="Pick the images of each class by a seeded shuffle instead of the first n in file order.",
            show_default=False,
        ),
    ] = None,
    response: Annotated[
        str,
        typer.Option(
            "--response",
            help="Response of a layer: 'activation' (conv + batch norm + activation) or "
            "'conv' (raw convolution output, can be negative).",
        ),
    ] = "activation",
    descriptor: Annotated[
        str,
        typer.Option(
            "--descriptor",
            help="Node value used for scoring by default: 'mean', 'median', 'max' or 'sum' over the "
            "filters (all four are computed and stored; score, degrees, prune and export can pick "
            "another).",
        ),
    ] = "mean",
    mean: Annotated[
        str | None,
        typer.Option(
            "--mean",
            help="Normalisation mean per channel, comma-separated (one value = all channels).",
            show_default=False,
        ),
    ] = None,
    std: Annotated[
        str | None,
        typer.Option(
            "--std",
            help="Normalisation std per channel, comma-separated (one value = all channels).",
            show_default=False,
        ),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(
            "--split",
            help="Part of the dataset to use: a subfolder of an ImageFolder directory (e.g. train or "
            "test), or train / test of a CIFAR or IDX folder \\[default for those: train].",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")] = 128,
    classes: Annotated[
        str | None,
        typer.Option(
            "--classes",
            help="Map only these classes, comma-separated names or indices (e.g. cat,dog or 0,3,7), "
            "in this order; a name wins over an index that looks the same.",
            show_default=False,
        ),
    ] = None,
    max_classes: Annotated[
        int | None,
        typer.Option(
            "--max-classes",
            help="Map only the first N classes of the dataset (keeps a 1000-class model's graph small).",
            show_default=False,
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            "--device", help="cpu, cuda or cuda:N \\[default: the GPU when there is one].", show_default=False
        ),
    ] = None,
) -> None:
    """Map a trained CNN and a labelled dataset into its multilayer network.

    Nodes are the positions of every Conv2d output map, arcs follow each convolution's windows back
    through pooling, stride, padding and dilation, and every class gets its own arc weights from the
    mean response of its images. Prints a per-layer summary and writes one .npz file. The rules are
    docs/METHOD.md sections 1-3 and 8, shipped with cnngraph: 'cnngraph method 1 2 3 8' prints them.
    """
    from cnngraph.cli.inspect_cmd import print_summary
    from cnngraph.datasets import load_dataset, resolve_classes
    from cnngraph.errors import counted
    from cnngraph.mapping.api import map_model, used_fewer
    from cnngraph.models import ModelSpec, check_input_shape, load_model, untrained_warning

    if len(targets) not in (1, 2):
        raise ConfigError(f"give [MODEL] DATA (one or two arguments), got {len(targets)}")
    model_source, data_source = (None, targets[0]) if len(targets) == 1 else (targets[0], targets[1])
    per_class = parse_images_per_class(images_per_class)
    norm = (parse_floats(mean, "--mean"), parse_floats(std, "--std"))
    if shuffle_seed is not None and shuffle_seed < 0:
        raise ConfigError(f"--shuffle-seed must be 0 or more, got {shuffle_seed}")
    check_output_file(out)
    dataset = load_dataset(data_source, split)
    wanted = parse_classes(classes)
    resolve_classes(dataset.class_names, wanted, max_classes)  # refuse a bad subset before the model loads
    if max_classes is not None and max_classes > len(dataset.class_names):
        console.print(
            f"[yellow]note:[/] --max-classes {max_classes} is more than the dataset's "
            f"{counted(len(dataset.class_names), 'class')}; mapping all of them",
            highlight=False,
        )
    spec = None
    if model_source is not None:
        c, h, _ = dataset.input_shape
        spec = ModelSpec(
            source=model_source,
            num_classes=num_classes or len(dataset.class_names),
            in_channels=in_channels or c,
            input_size=input_size or h,
            width=width,
        )
    elif checkpoint is None:
        raise ConfigError(
            "name the model: 'cnngraph map MODEL DATA', or give a --checkpoint written by 'cnngraph train'"
        )
    model, spec = load_model(spec, checkpoint)
    check_input_shape(spec, dataset.input_shape)
    warning = untrained_warning(spec, checkpoint)
    if warning is not None:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    with progress() as bar:
        task = bar.add_task("forward passes", total=None, rate="")

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, rate="images")

        network = map_model(
            model, dataset, images_per_class=per_class, seed=shuffle_seed, response=response,
            descriptor=descriptor, batch_size=batch_size, device=device, normalize=norm, spec=spec,
            progress=advance, classes=wanted, max_classes=max_classes,
        )  # fmt: skip
    network.options["split"] = split
    network.options["checkpoint"] = str(checkpoint) if checkpoint is not None else None
    for name, used in used_fewer(network):
        console.print(
            f"[yellow]note:[/] class '{name}' has only {counted(used, 'image')}; used all of them",
            highlight=False,
        )
    try:
        path = network.save(out)
    except OSError as e:
        raise ConfigError(f"cannot write '{out}' ({e.strerror or e}); choose a writable place") from e
    print_summary(network, descriptor)
    console.print(f"wrote {path}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("map")(map_cmd)
