"""``map_model``: a trained CNN and a labelled dataset in, the multilayer network out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from cnngraph import __version__
from cnngraph.datasets import ImageDataset, resolve_classes, restrict_classes, select_per_class
from cnngraph.errors import ConfigError, DataError
from cnngraph.mapping.network import DESCRIPTORS, MultilayerNetwork
from cnngraph.mapping.responses import RESPONSES, ProgressFn, class_responses, per_channel_scale, pick_device
from cnngraph.mapping.topology import assemble_topology
from cnngraph.mapping.trace import TracedModel, trace_model
from cnngraph.models import ModelSpec, count_parameters


def map_model(
    model: nn.Module,
    dataset: ImageDataset,
    *,
    images_per_class: int | None = 64,
    seed: int | None = None,
    response: str = "activation",
    descriptor: str = "mean",
    batch_size: int = 128,
    device: str | torch.device | None = None,
    normalize: tuple[Sequence[float] | None, Sequence[float] | None] | None = None,
    spec: ModelSpec | None = None,
    progress: ProgressFn | None = None,
    classes: Sequence[str | int] | None = None,
    max_classes: int | None = None,
) -> MultilayerNetwork:
    """Map ``model`` with the images of ``dataset`` into its multilayer network (docs/METHOD.md 1-3, 8).

    ``images_per_class=None`` uses every image; ``seed`` picks a seeded shuffle instead of the
    first images in file order; ``normalize=(mean, std)`` is applied per channel first.
    ``classes`` (names or indices, in the order wanted) or ``max_classes`` (the first N) map only
    those class networks, so a 1000-class model stays a graph of a size one can load; the subset
    is recorded as ``options['classes']`` (names) and ``options['class_indices']`` (the dataset's).
    Every option is recorded in ``network.options``, the model in ``network.model``.
    """
    _check_options(images_per_class, response, descriptor, batch_size)
    if len(dataset) == 0:
        raise DataError(f"dataset '{dataset.source}' holds no images")
    dataset_classes = len(dataset.class_names)
    subset = resolve_classes(dataset.class_names, classes, max_classes)
    if subset is not None:
        dataset = restrict_classes(dataset, subset)
    mean, std = normalize if normalize is not None else (None, None)
    data = dataset  # normalised batch by batch: no copy of the images
    scale = per_channel_scale(data.input_shape[0], mean, std)
    _check_classes(data)
    indices, used = select_per_class(data.labels, len(data.class_names), images_per_class, seed)
    traced = trace_model(model, data.input_shape)
    topology = assemble_topology(traced.layers, traced.feeds)
    dev = pick_device(device)
    values = class_responses(
        model, traced, data.images, indices,
        response=response, batch_size=batch_size, device=dev, progress=progress, normalize=scale,
    )  # fmt: skip
    options: dict[str, Any] = {
        "images_per_class": "all" if images_per_class is None else images_per_class,
        "selection": "first" if seed is None else "shuffle",
        "seed": seed,
        "response": response,
        "descriptor": descriptor,
        "normalization": None
        if mean is None and std is None
        else {"mean": _floats(mean), "std": _floats(std)},
        "batch_size": batch_size,
        "device": str(dev),
        "dataset": dataset.source,
        "cnngraph_version": __version__,
    }
    if subset is not None:
        options.update(classes=list(data.class_names), class_indices=subset, dataset_classes=dataset_classes)
    return MultilayerNetwork(
        topology=topology,
        class_names=list(data.class_names),
        node_values=values,
        images_per_class=used,
        model=describe_model(model, traced, spec),
        options=options,
    )


def describe_model(model: nn.Module, traced: TracedModel, spec: ModelSpec | None) -> dict[str, Any]:
    """What a mapping records about its model."""
    return {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "spec": spec.to_dict() if spec is not None else None,
        "input_shape": list(traced.input_shape),
        "parameters": count_parameters(model),
        "layers": [c.name for c in traced.convs],
        "response_modules": [c.response_module for c in traced.convs],
        "feeds": [[f.src, f.dst, f.via] for f in traced.feeds],
    }


def _floats(values: Sequence[float] | None) -> list[float] | None:
    return None if values is None else [float(v) for v in values]


def _check_options(images_per_class: int | None, response: str, descriptor: str, batch_size: int) -> None:
    if images_per_class is not None and images_per_class < 1:
        raise ConfigError(f"images per class must be at least 1 (or all), got {images_per_class}")
    if response not in RESPONSES:
        raise ConfigError(f"unknown response '{response}'; use one of {', '.join(RESPONSES)}")
    if descriptor not in DESCRIPTORS:
        raise ConfigError(f"unknown descriptor '{descriptor}'; use one of {', '.join(DESCRIPTORS)}")
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")


def _check_classes(data: ImageDataset) -> None:
    counts = np.bincount(np.asarray(data.labels), minlength=len(data.class_names))
    empty = [data.class_names[h] for h in np.flatnonzero(counts[: len(data.class_names)] == 0)]
    if empty:
        raise DataError(
            f"class {', '.join(repr(c) for c in empty)} of '{data.source}' has no images; "
            "every class needs at least one"
        )


def used_fewer(network: MultilayerNetwork) -> list[tuple[str, int]]:
    """Classes that had fewer images than asked for, with the count they used."""
    asked = network.options.get("images_per_class")
    if not isinstance(asked, int):
        return []
    counts = np.asarray(network.images_per_class)
    return [(network.class_names[h], int(c)) for h, c in enumerate(counts) if c < asked]
