"""``cnngraph faithfulness``: is the explanation faithful? The graph against the usual methods."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from cnngraph.cli.common import check_output_file, console, handle_errors, progress
from cnngraph.errors import ConfigError

HELP = (
    "Is the explanation faithful? Deletion and insertion AUC, average drop and increase in confidence "
    "(docs/METHOD.md section 10), for every method on the same images.\n\n"
    "For each image the predicted class is explained by every method; pixels are deleted (set to the "
    "dataset's per-channel mean, computed over the whole --data split before normalisation) or inserted "
    "into the all-mean image in K equal steps, in decreasing map order with ties broken by a random "
    "permutation from --seed; the curves are the softmax probability of the class and their AUCs the "
    "trapezoid over [0, 1]. Average drop and increase use the map M in [0, 1] as a mask around the mean, "
    "x' = mean + M (x - mean), before normalisation (= M times the normalised image when the "
    "normalisation subtracts that mean).\n\n"
    "Methods: graph (our defaults, changed by the graph options below), graph-authors (the authors' "
    "preset), gradcam (captum LayerGradCam on the last convolution, bilinear upsampling), ig (captum "
    "Integrated Gradients, black baseline), random (seeded uniform map), gaussian (centred, sigma a "
    "quarter of the side). Every map is reduced to sum over channels of |attribution|, divided by its "
    "maximum. Prints mean +- standard error per method and each method's paired difference from "
    "'graph' (method minus graph) with a 95% t interval; --out keeps every per-image figure."
)


def register(app: typer.Typer) -> None:
    app.command("faithfulness", help=HELP)(faithfulness)


@handle_errors
def faithfulness(
    ctx: typer.Context,
    checkpoint: Annotated[
        Path, typer.Option("--checkpoint", help="State-dict checkpoint (loaded with weights_only=True).")
    ],
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="Dataset (ImageFolder, .npz, builtin:digits) \\[default: the checkpoint's recorded one, its "
            "test split].",
            show_default=False,
        ),
    ] = None,
    split: Annotated[
        str | None, typer.Option("--split", help="Subfolder of an ImageFolder --data.", show_default=False)
    ] = None,
    arch: Annotated[
        str | None,
        typer.Option(
            "--arch",
            help="Architecture of a plain state dict, as 'cnngraph map' takes MODEL.",
            show_default=False,
        ),
    ] = None,
    images: Annotated[
        int, typer.Option("--images", min=1, help="How many images, drawn from the dataset with --seed.")
    ] = 100,
    index: Annotated[
        list[str] | None,
        typer.Option(
            "--index", help="Exactly these images instead: N or A:B (repeatable).", show_default=False
        ),
    ] = None,
    methods: Annotated[
        str,
        typer.Option(
            "--methods",
            help="Comma-separated, from: graph, graph-authors, gradcam, ig, random, gaussian "
            "\\[default: all six].",
            show_default=False,
        ),
    ] = "graph,graph-authors,gradcam,ig,random,gaussian",
    steps: Annotated[int, typer.Option("--steps", min=1, help="K: deletion/insertion steps.")] = 32,
    ig_steps: Annotated[int, typer.Option("--ig-steps", min=1, help="Integrated Gradients steps.")] = 32,
    seed: Annotated[
        int, typer.Option("--seed", min=0, help="Image draw, tie-break permutation and random maps.")
    ] = 0,
    max_per_node: Annotated[
        int | None, typer.Option("--max-per-node", help="'graph': arcs per node.", show_default=False)
    ] = None,
    mode: Annotated[
        str | None, typer.Option("--mode", help="'graph': paths or flow.", show_default=False)
    ] = None,
    quantile: Annotated[
        float | None, typer.Option("--quantile", help="'graph': pixel quantile cut.", show_default=False)
    ] = None,
    sigma: Annotated[
        float | None, typer.Option("--sigma", help="'graph': blur in pixels.", show_default=False)
    ] = None,
    descriptor: Annotated[
        str | None,
        typer.Option(
            "--descriptor",
            help="'graph': node value over the filters: max, mean, median or sum.",
            show_default=False,
        ),
    ] = None,
    mean: Annotated[
        str | None, typer.Option("--mean", help="Normalisation mean per channel.", show_default=False)
    ] = None,
    std: Annotated[
        str | None, typer.Option("--std", help="Normalisation std per channel.", show_default=False)
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="JSON file for every per-image figure and the summary.", show_default=False
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Deletion and insertion AUC, average drop and increase in confidence, per method (see HELP)."""
    import numpy as np
    import torch

    from cnngraph.cli.explain_cmd import _model_and_data
    from cnngraph.cli.map_cmd import parse_floats
    from cnngraph.explain.api import normalizer
    from cnngraph.explain.compare import METRICS, compare, summarise
    from cnngraph.explain.faithfulness import dataset_mean
    from cnngraph.explain.images import parse_indices
    from cnngraph.explain.methods import METHODS, build_method
    from cnngraph.explain.options import preset, with_overrides

    names = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise ConfigError(f"unknown method '{(unknown or [''])[0]}'; use some of {', '.join(METHODS)}")
    options = with_overrides(
        preset("ours"),
        max_per_node=max_per_node,
        mode=mode,
        quantile=quantile,
        sigma=sigma,
        descriptor=descriptor,
    )
    if out is not None:
        check_output_file(out)
    net, spec, dataset, _ = _model_and_data(ctx, checkpoint, arch, data, split, True, [], None)
    assert dataset is not None
    if index:
        chosen = np.asarray(parse_indices(index, len(dataset)), dtype=np.int64)
    else:
        count = min(images, len(dataset))
        chosen = np.sort(np.random.default_rng(seed).choice(len(dataset), size=count, replace=False))
    normalize = (parse_floats(mean, "--mean"), parse_floats(std, "--std"))
    shape = dataset.input_shape
    x = dataset.images[torch.from_numpy(chosen)].float()
    norm = normalizer(normalize, shape[0])

    def forward(batch: torch.Tensor) -> torch.Tensor:
        return net(norm(batch))

    with torch.inference_mode():
        targets = torch.cat([forward(x[i : i + 256]) for i in range(0, len(chosen), 256)]).argmax(1).numpy()
    built = [
        build_method(n, net, shape, normalize, graph_options=options, seed=seed, ig_steps=ig_steps)
        for n in names
    ]
    with progress() as bar:
        task = bar.add_task("faithfulness", total=len(built) * len(chosen), rate="")

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, rate="method x images")

        results = compare(
            forward, built, x, targets, dataset_mean(dataset.images), steps=steps, seed=seed, progress=advance
        )
    summary = summarise(results, "graph")
    record: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "model_spec": spec.to_dict(),
        "dataset": dataset.source,
        "images": chosen.tolist(),
        "targets": targets.tolist(),
        "steps": steps,
        "ig_steps": ig_steps,
        "seed": seed,
        "graph_options": options.to_dict(shape[1]),
        "fill": dataset_mean(dataset.images).tolist(),
        "summary": summary,
        "per_image": {r.name: r.metrics for r in results},
    }
    if out is not None:
        from cnngraph.files import write_bytes

        write_bytes(out, json.dumps(record, indent=1).encode())
    if as_json:
        console.print_json(json.dumps({k: v for k, v in record.items() if k != "per_image"}))
        return
    _table(summary, METRICS, len(chosen))
    if out is not None:
        console.print(f"wrote {out}", highlight=False, soft_wrap=True)


def _table(summary: dict[str, Any], metrics: tuple[str, ...], count: int) -> None:
    titles = {"deletion_auc": "deletion AUC (lower)", "insertion_auc": "insertion AUC (higher)",
              "drop": "average drop % (lower)", "increase": "increase % (higher)"}  # fmt: skip
    table = Table("method", *(titles[m] for m in metrics), "s/image", title=f"{count} images, mean ± s.e.")
    for name, entry in summary.items():
        cells = []
        for m in metrics:
            cell = f"{entry[m]['mean']:.4f} ± {entry[m]['se']:.4f}"
            vs = entry[m].get("vs_graph")
            if vs is not None:
                cell += f"\n{vs['mean']:+.4f} [{vs['low']:+.4f}, {vs['high']:+.4f}]"
            cells.append(cell)
        table.add_row(escape(name), *cells, f"{entry['attribute_s_per_image']:.4f}")
    console.print(table)
    console.print("second line: the paired difference from 'graph' (method minus graph) and its 95% interval")
