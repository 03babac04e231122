"""``cnngraph explain``: why did the model call this image a cat? Its image network, read back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from cnngraph.cli.common import console, handle_errors, neo4j_settings, progress
from cnngraph.errors import ConfigError, DataError

HELP_DEFAULTS = (
    "Defaults ('--preset ours', chosen by a pilot before the study, docs/EXPLAIN.md): descriptor max, "
    "9 arcs per node, mode paths, quantile 0 (keep every pixel's order), blur sigma 7 px at 224 px "
    "(1 px at 32 px). '--preset authors': max, 9 arcs, paths, quantile 0.75, sigma 2 px at 224 px; "
    "their '3x3 spread' is our pixel rule itself (a first-layer node credits the pixels its 3x3 "
    "window reads). Options given with a preset override it."
)


def register(app: typer.Typer) -> None:
    app.command("explain", help=_doc())(explain)


def _doc() -> str:
    return (
        "Explain images through their image networks (docs/METHOD.md section 10).\n\n"
        "Each image's own network (node values from that image alone) is walked back from every "
        "position of the last convolution along the heaviest arcs entering each node; a node's path "
        "score is the summed weight of the paths through it (exact, by dynamic programming); the "
        "first convolution's scores go to the pixels its windows read, then quantile, blur and "
        "division by the maximum. Writes per image STEM.png (image | heatmap | overlay), STEM.npy "
        "(the heatmap) and STEM.json (classes, probability, every option, per-layer path scores). "
        "With --load, writes (:Explanation)-[:HIGHLIGHTS {score}]->(:Position) onto the model "
        "loaded from this checkpoint's mapping and prints a Neo4j Browser query.\n\n" + HELP_DEFAULTS
    )


@handle_errors
def explain(
    ctx: typer.Context,
    checkpoint: Annotated[
        Path,
        typer.Option("--checkpoint", help="State-dict checkpoint (loaded with weights_only=True)."),
    ],
    images: Annotated[
        list[Path] | None,
        typer.Argument(metavar="[IMAGE]...", help="Image files (PNG, JPEG, ...).", show_default=False),
    ] = None,
    arch: Annotated[
        str | None,
        typer.Option(
            "--arch",
            help="Architecture of a checkpoint not written by 'cnngraph train', as 'cnngraph map' takes "
            "MODEL \\[default: the checkpoint's, else (with --load) the one recorded with the mapping].",
            show_default=False,
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="Dataset whose images --index picks (ImageFolder, .npz, builtin:digits) \\[default: the "
            "checkpoint's recorded dataset, its test split].",
            show_default=False,
        ),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option("--split", help="Subfolder of an ImageFolder --data, e.g. test.", show_default=False),
    ] = None,
    index: Annotated[
        list[str] | None,
        typer.Option(
            "--index", help="Image of --data to explain: N or a range A:B (repeatable).", show_default=False
        ),
    ] = None,
    label: Annotated[
        str | None,
        typer.Option(
            "--label",
            help="Explain this class (name or index) instead of the predicted one; the graph's paths do "
            "not depend on it, the probability reported does.",
            show_default=False,
        ),
    ] = None,
    preset_name: Annotated[
        str, typer.Option("--preset", help="Starting options: 'ours' or 'authors' (see above).")
    ] = "ours",
    max_per_node: Annotated[
        int | None,
        typer.Option(
            "--max-per-node",
            help="m: the heaviest arcs entering a node that paths follow.",
            show_default=False,
        ),
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(
            "--mode",
            help="'paths' (summed path weights, exact) or 'flow' (score split in proportion to arc weights; "
            "negative weights count as 0, a node whose chosen arcs all weigh 0 splits equally).",
            show_default=False,
        ),
    ] = None,
    quantile: Annotated[
        float | None,
        typer.Option(
            "--quantile",
            help="Pixels strictly below this quantile of the pixel scores become 0 (0 keeps all); also the "
            "per-layer quantile of the positions --load highlights.",
            show_default=False,
        ),
    ] = None,
    sigma: Annotated[
        float | None,
        typer.Option("--sigma", help="Gaussian blur in pixels of the image (0: none).", show_default=False),
    ] = None,
    descriptor: Annotated[
        str | None,
        typer.Option(
            "--descriptor", help="Node value over the filters: max, mean, median or sum.", show_default=False
        ),
    ] = None,
    response: Annotated[
        str | None,
        typer.Option(
            "--response", help="'activation' (conv + norm + activation) or 'conv' (raw).", show_default=False
        ),
    ] = None,
    mean: Annotated[
        str | None,
        typer.Option(
            "--mean",
            help="Normalisation mean per channel, comma-separated \\[default: none, or with --load the "
            "mapping's].",
            show_default=False,
        ),
    ] = None,
    std: Annotated[
        str | None,
        typer.Option("--std", help="Normalisation std per channel, comma-separated.", show_default=False),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the PNG, .npy and JSON files.")] = Path(
        "explanations"
    ),
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per forward pass.")] = 64,
    load: Annotated[
        bool,
        typer.Option("--load", help="Also write each explanation onto the model loaded in Neo4j (--model)."),
    ] = False,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="With --load: the model id in Neo4j ('cnngraph models').", show_default=False
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    from cnngraph.cli.map_cmd import parse_floats
    from cnngraph.explain.api import Explainer
    from cnngraph.explain.images import gather, parse_indices
    from cnngraph.explain.options import preset, with_overrides
    from cnngraph.explain.outputs import write_outputs

    options = with_overrides(
        preset(preset_name), max_per_node=max_per_node, mode=mode, quantile=quantile, sigma=sigma,
        descriptor=descriptor, response=response,
    )  # fmt: skip
    if load and not model:
        raise ConfigError("--load needs --model NAME, the model loaded from this checkpoint's mapping")
    if model and not load:
        raise ConfigError("--model names the Neo4j model for --load; add --load (or drop --model)")
    _check_out_folder(out)
    normalize = (parse_floats(mean, "--mean"), parse_floats(std, "--std"))
    files = list(images or [])
    if data is not None and not index:
        raise ConfigError("--data is read only to pick images with --index; give --index N (or A:B)")
    net, spec, dataset, dataset_name = _model_and_data(
        ctx, checkpoint, arch, data, split, bool(index), files, model
    )
    indices = parse_indices(index or [], len(dataset)) if dataset is not None else []
    if index and dataset is None:
        raise DataError("--index picks images of a dataset; give --data")
    shape = (spec.in_channels, spec.input_size, spec.input_size)
    if dataset is not None and dataset.input_shape[0] == spec.in_channels:
        shape = dataset.input_shape
    batch = gather(files, dataset, indices, shape, dataset_name)
    class_names = list(dataset.class_names) if dataset is not None else None
    props: dict[str, Any] | None = None
    if load:
        props = _loaded_model(ctx, str(model), net, shape)
        class_names = class_names or [str(c) for c in props.get("class_names") or []] or None
        if mean is None and std is None:
            normalize = _recorded_normalization(props)
    explainer = Explainer(net, shape, options, normalize, class_names)
    classes = _num_classes(net, shape)
    if class_names is not None and len(class_names) != classes:
        class_names = None
        explainer.class_names = None
    target = _resolve_label(label, class_names, classes)
    with progress() as bar:
        task = bar.add_task("explaining", total=len(batch.stems), rate="")

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, rate="images")

        results = explainer.explain(
            batch.images, targets=[target] * len(batch.stems), names=batch.identities, labels=batch.labels,
            batch_size=batch_size, progress=advance,
        )  # fmt: skip
    written = []
    for n, result in enumerate(results):
        extra = {"checkpoint": str(checkpoint), "model_spec": spec.to_dict()}
        paths = write_outputs(out, batch.stems[n], batch.images[n].numpy(), result, explainer.topology, extra)
        written.append({**result.summary(), "files": paths})
    if load:
        _write_to_graph(ctx, str(model), props or {}, results, explainer)
    _print(written, as_json)
    if load and not as_json:
        _print_query(str(model), results[0])


def _check_out_folder(out: Path) -> None:
    from cnngraph.cli.common import check_output_file

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out '{out}' is a file; give a folder for the explanation files")
    check_output_file(out / ".cnngraph-explain-probe", "--out")


def _model_and_data(
    ctx: typer.Context,
    checkpoint: Path,
    arch: str | None,
    data: str | None,
    split: str | None,
    need_data: bool,
    files: list[Path],
    model: str | None,
) -> tuple[Any, Any, Any, str]:
    """The model, its spec, the dataset (when --index asks for one) and a short name for it."""
    from cnngraph.datasets import check_recorded_source, load_dataset
    from cnngraph.explain.images import read_image_file
    from cnngraph.models import load_model, read_checkpoint, spec_for_arch

    _, info = read_checkpoint(checkpoint)
    dataset = None
    name = "data"
    if need_data:
        source, chosen = data, split
        recorded = info.get("data")
        if source is None and isinstance(recorded, dict) and "source" in recorded:
            source = str(recorded["source"])
            check_recorded_source(source, checkpoint)
            chosen = split or recorded.get("test_split") or recorded.get("split")
        if source is None:
            raise DataError(
                f"no dataset to pick images from; give --data (checkpoint '{checkpoint}' records none)"
            )
        dataset = load_dataset(source, chosen)
        name = chosen or Path(str(source)).stem or "data"
    base = info.get("spec") if isinstance(info.get("spec"), dict) else None
    if base is None and model is not None:
        from cnngraph.cli.prune_cmd import recorded_spec

        base = recorded_spec(ctx, model)

    def defaults() -> dict[str, Any]:
        if dataset is not None:
            c, h, _ = dataset.input_shape
            return {"in_channels": c, "input_size": h, "num_classes": len(dataset.class_names)}
        c, h = read_image_file(files[0]).shape[:2] if files else (3, 32)
        return {"in_channels": c, "input_size": h}

    spec = spec_for_arch(arch, base, defaults)
    if spec is None:
        raise ConfigError(
            f"checkpoint '{checkpoint}' does not say which model it is; give --arch (as 'cnngraph map' takes "
            "MODEL), or --load --model NAME of its mapping in Neo4j"
        )
    net, spec = load_model(spec, checkpoint)
    return net, spec, dataset, name


def _num_classes(net: Any, shape: tuple[int, int, int]) -> int:
    import torch

    from cnngraph.explain.image_network import _run

    with torch.inference_mode():
        return int(_run(net.eval(), torch.zeros(1, *shape)).shape[1])


def _resolve_label(label: str | None, names: list[str] | None, classes: int) -> int | None:
    if label is None:
        return None
    if names is not None and label in names:
        return names.index(label)
    try:
        h = int(label)
    except ValueError:
        known = f"; the classes are {', '.join(names[:10])}" if names else ""
        raise ConfigError(f"--label '{label}' is not a class name or index{known}") from None
    if not 0 <= h < classes:
        raise ConfigError(f"--label {h} is out of range; the model has {classes} classes (0..{classes - 1})")
    return h


def _loaded_model(ctx: typer.Context, model: str, net: Any, shape: tuple[int, int, int]) -> dict[str, Any]:
    """The :Model's properties once it is checked to be this checkpoint's complete mapping."""
    from cnngraph.cli.common import connected
    from cnngraph.loader.catalog import check_model_name
    from cnngraph.loader.explanations import check_loaded
    from cnngraph.mapping.topology import topology_for_model
    from cnngraph.mapping.trace import trace_model

    check_model_name(model)
    traced = trace_model(net, shape)
    topology = topology_for_model(net, shape)
    with connected(ctx) as driver:
        return check_loaded(
            driver,
            model,
            [c.name for c in traced.convs],
            topology.num_nodes,
            shape,
            neo4j_settings(ctx).database,
        )


def _recorded_normalization(props: dict[str, Any]) -> tuple[list[float] | None, list[float] | None]:
    try:
        options = json.loads(str(props.get("options") or "{}"))
    except ValueError:
        return None, None
    norm = options.get("normalization") if isinstance(options, dict) else None
    if isinstance(norm, dict):
        return norm.get("mean"), norm.get("std")
    return None, None


def _write_to_graph(
    ctx: typer.Context, model: str, props: dict[str, Any], results: list[Any], explainer: Any
) -> None:
    from cnngraph.cli.common import connected
    from cnngraph.loader.explanations import explanation_rows, write_explanations

    rows = [
        explanation_rows(
            image=r.image,
            label=r.explained_name,
            label_index=r.explained,
            predicted=r.predicted_name,
            predicted_index=r.predicted,
            probability=r.probability,
            options=r.options,
            scores=r.scores,
            node_offsets=explainer.topology.node_offsets,
            true_label=r.summary()["label"],
        )
        for r in results
    ]
    with connected(ctx) as driver:
        write_explanations(driver, model, str(props.get("checksum")), rows, neo4j_settings(ctx).database)


def _print(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table("image", "explained", "probability", "predicted", "label", "files")
    for r in rows:
        table.add_row(
            escape(str(r["image"])),
            escape(str(r["explained"])),
            f"{r['probability']:.4f}",
            escape(str(r["predicted"])),
            escape(str(r["label"] if r["label"] is not None else "")),
            escape(r["files"]["png"]),
        )
    console.print(table)


def _print_query(model: str, first: Any) -> None:
    from cnngraph.queries.browser import explanation_query

    console.print(
        "Neo4j Browser: paste this query to see the first explanation's positions layer by layer:",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        explanation_query(model, first.image, first.explained_name),
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
