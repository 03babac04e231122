"""The image network ``G^x`` of one image (docs/METHOD.md section 10).

A model is traced once per input shape (:class:`ImageNetworks`): the same layers, feeds and
arcs as ``cnngraph map`` builds (``trace_model`` + ``assemble_topology``). One forward pass of a
batch then gives every image's logits and its node values: forward hooks on each convolution's
block (``ConvBlock.response_module``, replaying ``post_ops``), attached in ``try`` and removed
in ``finally``, reduce each layer's response over the filters with the descriptor. Arc ``u -> v``
of pair ``e`` weighs the fed layer's value at ``pi_e(u)`` (METHOD sections 3 and 8).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from cnngraph.errors import ModelError
from cnngraph.explain.backtrack import ArcChooser
from cnngraph.explain.pixels import InputReads, input_reads
from cnngraph.mapping.network import Topology
from cnngraph.mapping.responses import filter_descriptor, forward_hooks
from cnngraph.mapping.topology import assemble_topology
from cnngraph.mapping.trace import ConvBlock, TracedModel, trace_model


class ImageNetworks:
    """One model traced for one input shape: its topology, arc weight nodes and input reads."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, int, int]) -> None:
        self.model = model
        self.input_shape = tuple(int(x) for x in input_shape)
        self.traced: TracedModel = trace_model(model, self.input_shape)  # type: ignore[arg-type]
        self.topology: Topology = assemble_topology(self.traced.layers, self.traced.feeds)
        self.weight_nodes = self.topology.arc_weight_nodes()
        self.reads: InputReads = input_reads(model, self.traced)
        self.chooser = ArcChooser(self.topology, self.weight_nodes)

    @property
    def num_nodes(self) -> int:
        return self.topology.num_nodes

    def forward(
        self, images: torch.Tensor, descriptor: str = "max", response: str = "activation"
    ) -> tuple[torch.Tensor, np.ndarray]:
        """``(logits [B, classes], node values [B, N] float32)`` of a batch of model-ready images."""
        if tuple(images.shape[1:]) != self.input_shape:
            raise ModelError(
                f"images of shape {tuple(images.shape[1:])} do not match the traced shape {self.input_shape}"
            )
        parts: list[torch.Tensor | None] = [None] * len(self.traced.convs)
        targets = []
        for k, conv in enumerate(self.traced.convs):
            if response == "activation":
                targets.append((conv.response_module, _recorder(parts, k, conv, conv.post_ops, descriptor)))
            else:
                targets.append((conv.name, _recorder(parts, k, conv, (), descriptor)))
        was_training = self.model.training
        self.model.eval()
        try:
            with forward_hooks(self.model, targets), torch.inference_mode():
                logits = _run(self.model, images)
        finally:
            self.model.train(was_training)
        if any(p is None for p in parts):
            missing = [c.name for c, p in zip(self.traced.convs, parts, strict=True) if p is None]
            raise ModelError(f"the forward pass did not run convolution '{missing[0]}'; cannot explain it")
        values = torch.cat([p for p in parts if p is not None], dim=1)
        return logits.float(), values.numpy().astype(np.float32, copy=False)

    def arc_weights(self, values: np.ndarray) -> np.ndarray:
        """Arc weights ``[E]`` (or ``[B, E]``) from node values ``[N]`` (or ``[B, N]``)."""
        return values[..., self.weight_nodes]


def _recorder(
    parts: list[torch.Tensor | None],
    k: int,
    conv: ConvBlock,
    post_ops: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    descriptor: str,
) -> Callable[..., None]:
    def record(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        y = output
        for op in post_ops:  # replayed ops are not in place: the model's own tensor is untouched
            y = op(y)
        if tuple(y.shape[1:]) != conv.out_shape:
            raise ModelError(
                f"'{conv.name}' produced responses of shape {tuple(y.shape[1:])}, expected {conv.out_shape}"
            )
        parts[k] = filter_descriptor(y.float().cpu(), descriptor).flatten(1)

    return record


def _run(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    try:
        out = model(x)
    except ModelError:
        raise
    except Exception as e:  # user model code: one line, no traceback
        first = str(e).splitlines()[0] if str(e) else ""
        raise ModelError(
            f"the forward pass of {type(model).__name__} failed on a batch of shape {tuple(x.shape)} "
            f"({type(e).__name__}: {first})"
        ) from e
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise ModelError(
            f"{type(model).__name__} returns {type(out).__name__}"
            f"{list(out.shape) if isinstance(out, torch.Tensor) else ''}, not class scores [batch, classes]"
        )
    return out
