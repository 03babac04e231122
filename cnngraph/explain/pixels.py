"""From the first convolution's node scores to a heatmap over the input pixels (docs/METHOD.md 10).

A node ``(i, j)`` of the first convolution ``c_1`` scores every input pixel its window reads
(section 3 taps, with stride, padding and dilation; a tap in zero padding reads nothing; under
reflect, replicate or circular padding a tap reads the pixel that padding copies), and a
pixel's score is the sum over the nodes that read it. What sits between the input and ``c_1``
(a pooling, a norm) is followed with the mapping's own geometry; what cannot be followed is
refused. The map then keeps the pixels at or above its ``q`` quantile (those strictly below
become 0), is optionally blurred with a Gaussian of ``sigma`` pixels (``scipy.ndimage``, mode
'reflect', truncated at 4 sigma) and is divided by its maximum when that is positive (a map
whose maximum is 0 or below becomes all zeros).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import fx, nn

from cnngraph.errors import ModelError
from cnngraph.mapping import geometry as geo
from cnngraph.mapping.feeds import Feed, PathGeometry, conv_axes
from cnngraph.mapping.network import LayerInfo
from cnngraph.mapping.topology import pair_arcs
from cnngraph.mapping.trace import TracedModel, trace_model


@dataclass(frozen=True)
class InputReads:
    """Which input pixels (``i * width + j``) each node of ``c_1`` (its local id) reads."""

    pixel: np.ndarray  # int64 [R]
    node: np.ndarray  # int64 [R]
    height: int
    width: int


def input_reads(model: nn.Module, traced: TracedModel) -> InputReads:
    """The reads of ``traced``'s first convolution on the input image."""
    c, h, w = traced.input_shape
    first = traced.convs[0]
    node = next(
        n for n in traced.graph_module.graph.nodes if n.op == "call_module" and n.target == first.name
    )
    source = node.args[0] if node.args else node.kwargs.get("input")
    if isinstance(source, fx.Node) and source.op == "placeholder":
        rows_conv, cols_conv = conv_axes(first.module)
        _, h1, w1 = first.out_shape
        path = PathGeometry(
            geo.through_taps(geo.identity(h), rows_conv, h1),
            geo.through_taps(geo.identity(w), cols_conv, w1),
            frozenset(),
        )
        feed = Feed(0, 1, "direct", (path,))
    else:
        feed = _probed_feed(model, traced)
    image = LayerInfo(index=-1, name="input", filters=c, height=h, width=w, kernel=(1, 1), stride=(1, 1))
    pixel, target, _ = pair_arcs(image, traced.layers[0], feed)
    return InputReads(pixel=pixel.astype(np.int64), node=target.astype(np.int64), height=h, width=w)


class _Probe(nn.Module):
    """The model behind a 1x1 identity convolution, so the mapping's feeds find the input's paths."""

    def __init__(self, model: nn.Module, channels: int) -> None:
        super().__init__()
        self.probe = nn.Conv2d(channels, channels, 1, bias=False)
        self.model = model

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.model(self.probe(x))


def _probed_feed(model: nn.Module, traced: TracedModel) -> Feed:
    first = traced.convs[0].name
    try:
        probe = _Probe(model, traced.input_shape[0]).train(model.training)  # tracing restores this mode
        probed = trace_model(probe, traced.input_shape)
    except ModelError as e:
        raise ModelError(
            f"cannot follow the input to the first convolution '{first}' ({e}); explain needs the input "
            "to reach it through pooling, norms or element-wise operations only"
        ) from None
    for feed in probed.feeds:
        if feed.src == 0 and feed.dst == 1:
            return feed
    raise ModelError(f"the input does not reach the first convolution '{first}'; cannot map its pixels")


def pixel_scores(reads: InputReads, first_layer_scores: np.ndarray) -> np.ndarray:
    """``[H, W]``: each pixel's sum of the scores of the first-layer nodes that read it."""
    scores = np.asarray(first_layer_scores, dtype=np.float64)
    flat = np.bincount(reads.pixel, weights=scores[reads.node], minlength=reads.height * reads.width)
    return flat.reshape(reads.height, reads.width)


def finish_heatmap(pixels: np.ndarray, quantile: float = 0.0, sigma: float = 0.0) -> np.ndarray:
    """Quantile cut, optional Gaussian blur, division by the maximum: float64 ``[H, W]``."""
    out = np.asarray(pixels, dtype=np.float64).copy()
    if quantile > 0:
        out[out < np.quantile(out, quantile)] = 0.0
    if sigma > 0:
        from scipy.ndimage import gaussian_filter

        out = gaussian_filter(out, sigma=sigma, mode="reflect", truncate=4.0)
    peak = out.max() if out.size else 0.0
    if peak > 0:
        return out / peak
    return np.zeros_like(out)
