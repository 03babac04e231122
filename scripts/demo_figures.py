"""The figures of one ``make demo`` run, gathered from its own outputs into ``OUT/figures.json``.

Usage: ``python scripts/demo_figures.py OUT NAME [SECONDS]`` after ``scripts/demo.sh`` wrote
``OUT/model.pt``, ``OUT/NAME.npz`` and ``OUT/pruned/report.json``. The README quotes none of the
figures that depend on the training run; ``tests/test_readme_figures.py`` checks the ones it
quotes against this file from a real (shortened) demo run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from cnngraph import __version__
from cnngraph.mapping.network import MultilayerNetwork
from cnngraph.models import read_checkpoint


def gather(out: Path, name: str, seconds: float | None = None) -> dict[str, Any]:
    """Dataset, graph, selection and the original-vs-pruned comparison of the run in ``out``."""
    _, info = read_checkpoint(out / "model.pt")
    network = MultilayerNetwork.load(out / f"{name}.npz")
    report = json.loads((out / "pruned" / "report.json").read_text())
    rows = {row["key"]: row for row in report["comparison"]}
    split = info.get("split", {})

    def compared(key: str) -> dict[str, Any]:
        row = rows[key]
        return {"original": row["original"], "pruned": row["pruned"], "change_pct": row["change_pct"]}

    return {
        "cnngraph_version": __version__,
        "dataset": network.options.get("dataset"),
        "images": int(split.get("train_images", 0)) + int(split.get("test_images", 0)),
        "test_images": split.get("test_images"),
        "input_shape": network.model.get("input_shape"),
        "model": (info.get("spec") or {}).get("source"),
        "convolutions": len(network.layers),
        "nodes": int(network.topology.num_nodes),
        "arcs_per_class": int(network.topology.num_arcs),
        "classes": network.num_classes,
        "images_per_class": network.options.get("images_per_class"),
        "rule": report["options"]["layer_rule"],
        "gamma": report["options"]["gamma"],
        "finetune_epochs": report["options"]["epochs"],
        "removed": [r["name"] for r in report["removed"]],
        "units_removed": len(report["units_removed"]),
        "accuracy": compared("accuracy"),
        "parameters": compared("parameters"),
        "macs": compared("macs"),
        "seconds": seconds,
    }


def main(argv: list[str]) -> None:
    if len(argv) not in (2, 3):
        raise SystemExit("usage: python scripts/demo_figures.py OUT NAME [SECONDS]")
    out, name = Path(argv[0]), argv[1]
    figures = gather(out, name, float(argv[2]) if len(argv) == 3 else None)
    path = out / "figures.json"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(figures, indent=2) + "\n")
    tmp.replace(path)
    acc, macs, params = figures["accuracy"], figures["macs"], figures["parameters"]
    print(
        f"figures in {path}: removed {', '.join(figures['removed']) or 'nothing'}; accuracy "
        f"{100 * acc['original']:.2f}% -> {100 * acc['pruned']:.2f}%, MACs {macs['change_pct']:+.1f}%, "
        f"parameters {params['change_pct']:+.1f}%"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
