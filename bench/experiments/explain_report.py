"""Turn the explanation study's results into docs/EXPLAIN.md, its figures and results.json.

Reads ``docs/results/explain/<model>/`` (``setup.json``, ``chunks/*.json``, ``grid.npz``) as
``explain_study.py`` wrote them; every number in the page comes from those files. Run after the
study (it also runs on a partial study, and then says how many images it has):

    .venv/bin/python bench/experiments/explain_report.py
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "results" / "explain"
MODELS = ("resnet20", "vgg16")
BASE = "bench/experiments/baselines"
TITLES = {"resnet20": "ResNet-20", "vgg16": "VGG16-BN (width 0.5)"}
METRIC_TITLES = {
    "deletion_auc": "deletion AUC (lower is better)",
    "insertion_auc": "insertion AUC (higher is better)",
    "drop": "average drop % (lower is better)",
    "increase": "increase in confidence % (higher is better)",
}
METHOD_TITLES = {
    "graph": "graph (ours)",
    "graph-authors": "graph (authors' preset)",
    "gradcam": "Grad-CAM",
    "ig": "Integrated Gradients",
    "random": "uniform random",
    "gaussian": "centred Gaussian",
}


def load_model_results(folder: Path) -> dict[str, Any] | None:
    """Setup, per-method per-image metrics (in image order), timings; None when nothing ran."""
    setup_path = folder / "setup.json"
    if not setup_path.is_file():
        return None
    setup = json.loads(setup_path.read_text())
    chunks = [json.loads(p.read_text()) for p in sorted((folder / "chunks").glob("*.json"))]
    chunks.sort(key=lambda c: c["start"])
    if not chunks:
        return None
    methods: dict[str, dict[str, Any]] = {}
    for name in setup["methods"]:
        entry: dict[str, Any] = {"attribute_s": 0.0, "faithfulness_s": 0.0, "curves": {}}
        for key in ("deletion_auc", "insertion_auc", "drop", "increase", "original", "masked"):
            entry[key] = [v for c in chunks for v in c["methods"][name][key]]
        for key in ("deletion_curve", "insertion_curve"):
            entry["curves"][key] = np.array([row for c in chunks for row in c["methods"][name][key]])
        entry["attribute_s"] = sum(c["methods"][name]["attribute_s"] for c in chunks)
        entry["faithfulness_s"] = sum(c["methods"][name]["faithfulness_s"] for c in chunks)
        methods[name] = entry
    images = sum(c["stop"] - c["start"] for c in chunks)
    return {
        "setup": setup,
        "methods": methods,
        "images": images,
        "seconds": sum(c["seconds"] for c in chunks),
        "fastest": min(c["seconds"] for c in chunks),
        "fastest_images": min(chunks, key=lambda c: c["seconds"])["stop"]
        - min(chunks, key=lambda c: c["seconds"])["start"],
        "chunks": len(chunks),
        "chunk_seconds": [c["seconds"] for c in chunks],
        "load_averages": [c["load_average"] for c in chunks if "load_average" in c],
    }


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    from cnngraph.explain.compare import METRICS, mean_se, paired, verdict

    methods = result["methods"]
    out: dict[str, Any] = {}
    for name, entry in methods.items():
        row: dict[str, Any] = {
            "attribute_s_per_image": entry["attribute_s"] / result["images"],
            "faithfulness_s_per_image": entry["faithfulness_s"] / result["images"],
        }
        for metric in METRICS:
            mean, se = mean_se(entry[metric])
            row[metric] = {"mean": mean, "se": se}
            if name != "graph":
                diff = paired(entry[metric], methods["graph"][metric])
                row[metric]["vs_graph"] = {**diff, "verdict_for_graph": verdict(metric, diff)}
        out[name] = row
    return out


def grid_figure(folder: Path, methods: list[str], target: Path) -> bool:
    """8 images x every method: the image, then each method's map over it."""
    path = folder / "grid.npz"
    if not path.is_file():
        return False
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    with np.load(path) as data:
        images = data["images"]
        maps = {m: data[m] for m in methods if m in data.files}
    rows = images.shape[0]
    cols = 1 + len(maps)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows), dpi=80, squeeze=False)
    for r in range(rows):
        picture = np.clip(images[r].transpose(1, 2, 0), 0, 1)
        axes[r, 0].imshow(picture, interpolation="nearest")
        for c, (name, m) in enumerate(maps.items(), start=1):
            axes[r, c].imshow(picture, interpolation="nearest")
            axes[r, c].imshow(m[r], cmap="inferno", vmin=0, vmax=1, alpha=0.6, interpolation="bilinear")
            if r == 0:
                axes[r, c].set_title(METHOD_TITLES.get(name, name), fontsize=7)
        if r == 0:
            axes[r, 0].set_title("image", fontsize=7)
        for ax in axes[r]:
            ax.set_axis_off()
    fig.tight_layout()
    _save(fig, target)
    plt.close(fig)
    return True


def curves_figure(result: dict[str, Any], target: Path) -> None:
    """Mean deletion and insertion curves per method."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    steps = int(result["setup"]["steps"])
    fraction = np.arange(steps + 1) / steps
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    for name, entry in result["methods"].items():
        for ax, key in zip(axes, ("deletion_curve", "insertion_curve"), strict=True):
            ax.plot(fraction, entry["curves"][key].mean(axis=0), label=METHOD_TITLES.get(name, name))
    for ax, title in zip(axes, ("deletion (lower is better)", "insertion (higher is better)"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("fraction of pixels deleted / inserted")
        ax.set_ylabel("probability of the explained class")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    _save(fig, target)
    plt.close(fig)


def _save(fig: Any, target: Path) -> None:
    import io

    from cnngraph.files import write_bytes

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    write_bytes(target, buffer.getvalue())


def fmt(x: float, digits: int = 4) -> str:
    return f"{x:.{digits}f}"


def model_section(model: str, result: dict[str, Any], summary: dict[str, Any], page: Path) -> list[str]:
    from cnngraph.explain.compare import METRICS

    setup = result["setup"]
    n = result["images"]
    correct = sum(int(p == y) for p, y in zip(setup["predicted"][:n], setup["labels"][:n], strict=True))
    lines = [
        f"### {TITLES.get(model, model)}",
        "",
        f"Checkpoint `{setup['checkpoint']}` (SHA-256 `{setup['checkpoint_sha256'][:16]}...`); "
        f"{n} of {len(setup['images'])} study images done ({result['chunks']} chunks); the model predicts "
        f"{correct} of them correctly; the explained class is the predicted one. K = {setup['steps']} steps, "
        f"fill = the test set's per-channel mean ({', '.join(fmt(v, 4) for v in setup['fill'])}), "
        f"Integrated Gradients with {setup['ig_steps']} steps, seed {setup['seed']}, "
        f"{setup['threads']} thread.",
        "",
        "Mean over the images +- standard error:",
        "",
        "| method | " + " | ".join(METRIC_TITLES[m] for m in METRICS) + " |",
        "|---|" + "---:|" * len(METRICS),
    ]
    for name, row in summary.items():
        cells = [f"{fmt(row[m]['mean'])} +- {fmt(row[m]['se'])}" for m in METRICS]
        lines.append(f"| {METHOD_TITLES.get(name, name)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Paired differences, method minus graph (ours), per image: mean [95% interval], and what it means "
        "for the graph method:",
        "",
        "| method | " + " | ".join(METRIC_TITLES[m].split(" (")[0] for m in METRICS) + " |",
        "|---|" + "---|" * len(METRICS),
    ]
    for name, row in summary.items():
        if name == "graph":
            continue
        cells = []
        for m in METRICS:
            d = row[m]["vs_graph"]
            cells.append(
                f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] graph {d['verdict_for_graph']}"
            )
        lines.append(f"| {METHOD_TITLES.get(name, name)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Time per image (this run's measurement, {_threads(setup)}; {_load(result)}):",
        "",
        "| method | attribution s/image | faithfulness evaluation s/image |",
        "|---|---:|---:|",
    ]
    for name, row in summary.items():
        lines.append(
            f"| {METHOD_TITLES.get(name, name)} | {fmt(row['attribute_s_per_image'])} | "
            f"{fmt(row['faithfulness_s_per_image'])} |"
        )
    lines += [
        "",
        f"Wall time of the study's chunks for this model: {result['seconds']:.0f} s "
        f"({result['seconds'] / 60:.1f} min) for {n} images, against a target of 20 min; "
        f"{_target_sentence(result['seconds'])} The fastest chunk took {result['fastest']:.0f} s for "
        f"{result['fastest_images']} images; at that rate the {n} images would take "
        f"{result['fastest'] / result['fastest_images'] * n / 60:.1f} min "
        "(an extrapolation, not a measurement).",
        "",
        _reading(summary),
        "",
    ]
    grid_classes = sorted({setup["class_names"][y] for y in setup["labels"][:8]})
    lines += [
        f"The figure shows the first 8 study images (classes: {', '.join(grid_classes)}; the study's indices "
        "are sorted and the test folder is in class order), every method's map over each.",
        "",
    ]
    for fig, caption in ((f"{model}_grid.png", "the first 8 study images, every method's map over each"),
                         (f"{model}_curves.png", "mean deletion and insertion curves")):  # fmt: skip
        if (RESULTS / fig).is_file():
            rel = os.path.relpath(RESULTS / fig, page.parent)
            lines += [f"![{caption}]({rel})", ""]
    return lines


def _target_sentence(seconds: float) -> str:
    return "met." if seconds <= 20 * 60 else "not met."


def _threads(setup: dict[str, Any]) -> str:
    return "one CPU thread" if setup["threads"] == 1 else f"{setup['threads']} CPU threads"


def _load(result: dict[str, Any]) -> str:
    """The machine's 1-minute load average over the chunks, as the study recorded it."""
    loads = result.get("load_averages") or []
    if len(loads) < len(result["chunk_seconds"]):
        return "the machine's load was not recorded for every chunk"
    return f"1-minute load average {min(loads):.1f} to {max(loads):.1f} at the ends of the chunks"


def _reading(summary: dict[str, Any]) -> str:
    """The declared reading, computed: faithful (beats random on both AUCs), useful (beats gaussian)."""

    def beats(other: str, metric: str) -> str:
        return str(summary[other][metric]["vs_graph"]["verdict_for_graph"])

    def said(v: str) -> str:
        return {"win": "a win", "loss": "a loss"}.get(v, "no difference")

    rand = [beats("random", m) for m in ("deletion_auc", "insertion_auc")]
    gauss = [beats("gaussian", m) for m in ("deletion_auc", "insertion_auc")]
    faithful = all(v == "win" for v in rand)
    useful = all(v == "win" for v in gauss)
    parts = [
        "Reading, as declared: against the uniform-random map the graph method's deletion AUC is "
        f"{said(rand[0])} and its insertion AUC {said(rand[1])}, so it is "
        f"{'faithful in this test' if faithful else 'not shown faithful in this test'}; against the centred "
        f"Gaussian (a map that needs no model) it is {said(gauss[0])} and {said(gauss[1])}, so it is "
        f"{'more useful than the centre bias' if useful else 'not shown better than the centre bias'}."
    ]
    random_deletion = summary["random"]["deletion_auc"]["mean"]
    below = [
        METHOD_TITLES[n]
        for n, row in summary.items()
        if n != "random" and row["deletion_auc"]["mean"] < random_deletion
    ]
    if not below:
        parts.append(
            " No method's mean deletion AUC is below the uniform-random map's: deleting scattered single "
            "pixels (a random order) lowers the probability faster than deleting any coherent region the "
            "methods point at, so on these 32x32 images deletion alone does not separate a faithful map from "
            "a meaningless one (the mask's own shape carries information; Rong et al. 2022); insertion, "
            "where every method beats random, is the more telling of the two here."
            if all(
                row["insertion_auc"]["mean"] > summary["random"]["insertion_auc"]["mean"]
                for n, row in summary.items()
                if n != "random"
            )
            else " No method's mean deletion AUC is below the uniform-random map's."
        )
    else:
        parts.append(f" Mean deletion AUC below the random map's: {', '.join(below)}.")
    for other in ("gradcam", "ig", "graph-authors"):
        verdicts = {m: beats(other, m) for m in METRIC_TITLES}
        parts.append(
            f" Against {METHOD_TITLES[other]}: deletion {verdicts['deletion_auc']}, insertion "
            f"{verdicts['insertion_auc']}, average drop {verdicts['drop']}, increase {verdicts['increase']}."
        )
    return "".join(parts)


def overview(summaries: dict[str, dict[str, Any]]) -> list[str]:
    """At a glance: for every other method, model and metric, whether the graph method wins."""
    from cnngraph.explain.compare import METRICS

    mark = {"win": "graph better", "loss": "graph worse", "no difference": "no difference"}
    short = {"deletion_auc": "deletion", "insertion_auc": "insertion", "drop": "drop", "increase": "increase"}
    header = [f"{TITLES[m].split(' ')[0]} {short[x]}" for m in summaries for x in METRICS]
    lines = [
        "At a glance: the graph method (our defaults) against each other method, per model and metric, by "
        "the paired 95% interval (details and figures per model below).",
        "",
        "| method | " + " | ".join(header) + " |",
        "|---|" + "---|" * len(header),
    ]
    methods = [n for n in next(iter(summaries.values())) if n != "graph"]
    for name in methods:
        cells = [
            mark[summaries[m][name][x]["vs_graph"]["verdict_for_graph"]] for m in summaries for x in METRICS
        ]
        lines.append(f"| {METHOD_TITLES.get(name, name)} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def static_part() -> list[str]:
    """How the explanation works and every choice made where METHOD.md is silent."""
    from cnngraph.explain.options import AUTHORS, OURS

    ours, authors = OURS.to_dict(32), AUTHORS.to_dict(32)
    keys = ("descriptor", "max_per_node", "mode", "quantile", "sigma_at_224", "sigma_pixels", "response")
    table = ["| option | ours (default) | authors' preset |", "|---|---|---|"]
    table += [f"| `{k}` | {ours[k]} | {authors[k]} |" for k in keys]
    return [
        "# Explaining one image (issue 29)",
        "",
        "_Generated by `bench/experiments/explain_report.py` from `docs/results/explain/`; do not edit._",
        "",
        '`cnngraph explain` answers "why did the model call this a cat?" with the image\'s own network',
        "(METHOD.md section 10): the model's nodes and arcs with node values from that one image (the `max` "
        "over the filters by default), each arc weighing the fed layer's value at `pi(u)`. From every "
        "position of the last convolution (the last in execution order) a path goes back along the `m` "
        "heaviest arcs entering each node (ties to the source with the lower `(layer, i, j)`); a node's "
        "path score is the summed weight that its paths have gathered on reaching it, computed exactly "
        "by dynamic programming over the layer DAG, vectorised over arcs. The first convolution's scores "
        "go to the input pixels its windows read; the heatmap keeps pixels at or above the `q` quantile, "
        "is blurred and divided by its maximum.",
        "",
        "```bash",
        "cnngraph explain cat.png dog.jpg --checkpoint model.pt --out explanations/",
        "cnngraph explain --checkpoint model.pt --data cifar10/ --split test --index 0:16 --json",
        "cnngraph explain cat.png --checkpoint model.pt --preset authors --label dog",
        "cnngraph explain cat.png --checkpoint model.pt --load --model r20   # also into Neo4j, prints a "
        "Browser query",
        "cnngraph faithfulness --checkpoint model.pt --data cifar10/ --split test --images 100 --out f.json",
        "```",
        "",
        "```python",
        "import cnngraph",
        "model, spec = cnngraph.load_model(None, 'model.pt')",
        "(e,) = cnngraph.explain(model, image)          # image: [C, H, W] in [0, 1], before normalisation",
        "e.heatmap, e.explained_name, e.probability, e.scores   # scores: every node's path score",
        "```",
        "",
        "Per image `explain` writes `STEM.png` (image | heatmap | overlay, titled with the class and its "
        "probability), `STEM.npy` (the heatmap, float64 [H, W] in [0, 1]) and `STEM.json` (classes, "
        "probabilities, every option, and per layer the path score of every position), each written to a "
        "temporary file and renamed. Bad input (an image of the wrong size or channels, a model `map` "
        "refuses, `--index` out of range, a file that is not an image) is one line and exit 2, before "
        "anything is written.",
        "",
        "## Options",
        "",
        *table,
        "",
        "Our defaults were fixed before the study by a pilot on 32 CIFAR-10 test images outside the "
        "study's 500 (`bench/experiments/explain_pilot.py`, `docs/results/explain/pilot/`), by deletion "
        "minus insertion AUC summed over both baselines: 9 arcs per node beat 1, 3, 18 and 27; paths and "
        "flow were close; a 1-pixel blur (at 32 px) helped; the 0.75 quantile cut did not (three quarters "
        "of the pixels become 0 and the curves then order them at random). The authors' preset is their "
        'public code\'s settings; their "3x3 spread" (a first-layer position credits the 3x3 pixels around '
        "it) is our pixel rule itself for their VGG's 3x3 stride-1 'same' first convolution. Options given "
        "beside a preset override it.",
        "",
        "## Where METHOD.md is silent: what we chose",
        "",
        "- Start: every node of the last convolution in execution order starts one path (`N = 1`, "
        "`W = 0`); no other node starts one, even one that feeds no later convolution.",
        "- Choosing: the `m` heaviest arcs entering a node are taken over all the layers that feed it "
        "together; ties go to the lower global node id, which is the lower `(layer, i, j)`.",
        "- Counts and sums are float64: exact while a node's path count stays below 2^53 (about 9e15), "
        "rounded to float64 precision beyond that.",
        "- `flow`: the score of 1 per last-layer node is split among the chosen arcs in proportion to "
        "`max(w, 0)`; when every chosen arc weighs 0 or less the node splits equally, so the total is "
        "always conserved; a node with no chosen arc keeps what reaches it.",
        "- Pixels: a tap in zero padding reads nothing; under reflect, replicate or circular padding a "
        "tap reads the pixel that padding copies (the convolution does read it). Anything between the "
        "input and the first convolution (a pooling, a norm) is followed with the mapping's own "
        "geometry; what it cannot follow (an interpolation) is refused.",
        "- Heatmap: pixels strictly below `np.quantile(map, q)` become 0 (`q = 0` keeps all); the blur is "
        "`scipy.ndimage.gaussian_filter` with mode 'reflect', truncated at 4 sigma; then division by the "
        "maximum when it is positive, else the map is all zeros. `sigma` in pixels wins; presets give it "
        "at 224 px and scale it with the image height (`sigma * H / 224`).",
        "- The graph explanation does not depend on the explained class (the image network holds no "
        "class); `--label` changes which probability is reported and recorded.",
        "- Neo4j (`--load --model NAME`): `(:Explanation {model, image, label, predicted, probability, "
        "options, label_index, predicted_index, true_label, positions, written})-[:HIGHLIGHTS {score}]->"
        "(:Position)`, `label` the explained class, `image` the file's absolute path or `DATA#index`. "
        "Highlighted: per layer, the positions whose path score is positive and at or above the layer's "
        "`q` quantile (scores differ by orders of magnitude between layers). Identity `(model, image, "
        "label)`, a uniqueness constraint: a rerun replaces; one transaction per image locks the `:Model` "
        "node and checks it is complete with the checksum read before; `drop` removes explanations. The "
        "Browser query is `cnngraph/queries/explanation.cypher`.",
        "",
        "## Faithfulness",
        "",
        "- Deletion / insertion (Petsiuk et al. 2018): `K` equal steps (`n_k = round(k H W / K)` pixels), "
        "pixels in decreasing map order replaced by (deletion) or restored into (insertion) the dataset's "
        "per-channel mean, before normalisation; softmax probability of the explained class; trapezoid "
        "AUC over the fraction in [0, 1]. Ties in the order are broken by one random permutation of the "
        "pixels from the seed (the same for every image), so a flat map is not read by position.",
        "- Average drop and increase in confidence (Chattopadhay et al. 2018): the map `M` in [0, 1] masks "
        "the image around the same mean, `x' = mean + M (x - mean)`, before normalisation; with a "
        "normalisation that subtracts the dataset mean this is exactly `M` times the normalised image (what "
        "public Grad-CAM++ code does). Per image `100 max(0, Y - O) / Y` and `100 [O > Y]`.",
        "- Every map is reduced the same way: `sum over channels of |attribution|`, divided by its "
        "maximum. Grad-CAM: captum's `LayerGradCam` on the last convolution (its output, before its "
        "batch norm), ReLU, bilinear upsampling by captum's `LayerAttribution.interpolate`. Integrated "
        "Gradients: captum, zero (black) baseline before normalisation. Random: uniform, seeded by the "
        "seed and the image's CRC32. Gaussian: centred, sigma a quarter of the side.",
        "- Each image's `2 (K + 1) + 1` perturbed copies go through the model in one forward pass.",
        "",
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--page", type=Path, default=ROOT / "docs" / "EXPLAIN.md")
    args = p.parse_args()
    from cnngraph.files import write_bytes

    lines = static_part()
    lines += [
        "## The study",
        "",
        "Declared before it ran: [docs/results/explain/DECLARED.md](results/explain/DECLARED.md). "
        "500 CIFAR-10 test images drawn with seed 29 from the shared copy, the committed baselines.",
        "",
    ]
    everything: dict[str, Any] = {}
    loaded = {m: load_model_results(RESULTS / m) for m in MODELS}
    summaries = {m: summarise(r) for m, r in loaded.items() if r is not None}
    if summaries:
        lines += overview(summaries)
    for model in MODELS:
        folder = RESULTS / model
        result = loaded[model]
        if result is None:
            lines += [f"### {TITLES[model]}", "", "Not run yet.", ""]
            continue
        summary = summarise(result)
        everything[model] = {
            "images": result["images"],
            "seconds": result["seconds"],
            "summary": summary,
            "graph_options": result["setup"]["graph_options"],
        }
        grid_figure(folder, result["setup"]["methods"], RESULTS / f"{model}_grid.png")
        curves_figure(result, RESULTS / f"{model}_curves.png")
        lines += model_section(model, result, summary, args.page)
    lines += [
        "### Commands",
        "",
        *[
            f"    .venv/bin/python bench/experiments/explain_pilot.py --checkpoint {BASE}/{m}.pt"
            for m in MODELS
        ],
        *[
            f"    .venv/bin/python bench/experiments/explain_study.py --checkpoint {BASE}/{m}.pt --threads 1"
            for m in MODELS
        ],
        "    .venv/bin/python bench/experiments/explain_report.py",
        "",
    ]
    write_bytes(RESULTS / "results.json", json.dumps(everything, indent=1).encode())
    write_bytes(args.page, "\n".join(lines).encode())
    print(f"wrote {args.page}")


if __name__ == "__main__":
    main()
