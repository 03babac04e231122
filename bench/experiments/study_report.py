"""docs/RESULTS.md from the study JSON files that ``study.py`` writes, with the plots beside them.

Usage::

    .venv/bin/python bench/experiments/study_report.py docs/results/study/resnet20/study.json \
        docs/results/study/vgg16/study.json > docs/RESULTS.md

Every number and every verdict below is computed from the JSON; nothing is typed in by hand.
Against random selections a verdict needs a difference larger than the random seeds' standard
deviation; against one other selection, larger than twice the standard deviation of the entropy
selection's accuracy over its repeated seeds. A smaller difference is "no clear difference".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

BASE_METHODS = ("entropy-any", "random", "last", "weight-norm", "mean", "shuffled-delta")
RULE_METHODS = ("entropy-any", "entropy-fraction", "entropy-unit-mean")
TARGETS = {"resnet20": 0.90, "vgg16": 0.88}


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def change(new: float, old: float) -> str:
    return f"{100 * (new - old) / old:+.1f}%"


def title(r: dict[str, Any]) -> str:
    """The model, its width when not 1, and its checkpoint's file name when that is not simply the
    model's name (a second baseline of the same architecture, e.g. ``resnet20-200ep.pt``)."""
    s = r["spec"]
    text = s["source"] if s["width"] == 1.0 else f"{s['source']} (width x{s['width']})"
    stem = Path(str((r.get("checkpoint") or {}).get("path", ""))).stem
    return text if stem in ("", s["source"]) else f"{text}, `{stem}.pt`"


def budget_text(r: dict[str, Any]) -> str:
    """The fine-tune budget that every run of the study got, briefly."""
    b = r["budget"]
    return f"{b['ft_epochs']} epoch" + ("s" if b["ft_epochs"] != 1 else "") + f" from lr {b['ft_lr']}"


def budget_title(r: dict[str, Any]) -> str:
    """The model and the study's fine-tune budget."""
    return f"{title(r)}, fine-tune {budget_text(r)}"


def run_key(units: list[int]) -> str:
    """The key study.py gives the run that removes ``units``."""
    return "control" if not units else "units-" + "-".join(str(u) for u in units)


def run_of(r: dict[str, Any], units: list[int]) -> dict[str, Any] | None:
    return r["runs"].get(run_key(units))


def method_runs(r: dict[str, Any], n: int, method: str) -> list[dict[str, Any]]:
    """The finished runs of ``method`` (all seeds for random) at ``n`` removed units."""
    sels = r["selections"][str(n)]
    names = [k for k in sels if k == method or (method == "random" and k.startswith("random-"))]
    return [run for run in (run_of(r, sels[k]["removed_units"]) for k in names) if run is not None]


def unit_names(r: dict[str, Any], units: list[int]) -> str:
    return ", ".join(r["units"][u]["name"] for u in units) or "none"


# --------------------------------------------------------------------------- baselines
def baselines(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| model | parameters | MACs | test accuracy | macro precision | macro recall | target | met | "
        "training | epoch time |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |",
    ]
    seen = set()
    for r in results:
        if r["checkpoint"]["sha256"] in seen:  # the same baseline studied with another budget
            continue
        seen.add(r["checkpoint"]["sha256"])
        o, t = r["original"], r["checkpoint"]["training"] or {}
        target = TARGETS.get(r["spec"]["source"])
        met = "n/a" if target is None else ("yes" if o["accuracy"] >= target else "**no**")
        hist = r["checkpoint"].get("history") or {}
        lines.append(
            f"| {title(r)} | {o['parameters']:,} | {o['macs']:,} | {pct(o['accuracy'])}% | "
            f"{pct(o['precision'])}% | {pct(o['recall'])}% | "
            f"{'' if target is None else pct(target) + '%'} | {met} | "
            f"{training_summary(t)} | {hist.get('mean_epoch_seconds', float('nan')):.0f} s |"
        )
    return lines


def stages(t: dict[str, Any]) -> list[dict[str, Any]]:
    """The training stages of a checkpoint, first to last (``--init`` chains them)."""
    chain = [t]
    while isinstance(chain[0].get("init"), dict) and isinstance(chain[0]["init"].get("training"), dict):
        chain.insert(0, chain[0]["init"]["training"])
    return chain


def training_summary(t: dict[str, Any]) -> str:
    parts = []
    for k, s in enumerate(stages(t)):
        text = (
            f"{s.get('epochs')} epochs, SGD {s.get('schedule')} lr {s.get('lr')}, "
            f"batch {s.get('batch_size')}, wd {s.get('weight_decay')}, "
            f"augment {s.get('augment')}, seed {s.get('seed')}"
        )
        if s.get("average_from") is not None:
            text += f", weights averaged from epoch {s['average_from']} (SWA)"
        init = s.get("init")
        if k and isinstance(init, dict) and init.get("accuracy") is not None:
            text = f"then from that checkpoint ({pct(init['accuracy'])}%): " + text
        parts.append(text)
    return "; ".join(parts)


# --------------------------------------------------------------------------- one study
def setup(r: dict[str, Any]) -> list[str]:
    g, b = r["graph"], r["budget"]
    return [
        "| item | value |",
        "| --- | --- |",
        f"| baseline | `{r['checkpoint']['path']}` (sha256 {r['checkpoint']['sha256'][:12]}) |",
        f"| data | {r['data'].get('dataset', 'CIFAR-10')}, {r['data']['train_images']:,} training / "
        f"{r['data']['test_images']:,} test images |",
        f"| graph | {g['images_per_class']} training images per class; {g['nodes']:,} nodes, "
        f"{g['arcs']:,} arcs, {g['class_arcs']:,} class-arcs; map {g['map_s']:.1f} s, load "
        f"{g['load_s']:.1f} s, score {g['score_s']:.1f} s |",
        f"| removable units | {r['removable_units']} ({', '.join(str(n) for n in r['counts'])} removed) |",
        f"| fine-tune budget (every run, fixed before any result) | {b['ft_epochs']} epoch(s) over the "
        f"full training set, SGD momentum 0.9, {b['ft_schedule']} from lr {b['ft_lr']}, batch "
        f"{b['batch_size']}, augmentation, seed {b['seed']}, {b.get('ft_precision', 'fp32')} arithmetic; "
        f"surgery `{b['strategy']}` |",
        f"| selection | threshold = gamma x mean(delta) over all nodes; gamma set per rule so that the "
        f"rule removes the count; `fraction:q` with q = {r['config']['fraction_q']} |",
        f"| latency | median of {b['latency_repeats']} single-image CPU runs, measured right after the "
        "original's on the same load (paired) |",
    ]


def unit_table(r: dict[str, Any]) -> list[str]:
    n0 = str(r["counts"][0])
    freq = r["shuffled"][n0]["any"]["unit_frequency"]
    lines = [
        f"| unit | kind | nodes | entropy delta mean | min | max | mean-aggregator delta mean | "
        f"L1 per weight | removed by shuffled delta ({n0} units, share of permutations) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for u in r["units"]:
        e, m = u["entropy"], u["mean"]
        norm = u.get("l1_per_parameter")
        share = freq.get(str(u["unit"]))
        lines.append(
            f"| {u['unit']} {u['name']} | {u['kind']} | {u['nodes']:,} | {e['mean']:.4f} | {e['min']:.4f} | "
            f"{e['max']:.4f} | {m['mean']:.4f} | {'' if norm is None else f'{norm:.4f}'} | "
            f"{'' if share is None else f'{share:.2f}'} |"
        )
    return lines


def comparison(r: dict[str, Any], n: int) -> list[str]:
    o = r["original"]
    control = r["runs"].get("control")
    lines = [
        "| method | units removed | after surgery | after fine-tune | change vs original | macro precision "
        "| macro recall | parameters | MACs | latency vs original (paired) | epoch time |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows = [("original (no fine-tune)", None)]
    if control:
        rows.append(("control (unpruned, same fine-tune)", control))
    for method in BASE_METHODS:
        sels = r["selections"][str(n)]
        for k in sorted(s for s in sels if s == method or (method == "random" and s.startswith("random-"))):
            rows.append((k, run_of(r, sels[k]["removed_units"]) or {"pending": sels[k]["removed_units"]}))
    for name, run in rows:
        if run is None:
            lines.append(
                f"| {name} | none | | {pct(o['accuracy'])}% | | {pct(o['precision'])}% | {pct(o['recall'])}% "
                f"| {o['parameters']:,} | {o['macs']:,} | {o['latency_ms']:.2f} ms | |"
            )
        elif "pending" in run:
            lines.append(f"| {name} | {unit_names(r, run['pending'])} | not run yet | | | | | | | | |")
        else:
            lat = run["latency_ms"] / run["original_latency_ms_same_time"]
            lines.append(
                f"| {name} | {unit_names(r, run['removed_units'])} | {pct(run['accuracy_after_surgery'])}% | "
                f"{pct(run['accuracy'])}% | {100 * (run['accuracy'] - o['accuracy']):+.2f} pt | "
                f"{pct(run['precision'])}% | {pct(run['recall'])}% | {run['parameters']:,} "
                f"({change(run['parameters'], o['parameters'])}) | {run['macs']:,} "
                f"({change(run['macs'], o['macs'])}) | x{lat:.2f} | {run['epoch_seconds']:.0f} s |"
            )
    return lines


def repeat_runs(r: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """The entropy-any run of ``n`` units and its repeats with other seeds (study.py step 5)."""
    key = run_key(r["selections"][str(n)]["entropy-any"]["removed_units"])
    first = r["runs"].get(key)
    again = [v for k, v in sorted(r["runs"].items()) if k.startswith(key + "-seed")]
    return ([first] if first else []) + again


def verdicts(r: dict[str, Any], n: int) -> list[str]:
    """Entropy against every baseline at ``n`` units. Margins: against random, the random seeds'
    standard deviation; against one deterministic selection, twice the standard deviation of the
    entropy selection's own accuracy over seeds (the random seeds' one when no repeat ran)."""
    ent = method_runs(r, n, "entropy-any")
    rand = [x["accuracy"] for x in method_runs(r, n, "random")]
    if not ent or len(rand) < 2:
        return [f"- {n} units: not every run is finished yet; no verdict."]
    acc = ent[0]["accuracy"]
    spread = float(np.std(rand, ddof=1))
    again = [x["accuracy"] for x in repeat_runs(r, n)]
    noise = float(np.std(again, ddof=1)) if len(again) >= 2 else None
    margin = spread if noise is None else 2 * noise
    out = [
        f"- **{n} units removed.** Entropy (rule `any`): {pct(acc)}%. "
        f"Random: mean {pct(float(np.mean(rand)))}% "
        f"± {pct(spread)} (std over {len(rand)} seeds; entropy above {sum(acc > x for x in rand)} of them)."
    ]
    if noise is None:
        out.append(
            "  - Seed noise of one selection not measured (no repeats); the margin against a single "
            f"selection is the random seeds' std, {pct(spread)} pt."
        )
    else:
        out.append(
            f"  - The entropy selection over {len(again)} seeds: "
            f"{', '.join(pct(x) + '%' for x in again)} (std {pct(noise)} pt); a single selection "
            f"counts as different from it beyond twice that, {pct(margin)} pt."
        )
    sels, shuf = r["selections"][str(n)], r["shuffled"][str(n)]["any"]
    mine = set(sels["entropy-any"]["removed_units"])
    counts = shuf["removed_counts"]
    overlaps = ", ".join(
        f"{k} {len(mine & set(sels[k]['removed_units']))}"
        for k in ("shuffled-delta", "last", "weight-norm", "mean")
    )
    out.append(
        f"  - Units shared with each baseline's selection (of {len(mine)}): {overlaps}. "
        f"Under shuffled scores the same rule and gamma removed {min(counts)}-{max(counts)} units "
        f"and exactly entropy's units in {100 * shuf['same_as_entropy_share']:.0f}% of "
        f"{len(counts)} permutations."
    )
    for method in ("random", "last", "weight-norm", "mean", "shuffled-delta"):
        runs = method_runs(r, n, method)
        if not runs:
            out.append(f"  - vs {method}: not run yet.")
            continue
        other = float(np.mean([x["accuracy"] for x in runs]))
        diff = acc - other
        same = ent[0]["removed_units"] == runs[0]["removed_units"] and method != "random"
        removed = len(runs[0]["removed_units"])
        if same:
            word = "same units removed, same run"
        elif method == "shuffled-delta" and removed != n:
            word = (
                f"not comparable at equal size: with shuffled scores the rule most often removes {removed} "
                f"unit(s), not {n}"
            )
        elif abs(diff) <= (spread if method == "random" else margin):
            word = "no clear difference"
        else:
            word = "entropy better" if diff > 0 else "entropy worse"
        out.append(f"  - vs {method}: {pct(other)}% ({100 * diff:+.2f} pt): {word}.")
    return out


def rules(r: dict[str, Any]) -> list[str]:
    lines = [
        "| units removed | layer rule | gamma | units removed (names) | accuracy after fine-tune | shuffled "
        "delta: share of permutations removing the same units | shuffled delta: units removed per "
        "permutation (min-max) |",
        "| ---: | --- | ---: | --- | ---: | ---: | --- |",
    ]
    for n in r["counts"]:
        sels, shuf = r["selections"][str(n)], r["shuffled"][str(n)]
        for method in RULE_METHODS:
            rule = method.removeprefix("entropy-")
            s, sh = sels[method], shuf[rule]
            run = run_of(r, s["removed_units"])
            counts = sh["removed_counts"]
            lines.append(
                f"| {n} | `{rule}` | {s['gamma']:.4f} | {unit_names(r, s['removed_units'])} | "
                f"{'not run yet' if run is None else pct(run['accuracy']) + '%'} | "
                f"{sh['same_as_entropy_share']:.2f} | {min(counts)}-{max(counts)} |"
            )
    return lines


def goal(r: dict[str, Any]) -> list[str]:
    """The ResNet-20 goal: within 1 point of the baseline with >= 30% fewer MACs."""
    o = r["original"]
    hits = [
        (k, run)
        for k, run in r["runs"].items()
        if run["macs"] <= 0.7 * o["macs"] and run["accuracy"] >= o["accuracy"] - 0.01
    ]
    ent_keys = {run_key(r["selections"][str(n)]["entropy-any"]["removed_units"]) for n in r["counts"]}
    ent_hits = [k for k, _ in hits if k in ent_keys]
    return [
        f"- Within 1 point of the baseline ({pct(o['accuracy'])}%) with at least 30% fewer MACs: "
        f"{len(hits)} run(s) of {len(r['runs'])} ({', '.join(k for k, _ in hits) or 'none'}); "
        f"of them by the entropy rule: {', '.join(ent_hits) or 'none'}."
    ]


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    o = r["original"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.axhline(100 * o["accuracy"], color="black", lw=1, label="original")
    if "control" in r["runs"]:
        ax.axhline(100 * r["runs"]["control"]["accuracy"], color="black", ls="--", lw=1, label="control")
    markers = {"random": "x", "last": "v", "weight-norm": "^", "mean": "s", "shuffled-delta": "D"}
    markers["entropy-any"] = "o"  # drawn last, as a large ring, so that it shows when it shares a run
    for method, marker in markers.items():
        pts = [
            (run["macs"] / 1e6, 100 * run["accuracy"])
            for n in r["counts"]
            for run in method_runs(r, n, method)
        ]
        if not pts:
            continue
        if method == "entropy-any":
            ax.plot(*zip(*pts, strict=True), marker=marker, ls="", label=method, ms=13, mfc="none",
                    mew=2, color="black")  # fmt: skip
        else:
            ax.plot(*zip(*pts, strict=True), marker=marker, ls="", label=method, alpha=0.8)
    ax.set_xlabel("MACs per image (millions)")
    ax.set_ylabel("test accuracy after fine-tune (%)")
    ax.set_title(f"{title(r)}: units removed by each method\n(fine-tune {budget_text(r)})", fontsize=11)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def study(r: dict[str, Any], path: Path) -> list[str]:
    png = path.parent / f"{path.parent.name}_accuracy.png"
    plot(r, png)
    lines = [f"## Pruning study: {budget_title(r)}", "", "### Setup", "", *setup(r), ""]
    lines += ["### Per-unit delta", "", *unit_table(r), ""]
    for n in r["counts"]:
        lines += [f"### {n} of {r['removable_units']} units removed", "", *comparison(r, n), ""]
    lines += ["### Layer rules and the shuffled-delta control", "", *rules(r), ""]
    lines += ["### Verdicts (computed)", ""]
    for n in r["counts"]:
        lines += verdicts(r, n)
    if r["spec"]["source"] == "resnet20":
        lines += goal(r)
    link = png.relative_to("docs") if png.is_relative_to("docs") else png
    lines += ["", f"![accuracy against MACs]({link})", ""]
    return lines


HEADER = """# Results: entropy unit pruning against honest baselines (issue 13)

Every number on this page comes from the JSON files under `docs/results/study/`, turned into this
page by `bench/experiments/study_report.py`; nothing was typed in by hand, and no budget or option
was changed after a pruning result was seen. Machine: the 2-core development machine, CPU only
(no GPU was lent to this task); other work ran beside some of the runs, so wall times (epoch
time, latency) are indicative, while accuracies, parameters and MACs do not depend on it.

## Commands

| step | command |
| --- | --- |
| extract CIFAR-10 (once) | `{extract}` |
{commands}
| this page | `.venv/bin/python bench/experiments/study_report.py {jsons} > docs/RESULTS.md` |

The baseline checkpoints and their training logs are committed under `bench/experiments/baselines/`
(`*.pt`: state dict, spec, split and per-epoch history; `*.train.json`: what `cnngraph train --json`
printed), so every study starts from the same models. CIFAR-10 is read from
`../shared/datasets/cifar10-jpeg.tar.gz`, extracted once outside the repository. The study needs
a running Neo4j (`cnngraph server start`) for map, load and score; it keeps its stages under
`docs/results/study/<model>/` (`scores.npz`, `graph.json`, `original.json`, one `runs/<key>.json`
per fine-tuned model), so an interrupted study run again resumes where it stopped without redoing a
finished run.

## How to read the tables

- *Units* are what the pruner removes (docs/METHOD.md section 8): residual branches for ResNet-20 (9
  removable; the stem and the two projection shortcuts stay), convolutions for VGG16-BN (13).
  Each study removes 1/3 and 1/2 of the removable units (rounded down).
- *entropy-any* is the paper's rule: threshold `gamma x mean(delta)` over all nodes, a unit stays
  when one of its nodes is above it; gamma is chosen (`gamma_for_count`, the same as `cnngraph prune
  --remove N`) so that the rule removes the count. *mean* is the class-blind aggregator under the
  same rule; *random-k* removes units at random (seed k); *last* the deepest units;
  *weight-norm* the units of smallest mean |weight|; *shuffled-delta* applies the same rule and
  gamma to the entropy scores permuted at random across all nodes and fine-tunes the selection that
  the permutations give most often (the share is in the rule table). *control* is the unpruned
  model with the same fine-tune.
- Every run gets the same fine-tune, fixed before any result; *after surgery* is the test accuracy
  before it. Methods that select the same units share one run.
- Verdicts: against random, a difference smaller than the standard deviation of the random seeds'
  accuracies is called "no clear difference"; against a single other selection (`last`,
  weight-norm, `mean`, shuffled-delta), one smaller than twice the standard deviation of the
  entropy selection's accuracy over its seeds (the same units re-initialised and fine-tuned with
  seeds 0, 1 and 2, listed in the verdicts).
- The earlier, under-trained experiment (issue 6: VGG16-BN on 10,000 CIFAR-10 images and on MNIST)
  is kept as an appendix in [RESULTS-issue6.md](RESULTS-issue6.md).
"""


EXTRACT = (
    "mkdir -p ~/.cache/cnngraph-data/cifar10 && "
    "tar -xzf ../shared/datasets/cifar10-jpeg.tar.gz -C ~/.cache/cnngraph-data/cifar10"
)


def train_commands(r: dict[str, Any]) -> list[str]:
    """The ``cnngraph train`` commands that made the baseline (one per stage), rebuilt from what
    they recorded; a stage started with ``--init`` reads the checkpoint the stage before wrote."""
    spec = r["spec"]
    data = r["checkpoint"].get("data") or {}
    chain = stages(r["checkpoint"]["training"] or {})
    outs = [str(s["init"]["checkpoint"]) for s in chain[1:]] + [r["checkpoint"]["path"]]
    commands = []
    for t, out in zip(chain, outs, strict=True):
        parts = [".venv/bin/cnngraph train", f"--model {spec['source']}"]
        if spec["width"] != 1.0:
            parts.append(f"--width {spec['width']}")
        parts += [
            f"--data {data.get('source')} --split {data.get('split')} --test-split {data.get('test_split')}",
            f"--epochs {t.get('epochs')} --batch-size {t.get('batch_size')} --lr {t.get('lr')}",
            f"--schedule {t.get('schedule')} --weight-decay {t.get('weight_decay')} --seed {t.get('seed')}",
        ]
        parts += [
            flag
            for flag, on in (("--augment", t.get("augment")), ("--channels-last", t.get("channels_last")))
            if on
        ]
        if t.get("precision", "fp32") != "fp32":
            parts.append(f"--precision {t['precision']}")
        if t.get("average_from") is not None:
            parts.append(f"--average-from {t['average_from']}")
        if isinstance(t.get("init"), dict):
            parts.append(f"--init {t['init']['checkpoint']}")
        parts.append(f"--out {out} --json")
        commands.append(" ".join(parts))
    return commands


def study_command(r: dict[str, Any]) -> str:
    c = r["config"]
    return (
        f".venv/bin/python bench/experiments/study.py --checkpoint {c['checkpoint']}"
        + (f" --data {c['data']}" if c.get("data") else "")
        + ("" if Path(c["out"]).parts[-3:] == ("docs", "results", "study") else f" --out {c['out']}")
        + f" --ft-epochs {c['ft_epochs']} --ft-lr {c['ft_lr']} --random-seeds {c['random_seeds']}"
        f" --permutations {c['permutations']} --images-per-class {c['images_per_class']}"
        + (f" --ft-precision {c['ft_precision']}" if "ft_precision" in c else "")
        + (f" --repeat-seeds {c['repeat_seeds']}" if "repeat_seeds" in c else "")
        + (f" --threads {c['threads']}" if "threads" in c else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("studies", nargs="+", type=Path, help="study.json files written by study.py")
    parser.add_argument("--notes", type=Path, help="hand-written reading of the numbers, appended as is")
    args = parser.parse_args()
    paths = list(args.studies)
    results = [json.loads(p.read_text()) for p in paths]
    commands = []
    trained: set[str] = set()
    for r in results:
        sha = r["checkpoint"]["sha256"]
        stage_commands = [] if sha in trained else train_commands(r)  # one baseline, several budgets
        trained.add(sha)
        for k, command in enumerate(stage_commands, 1):
            stage = f", stage {k}" if len(stage_commands) > 1 else ""
            commands.append(f"| train {title(r)}{stage} | `{command}` |")
        commands.append(f"| study {budget_title(r)} | `{study_command(r)}` |")
    jsons = " ".join(str(p) for p in paths) + (f" --notes {args.notes}" if args.notes else "")
    out = [HEADER.format(extract=EXTRACT, commands="\n".join(commands), jsons=jsons)]
    out += ["## Baselines", "", *baselines(results), ""]
    for r, p in zip(results, paths, strict=True):
        out += study(r, p)
    if args.notes:
        out += [
            "## What the numbers say (written by hand after the runs)",
            "",
            args.notes.read_text().strip(),
            "",
        ]
    print("\n".join(out))


if __name__ == "__main__":
    main()
