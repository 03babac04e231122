"""The multilayer network as arrays, and its one-file storage.

Nodes are numbered globally: layer ``k`` holds ids ``node_offsets[k] .. node_offsets[k+1]-1``
and position ``(i, j)`` of layer ``k`` is ``node_offsets[k] + i * width_k + j``. Arcs are two
id arrays (``arc_src``, ``arc_dst``); the arcs from layer ``k`` to ``k+1`` are the slice
``arc_offsets[k] : arc_offsets[k+1]``. Every class network shares nodes and arcs; only the
weights differ. By METHOD.md section 3 the weight of ``u -> v`` in class ``h`` is the node value
of ``weight_node[u]`` (the node of the next layer whose window is centred on ``u``), so the
weights are derived from ``node_values`` and never stored twice.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnngraph.errors import MappingFileError

FORMAT_VERSION = 1
DESCRIPTORS = ("mean", "median")


@dataclass(frozen=True)
class LayerInfo:
    """One convolutional layer ``c_k`` as the mapping sees it."""

    index: int
    name: str
    filters: int
    height: int
    width: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    in_channels: int = 0

    @property
    def nodes(self) -> int:
        return self.height * self.width

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "filters": self.filters,
            "height": self.height,
            "width": self.width,
            "kernel": list(self.kernel),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "dilation": list(self.dilation),
            "in_channels": self.in_channels,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerInfo:
        return cls(
            index=int(d["index"]),
            name=str(d["name"]),
            filters=int(d["filters"]),
            height=int(d["height"]),
            width=int(d["width"]),
            kernel=_pair(d["kernel"]),
            stride=_pair(d["stride"]),
            padding=_pair(d.get("padding", (0, 0))),
            dilation=_pair(d.get("dilation", (1, 1))),
            in_channels=int(d.get("in_channels", 0)),
        )


def _pair(v: Any) -> tuple[int, int]:
    a, b = v
    return int(a), int(b)


@dataclass(frozen=True)
class Topology:
    """Nodes and arcs shared by all class networks (no weights)."""

    layers: tuple[LayerInfo, ...]
    node_offsets: np.ndarray  # int64 [M+1]
    arc_src: np.ndarray  # int64 [E]
    arc_dst: np.ndarray  # int64 [E]
    arc_offsets: np.ndarray  # int64 [M]  (arcs of pair k: arc_offsets[k]:arc_offsets[k+1])
    weight_node: np.ndarray  # int64 [N]; -1 for nodes of the last layer (no outgoing arcs)

    @property
    def num_nodes(self) -> int:
        return int(self.node_offsets[-1])

    @property
    def num_arcs(self) -> int:
        return int(self.arc_src.shape[0])

    def layer_of_nodes(self) -> np.ndarray:
        """Layer index of every node, int64 [N]."""
        sizes = np.diff(self.node_offsets)
        return np.repeat(np.arange(len(self.layers), dtype=np.int64), sizes)

    def node_positions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(layer, i, j)`` of every node, each int64 [N]."""
        layer = self.layer_of_nodes()
        local = np.arange(self.num_nodes, dtype=np.int64) - self.node_offsets[layer]
        widths = np.array([lay.width for lay in self.layers], dtype=np.int64)[layer]
        return layer, local // widths, local % widths

    def arc_slice(self, k: int) -> slice:
        """The arcs from layer ``k`` to layer ``k+1``."""
        return slice(int(self.arc_offsets[k]), int(self.arc_offsets[k + 1]))


@dataclass
class MultilayerNetwork:
    """The class networks ``G^1 .. G^t`` of one model: shared topology, per-class node values."""

    topology: Topology
    class_names: list[str]
    node_values: dict[str, np.ndarray]  # descriptor -> float32 [t, N]
    images_per_class: np.ndarray  # int64 [t]: how many images each class actually used
    model: dict[str, Any] = field(default_factory=dict)  # description of the model
    options: dict[str, Any] = field(default_factory=dict)  # every mapping option

    @property
    def layers(self) -> tuple[LayerInfo, ...]:
        return self.topology.layers

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def weights(self, descriptor: str = "mean", arcs: slice | None = None) -> np.ndarray:
        """Arc weights ``[t, E]`` (or of a slice of arcs) for one descriptor."""
        values = self.values(descriptor)
        src = self.topology.arc_src if arcs is None else self.topology.arc_src[arcs]
        return values[:, self.topology.weight_node[src]]

    def values(self, descriptor: str) -> np.ndarray:
        if descriptor not in self.node_values:
            raise MappingFileError(f"unknown descriptor '{descriptor}'; use one of {', '.join(DESCRIPTORS)}")
        return self.node_values[descriptor]

    # ----------------------------------------------------------------- storage
    def save(self, path: str | Path) -> Path:
        """Write everything to one ``.npz`` file (atomically: a temp file, then a rename)."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
        meta = {
            "format_version": FORMAT_VERSION,
            "layers": [layer.to_dict() for layer in self.layers],
            "class_names": list(self.class_names),
            "model": self.model,
            "options": self.options,
        }
        t = self.topology
        arrays: dict[str, np.ndarray] = {
            "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
            "node_offsets": t.node_offsets,
            "arc_src": t.arc_src,
            "arc_dst": t.arc_dst,
            "arc_offsets": t.arc_offsets,
            "weight_node": t.weight_node,
            "images_per_class": self.images_per_class,
        }
        for name, values in self.node_values.items():
            arrays[f"values_{name}"] = values
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.partial")
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)  # type: ignore[arg-type]
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | Path) -> MultilayerNetwork:
        """Read a file written by :meth:`save`; a clear error for anything else."""
        path = Path(path)
        if not path.is_file():
            raise MappingFileError(f"mapping file '{path}' does not exist; create it with 'cnngraph map'")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(bytes(data["meta"]).decode())
                arrays = {k: data[k] for k in data.files if k != "meta"}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
            raise MappingFileError(
                f"'{path}' is not a cnngraph mapping file; create one with 'cnngraph map'"
            ) from e
        if meta.get("format_version") != FORMAT_VERSION:
            raise MappingFileError(
                f"'{path}' has mapping format {meta.get('format_version')}, this cnngraph reads "
                f"{FORMAT_VERSION}; map the model again"
            )
        try:
            topology = Topology(
                layers=tuple(LayerInfo.from_dict(d) for d in meta["layers"]),
                node_offsets=arrays["node_offsets"],
                arc_src=arrays["arc_src"],
                arc_dst=arrays["arc_dst"],
                arc_offsets=arrays["arc_offsets"],
                weight_node=arrays["weight_node"],
            )
            values = {k[len("values_") :]: v for k, v in arrays.items() if k.startswith("values_")}
            return cls(
                topology=topology,
                class_names=[str(c) for c in meta["class_names"]],
                node_values=values,
                images_per_class=arrays["images_per_class"],
                model=dict(meta.get("model", {})),
                options=dict(meta.get("options", {})),
            )
        except KeyError as e:
            raise MappingFileError(f"'{path}' lacks the entry {e}; map the model again") from e
