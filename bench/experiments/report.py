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
        f"| whole experiment | {r.get('wall_s', float('nan')):.0f} s |",
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


def run_row(run: dict[str, Any], orig: dict[str, Any], control: dict[str, Any] | None) -> str:
    label = run["method"]
    if "gamma" in run:
        label += f" (gamma {run['gamma']:.3f})"
    if "seed" in run:
        label += f" (seed {run['seed']})"
    epoch_ref = control["epoch_seconds"] if control else orig["epoch_seconds"]
    return (
        f"| {label} | {run['layers_removed']} | {run['removed']} | {pct(run['accuracy_before_finetune'])} | "
        f"**{pct(run['accuracy'])}** | {pct(run['precision'])} | {pct(run['recall'])} | "
        f"{run['parameters']:,} ({change(run['parameters'], orig['parameters'])}) | "
        f"{run['macs'] / 1e6:.1f}M ({change(run['macs'], orig['macs'])}) | "
        f"{run['latency_ms']:.2f} vs {run['original_latency_ms_same_time']:.2f} "
        f"({change(run['latency_ms'], run['original_latency_ms_same_time'])}) | "
        f"{run['epoch_seconds']:.1f} ({change(run['epoch_seconds'], epoch_ref)}) |"
    )


HEADER = [
    "| run | removed | conv indices | acc before FT | acc after FT | macro P | macro R | parameters | MACs "
    "| latency ms pruned vs original | epoch s (vs control) |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
]


def runs(r: dict[str, Any]) -> list[str]:
    orig = r["original"]
    control = next((x for x in r["runs"] if x["method"] == "control"), None)
    out = [
        f"Original: accuracy **{pct(orig['accuracy'])}%**, macro P {pct(orig['precision'])}%, macro R "
        f"{pct(orig['recall'])}%, {orig['parameters']:,} parameters, {orig['macs'] / 1e6:.1f}M MACs, "
        f"latency {orig['latency_ms']:.2f} ms, baseline epoch {orig['epoch_seconds']:.1f} s.",
        "",
        *HEADER,
    ]
    out += [run_row(x, orig, control) for x in r["runs"] if x["method"] in ("control", "entropy")]
    return out


def comparison(r: dict[str, Any]) -> list[str]:
    orig = r["original"]
    control = next((x for x in r["runs"] if x["method"] == "control"), None)
    ns = sorted({x["layers_removed"] for x in r["runs"] if x["method"] == "random"})
    out: list[str] = []
    for n in ns:
        at = [x for x in r["runs"] if x["layers_removed"] == n and x["method"] != "control"]
        ent = [x for x in at if x["method"] == "entropy"]
        rnd = [x for x in at if x["method"] == "random"]
        others = [x for x in at if x["method"] in ("mean", "weight-norm")]
        out += [f"**{n} convolutions removed**", "", *HEADER]
        out += [run_row(x, orig, control) for x in ent[:1] + rnd + others]
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


def goals(r: dict[str, Any]) -> list[str]:
    orig = r["original"]
    out = [
        "| entropy run | acc change (points) | within 0.5 pt or above | parameters | >= 30% fewer | "
        "latency | lower |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for x in r["runs"]:
        if x["method"] != "entropy":
            continue
        d = 100 * (x["accuracy"] - orig["accuracy"])
        p = (x["parameters"] - orig["parameters"]) / orig["parameters"]
        lat = (x["latency_ms"] - x["original_latency_ms_same_time"]) / x["original_latency_ms_same_time"]
        ok = ["yes" if c else "no" for c in (d >= -0.5, p <= -0.3, lat < 0)]
        out.append(
            f"| gamma {x['gamma']} ({x['layers_removed']} removed) | {d:+.2f} | {ok[0]} | "
            f"{100 * p:+.1f}% | {ok[1]} | {100 * lat:+.1f}% | {ok[2]} |"
        )
    return out


def main() -> None:
    for arg in sys.argv[1:]:
        r = json.loads(Path(arg).read_text())
        name = r["config"]["dataset"]
        for title, part in (
            ("setup", setup),
            ("per-layer delta", layers),
            ("gamma sweep", sweep),
            ("entropy runs", runs),
            ("comparison at equal layers removed", comparison),
            ("goals", goals),
        ):
            print(f"#### {name}: {title}\n")
            print("\n".join(part(r)))
            print()


if __name__ == "__main__":
    main()
