"""Markdown tables from the JSON that ``run.py`` writes: ``report.py docs/results/mnist.json``.

Prints the setup and stage times, the per-layer delta table, the gamma sweep as intervals, the
entropy runs (original beside pruned) and the comparison at equal numbers of removed layers,
with the goal checks of issue 6 computed from the numbers (nothing is typed in by hand).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def change(new: float, old: float) -> str:
    return f"{100 * (new - old) / old:+.1f}%"


def setup(r: dict[str, Any]) -> list[str]:
    c, d, t, g = r["config"], r["data"], r["baseline_training"], r["graph"]
    hist = t["history"]["epochs"]
    return [
        "| item | value |",
        "| --- | --- |",
        f"| data | {d['split']}; {d['train_images']} train / {d['test_images']} test images |",
        f"| model | VGG16-BN, width x{r['spec']['width']}, {r['original']['parameters']:,} parameters |",
        f"| baseline training | {c['epochs']} epochs, SGD lr {c['lr']}, batch {c['batch_size']}, "
        f"seed {c['seed']}, "
        f"final train acc {pct(hist[-1]['accuracy'])}%, {t['seconds']:.0f} s |",
        f"| fine-tune budget (every run) | {c['ft_epochs']} epoch(s), SGD lr {c['ft_lr']}, batch "
        f"{c['batch_size']}, seed {c['seed']}, consumer rewiring `{c['strategy']}` |",
        f"| mapping | {c['images_per_class']} images per class, response activation, descriptor mean |",
        f"| graph | {g['nodes']:,} nodes, {g['arcs']:,} arcs, {g['relationships']:,} relationships |",
        f"| selection | threshold = gamma x {c['threshold_stat']}(delta), layer rule any |",
        f"| stage wall times | map {g['map_s']:.1f} s, load {g['load_s']:.1f} s, "
        f"score {g['score_s']:.1f} s |",
        "| wall time of the last invocation of run.py (reused runs not re-run) | "
        f"{r.get('wall_s', float('nan')):.0f} s |",
    ]


def stages(r: dict[str, Any]) -> list[str]:
    """Wall time of every stage (shared machine: the load changed during the runs)."""
    g, runs = r["graph"], r["runs"]

    def spread(key: str) -> str:
        v = np.array([x[key] for x in runs])
        return f"mean {v.mean():.2f} s, min {v.min():.2f} s, max {v.max():.2f} s over {v.size} runs"

    return [
        "| stage | wall time |",
        "| --- | --- |",
        f"| baseline training ({r['config']['epochs']} epochs) | {r['baseline_training']['seconds']:.0f} s |",
        f"| map (`map_model`, {g['images_per_class']} images per class) | {g['map_s']:.1f} s |",
        f"| load into Neo4j (`load_network`, {g['relationships']:,} relationships) | {g['load_s']:.1f} s |",
        f"| score (`compute_scores`, Cypher) | {g['score_s']:.1f} s |",
        f"| prune: surgery (`remove_convolutions`) | {spread('surgery_s')} |",
        f"| fine-tune ({r['config']['ft_epochs']} epoch over {r['data'].get('finetune_images')} images) "
        f"| {spread('finetune_s')} |",
        f"| evaluate ({r['data']['test_images']} test images) | {spread('eval_s')} |",
    ]


def layers(r: dict[str, Any]) -> list[str]:
    out = [
        "| conv | module | nodes | entropy mean | entropy min | entropy max | mean-agg mean | mean-agg max |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in r["layers"]:
        e, m = row["entropy"], row["mean"]
        out.append(
            f"| {row['layer']} | `{row['name']}` | {row['nodes']} | {e['mean']:.4f} | {e['min']:.4f} | "
            f"{e['max']:.4f} | {m['mean']:.4g} | {m['max']:.4g} |"
        )
    return out


def sweep(r: dict[str, Any]) -> list[str]:
    """Each layer's breakpoint: the gamma from which rule ``any`` removes it, in removal order."""
    names = [row["name"] for row in r["layers"]]
    out = ["| aggregator | removal order: conv (gamma from which it is removed) |", "| --- | --- |"]
    for agg in ("entropy", "mean"):
        bp = r["sweep"][agg]["breakpoints"]
        order = sorted(range(len(bp)), key=lambda k: bp[k])
        parts = [f"{k} `{names[k]}` ({bp[k]:.5f})" for k in order]
        out.append(f"| {agg} | {'; '.join(parts)} |")
    at_one = r["sweep"]["entropy"]["removed"][r["sweep"]["entropy"]["gammas"].index(1.0)]
    out += ["", f"At gamma = 1.0 the entropy selection removes {at_one} convolution(s)."]
    return out


def paired(r: dict[str, Any], run: dict[str, Any]) -> dict[str, Any] | None:
    """The paired latency/step measurement of this run's architecture, when latency.py has run."""
    lat = r.get("latency_paired")
    return None if lat is None else lat["by_removed"].get(",".join(map(str, run["removed"])))


def cost_cells(r: dict[str, Any], run: dict[str, Any]) -> str:
    p = paired(r, run)
    if p is None:
        lat = f"{run['latency_ms']:.2f} vs {run['original_latency_ms_same_time']:.2f} "
        lat += f"({change(run['latency_ms'], run['original_latency_ms_same_time'])})"
        return f"{lat} | - |"
    return (
        f"{p['pruned_ms']:.2f} vs {p['original_ms']:.2f} ({100 * p['change']:+.1f}%) | "
        f"{p['pruned_step_s']:.3f} vs {p['original_step_s']:.3f} ({100 * p['step_change']:+.1f}%) |"
    )


def run_row(r: dict[str, Any], run: dict[str, Any], orig: dict[str, Any]) -> str:
    label = run["method"]
    if "gamma" in run:
        label += f" (gamma {run['gamma']:.3f})"
    if "seed" in run:
        label += f" (seed {run['seed']})"
    return (
        f"| {label} | {run['layers_removed']} | {run['removed']} | {pct(run['accuracy_before_finetune'])} | "
        f"**{pct(run['accuracy'])}** | {pct(run['precision'])} | {pct(run['recall'])} | "
        f"{run['parameters']:,} ({change(run['parameters'], orig['parameters'])}) | "
        f"{run['macs'] / 1e6:.2f}M ({change(run['macs'], orig['macs'])}) | " + cost_cells(r, run)
    )


HEADER = [
    "| run | removed | conv indices | acc before FT | acc after FT | macro P | macro R | parameters | MACs "
    "| latency ms, pruned vs original | train step s, pruned vs original |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
]


def runs(r: dict[str, Any]) -> list[str]:
    orig = r["original"]
    out = [
        f"Original: accuracy **{pct(orig['accuracy'])}%**, macro P {pct(orig['precision'])}%, macro R "
        f"{pct(orig['recall'])}%, {orig['parameters']:,} parameters, {orig['macs'] / 1e6:.1f}M MACs, "
        f"mean baseline training epoch {orig['epoch_seconds']:.1f} s (load-dependent, see the paired "
        "step times below).",
        "",
        *HEADER,
    ]
    out += [run_row(r, x, orig) for x in r["runs"] if x["method"] in ("control", "entropy")]
    return out


def comparison(r: dict[str, Any]) -> list[str]:
    orig = r["original"]
    ns = sorted({x["layers_removed"] for x in r["runs"] if x["method"] == "random"})
    out: list[str] = []
    for n in ns:
        at = [x for x in r["runs"] if x["layers_removed"] == n and x["method"] != "control"]
        ent = [x for x in at if x["method"] == "entropy"]
        rnd = [x for x in at if x["method"] == "random"]
        others = [x for x in at if x["method"] in ("mean", "weight-norm")]
        out += [f"**{n} convolutions removed**", "", *HEADER]
        out += [run_row(r, x, orig) for x in ent[:1] + rnd + others]
        accs = np.array([x["accuracy"] for x in rnd])
        out += [
            "",
            f"Random over {len(rnd)} seeds: accuracy {100 * accs.mean():.2f} ± {100 * accs.std():.2f} "
            f"(min {100 * accs.min():.2f}, max {100 * accs.max():.2f}).",
        ]
        if ent:
            e = ent[0]["accuracy"]
            better = int((accs < e).sum())
            out.append(
                f"Entropy {100 * e:.2f} vs random mean {100 * accs.mean():.2f}: "
                f"{100 * (e - accs.mean()):+.2f} points; entropy beats {better} of {len(rnd)} random seeds."
            )
        out.append("")
    return out


def summary(r: dict[str, Any]) -> list[str]:
    """Accuracy after fine-tune by method at every compared number of removed layers."""
    out = [
        "| removed | entropy | random mean ± std (seeds) | mean aggregator | weight norm |",
        "| --- | --- | --- | --- | --- |",
    ]
    ns = sorted({x["layers_removed"] for x in r["runs"] if x["method"] == "random"})
    for n in ns:
        at = [x for x in r["runs"] if x["layers_removed"] == n]

        def acc(method: str, at: list[dict[str, Any]] = at) -> str:
            found = [x for x in at if x["method"] == method]
            return pct(found[0]["accuracy"]) if found else "-"

        rnd = np.array([x["accuracy"] for x in at if x["method"] == "random"])
        rand = f"{100 * rnd.mean():.2f} ± {100 * rnd.std():.2f} ({rnd.size})"
        out.append(f"| {n} | {acc('entropy')} | {rand} | {acc('mean')} | {acc('weight-norm')} |")
    return out


def goals(r: dict[str, Any]) -> list[str]:
    """The issue's goals per entropy run; latency counts as lower only beyond the noise floor.

    The noise floor is the paired latency change measured between two copies of the *same*
    architecture (the control run), in absolute value.
    """
    orig = r["original"]
    control = next((x for x in r["runs"] if x["method"] == "control"), None)
    floor_run = paired(r, control) if control else None
    floor = abs(floor_run["change"]) if floor_run else 0.0
    out = [
        f"Latency noise floor (same architecture measured against itself): {100 * floor:.1f}%.",
        "",
        "| entropy run | acc change (points) | within 0.5 pt or above | parameters | >= 30% fewer | "
        "latency | lower beyond the noise floor | MACs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for x in r["runs"]:
        if x["method"] != "entropy":
            continue
        d = 100 * (x["accuracy"] - orig["accuracy"])
        p = (x["parameters"] - orig["parameters"]) / orig["parameters"]
        pl = paired(r, x)
        if pl is None:
            lat = (x["latency_ms"] - x["original_latency_ms_same_time"]) / x["original_latency_ms_same_time"]
        else:
            lat = pl["change"]
        ok = ["yes" if c else "no" for c in (round(d, 6) >= -0.5, p <= -0.3, lat < -floor)]
        out.append(
            f"| gamma {x['gamma']:.5f} ({x['layers_removed']} removed) | {d:+.2f} | {ok[0]} | "
            f"{100 * p:+.1f}% | {ok[1]} | {100 * lat:+.1f}% | {ok[2]} | {change(x['macs'], orig['macs'])} |"
        )
    return out


def main() -> None:
    for arg in sys.argv[1:]:
        r = json.loads(Path(arg).read_text())
        name = r["config"]["dataset"]
        for title, part in (
            ("setup", setup),
            ("stage wall times", stages),
            ("per-layer delta", layers),
            ("gamma sweep", sweep),
            ("entropy runs", runs),
            ("accuracy by method at equal layers removed", summary),
            ("comparison at equal layers removed", comparison),
            ("goals", goals),
        ):
            print(f"#### {name}: {title}\n")
            print("\n".join(part(r)))
            print()


if __name__ == "__main__":
    main()
