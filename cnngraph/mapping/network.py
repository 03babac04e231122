"""The multilayer network as arrays, and its one-file storage.

Nodes are numbered globally: layer ``k`` holds ids ``node_offsets[k] .. node_offsets[k+1]-1``
and position ``(i, j)`` of layer ``k`` is ``node_offsets[k] + i * width_k + j``. The layers form
a DAG (docs/METHOD.md section 8): *edge* ``e`` says layer ``edge_src[e]`` feeds layer ``edge_dst[e]``
(``edge_via[e]`` says through what) and owns the arcs ``arc_offsets[e] : arc_offsets[e+1]`` of
the two id arrays ``arc_src``/``arc_dst``; edges are sorted by ``(src, dst)``, so a VGG-style
chain has edge ``k`` from layer ``k`` to ``k+1``. Every class network shares nodes and arcs; only
the weights differ. The weight of an arc ``u -> v`` of edge ``e`` in class ``h`` is the node value
of ``pi_e(u)``, the node of the fed layer whose window is centred nearest ``u``; ``pi_e`` of the
source layer's nodes is stored as ``pair_weight_node[weight_offsets[e] : weight_offsets[e+1]]``
(global ids), so the weights derive from ``node_values`` and are never stored twice, and a node
that feeds several layers has one weight per fed layer.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnngraph.errors import MappingFileError
from cnngraph.files import atomic_path

FORMAT_VERSION = 2
DESCRIPTORS = ("mean", "median", "max", "sum")
"""The node values over the filters a mapping stores (docs/METHOD.md sections 2 and 9), in this order."""


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
    groups: int = 1
    padding_mode: str = "zeros"

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
            "groups": self.groups,
            "padding_mode": self.padding_mode,
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
            groups=int(d.get("groups", 1)),
            padding_mode=str(d.get("padding_mode", "zeros")),
        )


def _pair(v: Any) -> tuple[int, int]:
    a, b = v
    return int(a), int(b)


@dataclass(frozen=True)
class Topology:
    """Nodes, arcs and the layer DAG shared by all class networks (no weights); see the module doc."""

    layers: tuple[LayerInfo, ...]
    node_offsets: np.ndarray  # int64 [M+1]
    arc_src: np.ndarray  # int64 [E]
    arc_dst: np.ndarray  # int64 [E]
    arc_offsets: np.ndarray  # int64 [P+1]: the arcs of edge e are arc_offsets[e]:arc_offsets[e+1]
    edge_src: np.ndarray  # int64 [P]: the feeding layer of edge e
    edge_dst: np.ndarray  # int64 [P]: the fed layer of edge e
    edge_via: tuple[str, ...]  # [P]: what the paths of edge e pass through ('direct', 'add', ...)
    weight_offsets: np.ndarray  # int64 [P+1]: pi of edge e is pair_weight_node[weight_offsets[e]:...]
    pair_weight_node: np.ndarray  # int64 [sum of the source layers' sizes]: global ids of the fed layer

    @property
    def num_nodes(self) -> int:
        return int(self.node_offsets[-1])

    @property
    def num_arcs(self) -> int:
        return int(self.arc_src.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_src.shape[0])

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

    def arc_slice(self, e: int) -> slice:
        """The arcs of edge ``e`` (for a chain, from layer ``e`` to layer ``e+1``)."""
        return slice(int(self.arc_offsets[e]), int(self.arc_offsets[e + 1]))

    def arc_edges(self, arcs: slice | None = None) -> np.ndarray:
        """The edge of every arc (or of a slice of arcs), int64."""
        start, stop, _ = (arcs or slice(None)).indices(self.num_arcs)
        ids = np.arange(start, stop, dtype=np.int64)
        return np.searchsorted(self.arc_offsets, ids, side="right").astype(np.int64) - 1

    def arc_weight_nodes(self, arcs: slice | None = None) -> np.ndarray:
        """``pi_e(u)`` of every arc ``u -> v`` (or of a slice): the node whose values weigh it, int64."""
        arcs = arcs or slice(None)
        edges = self.arc_edges(arcs)
        src = self.arc_src[arcs]
        local = src - self.node_offsets[self.edge_src[edges]]
        return self.pair_weight_node[self.weight_offsets[edges] + local]

    @property
    def weight_node(self) -> np.ndarray:
        """Per node, ``pi`` of its one outgoing edge (-1 without one), int64 [N].

        Only defined when no node feeds two layers (VGG-style chains); a DAG needs
        :meth:`arc_weight_nodes`.
        """
        if np.unique(self.edge_src).shape[0] != self.num_edges:
            raise ValueError("a layer feeds several layers: use Topology.arc_weight_nodes()")
        out = np.full(self.num_nodes, -1, dtype=np.int64)
        for e in range(self.num_edges):
            a = int(self.edge_src[e])
            out[self.node_offsets[a] : self.node_offsets[a + 1]] = self.pair_weight_node[
                self.weight_offsets[e] : self.weight_offsets[e + 1]
            ]
        return out

    def edges(self) -> list[dict[str, Any]]:
        """One entry per edge: ``src``, ``dst`` (layer indices), ``via`` and its ``arcs``."""
        counts = np.diff(self.arc_offsets)
        return [
            {"src": int(a), "dst": int(b), "via": via, "arcs": int(n)}
            for a, b, via, n in zip(self.edge_src, self.edge_dst, self.edge_via, counts, strict=True)
        ]


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
        return self.values(descriptor)[:, self.topology.arc_weight_nodes(arcs)]

    @property
    def descriptors(self) -> list[str]:
        """The descriptors this network has node values for, in :data:`DESCRIPTORS` order."""
        return [d for d in DESCRIPTORS if d in self.node_values]

    def with_descriptors(self, names: list[str] | tuple[str, ...]) -> MultilayerNetwork:
        """The same network holding only the node values of ``names`` (a smaller graph to load; only
        those can then be scored). The mapping's default descriptor must be among them."""
        chosen = [d for d in DESCRIPTORS if d in names]
        unknown = [d for d in names if d not in DESCRIPTORS]
        if unknown or not chosen:
            raise MappingFileError(
                f"unknown descriptor '{(unknown or ['(none)'])[0]}'; use some of {', '.join(DESCRIPTORS)}"
            )
        for d in chosen:
            self.values(d)  # refuses one this mapping lacks
        default = str(self.options.get("descriptor", "mean"))
        if default not in chosen:
            raise MappingFileError(
                f"the mapping's default descriptor '{default}' must be among the stored ones "
                f"({', '.join(chosen)})"
            )
        return MultilayerNetwork(
            topology=self.topology,
            class_names=self.class_names,
            node_values={d: self.node_values[d] for d in chosen},
            images_per_class=self.images_per_class,
            model=self.model,
            options=self.options,
        )

    def values(self, descriptor: str) -> np.ndarray:
        """Node values ``[t, N]`` of one descriptor; a one-line error for one it lacks."""
        if descriptor not in DESCRIPTORS:
            raise MappingFileError(f"unknown descriptor '{descriptor}'; use one of {', '.join(DESCRIPTORS)}")
        if descriptor not in self.node_values:
            raise MappingFileError(
                f"this mapping has no '{descriptor}' node values (it was made by an older cnngraph); "
                f"use {' or '.join(self.descriptors)}, or map the model again"
            )
        return self.node_values[descriptor]

    # ----------------------------------------------------------------- storage
    def save(self, path: str | Path) -> Path:
        """Write everything to one ``.npz`` file (atomically: a temp file, then a rename)."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
        t = self.topology
        meta = {
            "format_version": FORMAT_VERSION,
            "layers": [layer.to_dict() for layer in self.layers],
            "edge_via": list(t.edge_via),
            "class_names": list(self.class_names),
            "model": self.model,
            "options": self.options,
        }
        arrays: dict[str, np.ndarray] = {
            "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
            "images_per_class": np.asarray(self.images_per_class, dtype=np.int64),
        }
        for name in TOPOLOGY_ARRAYS:
            arrays[name] = np.asarray(getattr(t, name), dtype=np.int64)
        for name, values in self.node_values.items():
            arrays[f"values_{name}"] = values
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
        return path

    @classmethod
    def load(cls, path: str | Path) -> MultilayerNetwork:
        """Read a file written by :meth:`save`, checking every array; a clear error for anything else."""
        path = Path(path)
        if not path.is_file():
            raise MappingFileError(f"mapping file '{path}' does not exist; create it with 'cnngraph map'")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(bytes(data["meta"]).decode())
                arrays = {k: data[k] for k in data.files if k != "meta"}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as e:
            raise MappingFileError(
                f"'{path}' is not a cnngraph mapping file; create one with 'cnngraph map'"
            ) from e
        version = meta.get("format_version") if isinstance(meta, dict) else None
        if version != FORMAT_VERSION:
            raise MappingFileError(
                f"'{path}' has mapping format {version}, this cnngraph reads format {FORMAT_VERSION}; "
                "re-map with this version ('cnngraph map')"
            )
        return _validated(path, meta, arrays)


TOPOLOGY_ARRAYS = (
    "node_offsets", "arc_src", "arc_dst", "arc_offsets", "edge_src", "edge_dst", "weight_offsets",
    "pair_weight_node",
)  # fmt: skip


class _Invalid(Exception):
    """One problem found in a mapping file (turned into a MappingFileError naming the file)."""


def _validated(path: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> MultilayerNetwork:
    try:
        topology = _topology(meta, arrays)
        names, model, options = meta.get("class_names"), meta.get("model", {}), meta.get("options", {})
        if not isinstance(names, list) or not names or not all(isinstance(c, str) for c in names):
            raise _Invalid("'class_names' is not a non-empty list of names")
        if not isinstance(model, dict) or not isinstance(options, dict):
            raise _Invalid("'model' and 'options' must be objects")
        t = len(names)
        images = _ints(arrays, "images_per_class", t)
        if (images < 0).any():
            raise _Invalid("'images_per_class' has a negative count")
        values = {k[len("values_") :]: v for k, v in arrays.items() if k.startswith("values_")}
        if not values:
            raise _Invalid("it holds no node values")
        unknown = sorted(set(values) - set(DESCRIPTORS))
        if unknown:
            raise _Invalid(f"'values_{unknown[0]}' is not a descriptor ({', '.join(DESCRIPTORS)})")
        for name, v in values.items():
            if v.dtype.kind != "f" or v.shape != (t, topology.num_nodes):
                expected = f"floats [{t}, {topology.num_nodes}]"
                raise _Invalid(f"'values_{name}' is {v.dtype}{list(v.shape)}, expected {expected}")
            if not np.isfinite(v).all():
                raise _Invalid(f"'values_{name}' holds NaN or infinite values")
    except _Invalid as e:
        raise MappingFileError(f"'{path}' is damaged: {e}; map the model again") from None
    return MultilayerNetwork(
        topology=topology,
        class_names=list(names),
        node_values={d: values[d] for d in DESCRIPTORS if d in values},
        images_per_class=images,
        model=dict(model),
        options=dict(options),
    )


def _ints(arrays: dict[str, np.ndarray], name: str, length: int | None = None) -> np.ndarray:
    if name not in arrays:
        raise _Invalid(f"the array '{name}' is missing")
    a = arrays[name]
    if a.dtype.kind not in "iu" or a.ndim != 1:
        raise _Invalid(f"'{name}' is {a.dtype}{list(a.shape)}, expected a 1-d integer array")
    if length is not None and a.shape[0] != length:
        raise _Invalid(f"'{name}' has {a.shape[0]} entries, expected {length}")
    return a.astype(np.int64)


def _topology(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Topology:
    """The topology of a loaded file, after checking every shape and range against the layers."""
    try:
        layers = tuple(LayerInfo.from_dict(d) for d in meta["layers"])
    except (KeyError, TypeError, ValueError) as e:
        raise _Invalid(f"its layer list is malformed ({type(e).__name__}: {e})") from None
    via = meta.get("edge_via")
    if not layers or any(lay.height < 1 or lay.width < 1 for lay in layers):
        raise _Invalid("its layer list is empty or has a layer without positions")
    sizes = np.array([lay.nodes for lay in layers], dtype=np.int64)
    node_offsets = _ints(arrays, "node_offsets", len(layers) + 1)
    if node_offsets[0] != 0 or not np.array_equal(np.diff(node_offsets), sizes):
        raise _Invalid("'node_offsets' do not match the layer sizes")
    if not isinstance(via, list) or not all(isinstance(v, str) for v in via):
        raise _Invalid("'edge_via' is not a list of names")
    p = len(via)
    edge_src, edge_dst = _ints(arrays, "edge_src", p), _ints(arrays, "edge_dst", p)
    if ((edge_src < 0) | (edge_dst >= len(layers)) | (edge_src >= edge_dst)).any():
        raise _Invalid("an edge names a layer out of range or does not run forward")
    arc_offsets = _ints(arrays, "arc_offsets", p + 1)
    arc_src, arc_dst = _ints(arrays, "arc_src"), _ints(arrays, "arc_dst", arrays["arc_src"].shape[0])
    if arc_offsets[0] != 0 or (np.diff(arc_offsets) < 0).any() or arc_offsets[-1] != arc_src.shape[0]:
        raise _Invalid(f"'arc_offsets' do not cover the {arc_src.shape[0]} arcs")
    for edge in range(p):  # per edge, so no temporary the size of all arcs
        arcs = slice(int(arc_offsets[edge]), int(arc_offsets[edge + 1]))
        for ids, layer, name in ((arc_src, edge_src, "arc_src"), (arc_dst, edge_dst, "arc_dst")):
            part = ids[arcs]
            if part.size and (
                part.min() < node_offsets[layer[edge]] or part.max() >= node_offsets[layer[edge] + 1]
            ):
                raise _Invalid(f"'{name}' has a node outside the layer of its edge {edge}")
    weight_offsets = _ints(arrays, "weight_offsets", p + 1)
    if weight_offsets[0] != 0 or not np.array_equal(np.diff(weight_offsets), sizes[edge_src]):
        raise _Invalid("'weight_offsets' do not match the feeding layers' sizes")
    pair_weight_node = _ints(arrays, "pair_weight_node", int(weight_offsets[-1]))
    owner = np.repeat(edge_dst, sizes[edge_src])
    if ((pair_weight_node < node_offsets[owner]) | (pair_weight_node >= node_offsets[owner + 1])).any():
        raise _Invalid("'pair_weight_node' has a node outside the fed layer")
    return Topology(
        layers=layers,
        node_offsets=node_offsets,
        arc_src=arc_src,
        arc_dst=arc_dst,
        arc_offsets=arc_offsets,
        edge_src=edge_src,
        edge_dst=edge_dst,
        edge_via=tuple(via),
        weight_offsets=weight_offsets,
        pair_weight_node=pair_weight_node,
    )
