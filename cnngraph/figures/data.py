"""What the figures draw, read from Neo4j or from a mapping file (and a scores file), as plain data.

:class:`FigureData` holds a model's layers, its layer DAG (``FEEDS`` pairs with their ``via``),
its node scores, its units (what the pruner removes as a whole) and, on demand, the per-class
degrees. :func:`from_neo4j` reads a loaded model (and checks after reading that it is still the
same complete model); :func:`from_mapping` reads a ``cnngraph map`` file, with the scores of
``cnngraph score --out`` (CSV) or computed from the mapping itself. :func:`read_selection` reads
the JSON that ``cnngraph prune --dry-run --json`` prints; :func:`select` computes one with the
pruner's own rule.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnngraph.errors import ConfigError
from cnngraph.models import spec_on_graph
from cnngraph.pruner.select import UnitRow, UnitSelection, gamma_for_count, select_units
from cnngraph.pruner.units import CHAIN, UNIT_KINDS, Unit, chain_units
from cnngraph.scores import NodeScores

SCORE_COLUMNS = ("layer", "i", "j", "delta", "entropy", "mean", "participation")


@dataclass(frozen=True)
class LayerBox:
    """One convolution: its index (execution order), module name and output grid."""

    index: int
    name: str
    height: int
    width: int


@dataclass
class FigureData:
    """A model's layers, DAG, scores and units; per-class degrees computed when first asked for."""

    model: str
    layers: list[LayerBox]
    feeds: list[tuple[int, int, str]]  # (src, dst, via), one per FEEDS pair
    scores: NodeScores
    class_names: list[str]
    units: list[Unit]
    units_note: str = ""  # why the units are every convolution a chain unit, when they are a guess
    degree_source: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] | None = None
    _degrees: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def degrees(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(layer, i, j, total)``: every node's position and its total degree per class [t, N]."""
        if self._degrees is None:
            if self.degree_source is None:
                raise ConfigError("no per-class degrees for this model")
            self._degrees = self.degree_source()
        return self._degrees

    def layer(self, k: int) -> LayerBox:
        if not 0 <= k < len(self.layers):
            raise ConfigError(
                f"--layer {k} is not a layer of model '{self.model}'; give 0..{len(self.layers) - 1}"
            )
        return self.layers[k]


# ------------------------------------------------------------------------------------ from Neo4j
def from_neo4j(
    driver: Any, model: str, database: str | None = None, descriptor: str | None = None
) -> FigureData:
    """The model's layers, DAG and scores from Neo4j (scores computed in memory when none are
    stored; nothing is written), read under the read guard (``cnngraph.loader.guard``): a model
    dropped, replaced, reloaded or rescored while it is read is refused in one line. The per-class
    degrees, read when first asked for, must come from that same model too."""
    from cnngraph.loader.guard import unchanged_model, verify
    from cnngraph.queries.scoring import compute_degrees, fetch_scores, layer_dag, preview_scores

    with unchanged_model(driver, model, database) as snap:
        stored = snap.props.get("scored_descriptor")
        snap.scores = stored is not None
        grids, feeds = layer_dag(driver, model, database)
        layers = [LayerBox(*grid) for grid in grids]
        if stored is not None and descriptor in (None, stored):
            scores = fetch_scores(driver, model, database)
        else:
            scores = preview_scores(driver, model, descriptor, database)
    props = snap.props
    spec = spec_on_graph(props)
    units, note = units_for(spec, [layer.name for layer in layers])
    chosen = scores.descriptor

    def degrees() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        table = compute_degrees(driver, model, chosen, database)
        verify(driver, snap, database)  # the degrees are of the model the scores came from
        return table.layer, table.i, table.j, table.total

    return FigureData(
        model=model,
        layers=layers,
        feeds=feeds,
        scores=scores,
        class_names=[str(c) for c in props.get("class_names") or []],
        units=units,
        units_note=note,
        degree_source=degrees,
    )


def units_for(spec: dict[str, Any] | None, names: Sequence[str]) -> tuple[list[Unit], str]:
    """The model's units, found by tracing it built from its recorded spec (no weights needed);
    every convolution a chain unit, with a note saying so, when it cannot be built or traced."""
    from cnngraph.errors import CnnGraphError

    if spec is None:
        return chain_units(names), "no model spec recorded: every convolution drawn as a chain unit"
    try:
        from cnngraph.models import ModelSpec, build_model
        from cnngraph.pruner.units import find_units

        units = find_units(build_model(ModelSpec.from_dict(spec)))
    except (CnnGraphError, ValueError, TypeError, KeyError, RuntimeError, OSError, ImportError) as e:
        return chain_units(
            names
        ), f"units unknown ({str(e).splitlines()[0][:120]}): every convolution a chain unit"
    if sorted(k for u in units for k in u.convs) != list(range(len(names))):
        return chain_units(names), "the recorded model's convolutions differ from the graph's: chain units"
    return units, ""


# --------------------------------------------------------------------------------- from a mapping
def from_mapping(path: Path, scores_path: Path | None = None, descriptor: str | None = None) -> FigureData:
    """A mapping file's layers and DAG; scores from ``scores_path`` (``score --out`` CSV, or JSON)
    or computed from the mapping (the same numbers Cypher gives)."""
    from cnngraph.cli.common import load_mapping
    from cnngraph.mapping import reference

    network = load_mapping(path)
    topo = network.topology
    layers = [LayerBox(layer.index, layer.name, layer.height, layer.width) for layer in topo.layers]
    feeds = [
        (int(s), int(d), str(v)) for s, d, v in zip(topo.edge_src, topo.edge_dst, topo.edge_via, strict=True)
    ]
    layer, i, j = topo.node_positions()
    names = tuple(layer_.name for layer_ in layers)
    chosen = descriptor or str(network.options.get("descriptor", "mean"))
    if chosen not in network.node_values:
        raise ConfigError(
            f"the mapping has no '{chosen}' values; use one of {', '.join(network.node_values)}"
        )
    if scores_path is not None:
        scores = read_scores(scores_path, layer, i, j, names, path.stem)
    else:
        total = reference.degrees(network, chosen).total
        values = {a: reference.score(total, a) for a in reference.AGGREGATORS}
        scores = NodeScores(
            layer=layer, i=i, j=j, values=values, layer_names=names, descriptor=chosen, model=path.stem
        )

    def degrees() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return layer, i, j, reference.degrees(network, chosen).total

    spec = network.model.get("spec") if isinstance(network.model.get("spec"), dict) else None
    units, note = units_for(spec, list(names))
    return FigureData(
        model=path.stem,
        layers=layers,
        feeds=feeds,
        scores=scores,
        class_names=list(network.class_names),
        units=units,
        units_note=note,
        degree_source=degrees,
    )


def read_scores(
    path: Path, layer: np.ndarray, i: np.ndarray, j: np.ndarray, names: tuple[str, ...], model: str
) -> NodeScores:
    """Scores from ``cnngraph score --out`` (CSV ``layer,i,j,delta,entropy,mean,participation``) or
    a JSON of the same columns (an object of lists, or a list of row objects), checked against the
    mapping's nodes."""
    if not path.is_file():
        raise ConfigError(f"scores file '{path}' does not exist; write it with 'cnngraph score --out'")
    try:
        columns = _json_columns(path) if path.suffix.lower() == ".json" else _csv_columns(path)
        arrays = {c: np.asarray(columns[c], dtype=np.float64) for c in SCORE_COLUMNS if c in columns}
    except (OSError, ValueError, TypeError, KeyError, UnicodeDecodeError) as e:
        raise ConfigError(f"'{path}' is not a scores file of 'cnngraph score --out' ({e})") from e
    missing = [c for c in ("layer", "i", "j", "entropy") if c not in arrays]
    if missing:
        raise ConfigError(
            f"'{path}' has no column {', '.join(missing)}; give the CSV of 'cnngraph score --out'"
        )
    rows = arrays["layer"].size
    if any(a.size != rows for a in arrays.values()):
        raise ConfigError(f"'{path}' has columns of different lengths")
    if rows != layer.size:
        raise ConfigError(
            f"'{path}' scores {rows:,} nodes but the mapping has {layer.size:,}; use this mapping's scores"
        )
    order = np.lexsort((arrays["j"], arrays["i"], arrays["layer"]))
    got = [arrays[c][order].astype(np.int64) for c in ("layer", "i", "j")]
    want = np.lexsort((j, i, layer))
    if not all(np.array_equal(g, w[want]) for g, w in zip(got, (layer, i, j), strict=True)):
        raise ConfigError(f"the nodes of '{path}' are not those of the mapping; use this mapping's scores")
    values: dict[str, np.ndarray] = {
        a: np.empty(layer.size) for a in ("entropy", "mean", "participation") if a in arrays
    }
    for a in values:
        values[a][want] = arrays[a][order]
        if not np.all(np.isfinite(values[a])):
            raise ConfigError(f"'{path}' has a missing or non-finite '{a}' value")
    return NodeScores(layer=layer, i=i, j=j, values=values, layer_names=names, model=model)


def _csv_columns(path: Path) -> dict[str, list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            raise ValueError("empty file")
        columns: dict[str, list[str]] = {c: [] for c in reader.fieldnames}
        for row in reader:
            for c in columns:
                columns[c].append(row[c])
    return columns


def _json_columns(path: Path) -> dict[str, list[Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict) and isinstance(data.get("nodes"), list):
        data = data["nodes"]
    if isinstance(data, list):
        return {c: [row[c] for row in data] for c in SCORE_COLUMNS if data and c in data[0]}
    if isinstance(data, dict):
        return {c: list(v) for c, v in data.items() if isinstance(v, list)}
    raise ValueError("expected an object of columns or a list of rows")


# ------------------------------------------------------------------------------------ selections
def read_selection(path: Path, data: FigureData) -> UnitSelection:
    """The selection ``cnngraph prune --dry-run --json`` printed, checked against the model's layers."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        rows = tuple(_row(r) for r in raw["units"])
        threshold = raw.get("threshold")
        selection = UnitSelection(
            rows=rows,
            method=str(raw.get("method", "entropy")),
            threshold=None if threshold is None else float(threshold),
            options=dict(raw.get("options") or {}),
        )
    except FileNotFoundError:
        raise ConfigError(
            f"selection file '{path}' does not exist; write it with 'cnngraph prune --dry-run --json'"
        ) from None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise ConfigError(
            f"'{path}' is not the JSON of 'cnngraph prune --dry-run --json' ({type(e).__name__}: {e})"
        ) from e
    convs = sorted(k for r in rows for k in r.convs)
    if convs != list(range(len(data.layers))):
        raise ConfigError(
            f"the selection in '{path}' covers {len(convs)} convolutions but model '{data.model}' has "
            f"{len(data.layers)}; use a selection of this model"
        )
    return selection


def _row(r: dict[str, Any]) -> UnitRow:
    kind = str(r["kind"])
    if kind not in UNIT_KINDS:
        raise ValueError(f"unknown unit kind '{kind}'")

    def number(key: str) -> float:
        value = r.get(key)
        return math.nan if value is None else float(value)

    return UnitRow(
        unit=int(r["unit"]),
        kind=kind,
        name=str(r["name"]),
        convs=tuple(int(k) for k in r["convolutions"]),
        conv_names=tuple(str(n) for n in r["convolution_names"]),
        nodes=int(r.get("nodes") or 0),
        selected=int(r.get("selected") or 0),
        mean=number("mean_delta"),
        min=number("min_delta"),
        max=number("max_delta"),
        kept=bool(r["kept"]),
        reason=str(r.get("reason") or ""),
    )


def select(
    data: FigureData,
    gamma: float = 1.0,
    *,
    remove: int | None = None,
    threshold_stat: str = "mean",
    layer_rule: str = "any",
    aggregator: str = "entropy",
) -> UnitSelection:
    """The pruner's selection (``select_units``; with ``remove``, gamma from ``gamma_for_count``)."""
    if remove is not None:
        gamma = gamma_for_count(
            data.scores,
            data.units,
            remove,
            aggregator=aggregator,
            threshold_stat=threshold_stat,
            layer_rule=layer_rule,
        )
    return select_units(
        data.scores,
        data.units,
        gamma,
        aggregator=aggregator,
        threshold_stat=threshold_stat,
        layer_rule=layer_rule,
    )


__all__ = [
    "CHAIN",
    "FigureData",
    "LayerBox",
    "from_mapping",
    "from_neo4j",
    "read_scores",
    "read_selection",
    "select",
    "units_for",
]
