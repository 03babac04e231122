"""What the experiment scripts share: where data lives, balanced subsets, atomic JSON, log lines."""

from __future__ import annotations

import json
import os
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from cnngraph.datasets import ImageDataset, select_per_class
from cnngraph.files import partial_path

ROOT = Path(__file__).resolve().parents[2]
DATASETS = Path(os.environ.get("CNNGRAPH_DATASETS", ROOT.parent / "shared" / "datasets"))
CACHE = Path(os.environ.get("CNNGRAPH_CACHE", Path.home() / ".cache" / "cnngraph"))


def cifar_root() -> Path:
    """The extracted CIFAR-10 folder, extracting the tarball once into the cache."""
    root = CACHE / "cifar10"
    if not (root / "train").is_dir():
        root.mkdir(parents=True, exist_ok=True)
        with tarfile.open(DATASETS / "cifar10-jpeg.tar.gz") as tar:
            tar.extractall(root, filter="data")
    return root


def balanced_subset(data: ImageDataset, size: int | None, seed: int) -> ImageDataset:
    """``size`` images, the same number per class (seeded); everything when ``size`` is None."""
    if size is None or size >= len(data):
        return data
    per_class = size // len(data.class_names)
    chosen, _ = select_per_class(data.labels, len(data.class_names), per_class, seed)
    return data.subset(np.sort(np.concatenate(chosen)))


def map_load_score(
    model: Any, data: ImageDataset, spec: Any, settings: Any, name: str, images_per_class: int, seed: int
) -> tuple[Any, dict[str, Any]]:
    """Map ``model`` on ``data``, load it into Neo4j as ``name`` (replacing it) and score it in
    Cypher: ``(scores, graph)``, the graph's size and the wall seconds of each stage."""
    from cnngraph.loader.connection import connect
    from cnngraph.loader.writer import load_network
    from cnngraph.mapping.api import map_model
    from cnngraph.queries.scoring import compute_scores

    times: dict[str, float] = {}
    start = time.perf_counter()
    network = map_model(model, data, images_per_class=images_per_class, seed=seed, spec=spec)
    times["map_s"] = time.perf_counter() - start
    driver = connect(settings)
    try:
        start = time.perf_counter()
        load_network(driver, network, name, replace=True)
        times["load_s"] = time.perf_counter() - start
        start = time.perf_counter()
        scores = compute_scores(driver, name)
        times["score_s"] = time.perf_counter() - start
    finally:
        driver.close()
    graph = {
        "name": name,
        "nodes": network.topology.num_nodes,
        "arcs": network.topology.num_arcs,
        "class_arcs": network.topology.num_arcs * network.num_classes,
        "images_per_class": images_per_class,
        **times,
    }
    return scores, graph


def outcome(metrics: Any, cost: Any, original_latency_ms: float) -> dict[str, Any]:
    """The fields every pruning run reports: test metrics, cost, and the original's latency measured
    right after the pruned model's (paired)."""
    return {
        "accuracy": metrics.accuracy,
        "precision": metrics.precision,
        "recall": metrics.recall,
        "parameters": cost.parameters,
        "macs": cost.macs,
        "latency_ms": cost.latency_ms,
        "original_latency_ms_same_time": original_latency_ms,
    }


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as JSON at ``path``, atomically (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    try:
        tmp.write_text(json.dumps(obj, indent=1, default=_json_default))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)
