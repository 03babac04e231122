"""Pixels (METHOD.md 10): first-layer windows onto the input, quantile, blur, division by the max."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnngraph.errors import ModelError
from cnngraph.explain.pixels import finish_heatmap, input_reads, pixel_scores
from cnngraph.mapping.trace import trace_model


def brute_reads(conv: nn.Conv2d, height: int, width: int) -> set[tuple[int, int, int, int]]:
    """(node i, node j, pixel y, pixel x) by the tap formula ``p*s - pad + d*m``, zero padding."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    out_h = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    reads = set()
    for i in range(out_h):
        for j in range(out_w):
            for a in range(kh):
                for b in range(kw):
                    y, x = i * sh - ph + dh * a, j * sw - pw + dw * b
                    if 0 <= y < height and 0 <= x < width:
                        reads.add((i, j, y, x))
    return reads


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(1, 2, 3, padding=1),
        nn.Conv2d(1, 2, 3, stride=2, padding=1),
        nn.Conv2d(1, 2, 3, dilation=2, padding=1),
        nn.Conv2d(1, 2, (3, 2), stride=(1, 3), padding=(0, 1)),
        nn.Conv2d(1, 2, 5, stride=2),
    ],
)
def test_first_layer_reads_follow_the_taps(conv: nn.Conv2d) -> None:
    model = nn.Sequential(conv, nn.ReLU()).eval()
    traced = trace_model(model, (1, 9, 10))
    reads = input_reads(model, traced)
    width = traced.layers[0].width
    pairs = zip(reads.node.tolist(), reads.pixel.tolist(), strict=True)
    got = {(n // width, n % width, p // 10, p % 10) for n, p in pairs}
    assert got == brute_reads(conv, 9, 10)


def autograd_reads(model: nn.Module, shape: tuple[int, int, int]) -> set[tuple[int, int]]:
    """(node id, pixel id): pixel read iff the node's output has a gradient there (avg pools, weights 1)."""
    x = torch.ones(1, *shape, requires_grad=True)
    out = model(x)[0, 0]
    reads = set()
    for n in range(out.numel()):
        (g,) = torch.autograd.grad(out.flatten()[n], x, retain_graph=True)
        reads |= {(n, int(p)) for p in torch.nonzero(g[0].sum(0).flatten()).flatten()}
    return reads


def test_a_pooling_before_the_first_convolution_is_followed() -> None:
    conv = nn.Conv2d(2, 1, 3, padding=1, bias=False)
    nn.init.ones_(conv.weight)
    model = nn.Sequential(nn.BatchNorm2d(2), nn.AvgPool2d(3, stride=2, padding=1), conv).eval()
    traced = trace_model(model, (2, 9, 9))
    reads = input_reads(model, traced)
    got = set(zip(reads.node.tolist(), reads.pixel.tolist(), strict=True))
    assert got == autograd_reads(model, (2, 9, 9))


def test_an_interpolation_before_the_first_convolution_is_refused() -> None:
    model = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(1, 1, 3)).eval()
    with pytest.raises(ModelError, match="first convolution"):
        input_reads(model, trace_model(model, (1, 6, 6)))


def test_pixel_scores_sum_the_nodes_that_read_each_pixel() -> None:
    model = nn.Sequential(nn.Conv2d(1, 1, 3, stride=2, padding=1)).eval()
    traced = trace_model(model, (1, 5, 5))
    reads = input_reads(model, traced)
    scores = np.arange(1, 10, dtype=np.float64)  # the 3x3 nodes
    got = pixel_scores(reads, scores)
    expected = np.zeros((5, 5))
    for i, j, y, x in brute_reads(model[0], 5, 5):
        expected[y, x] += scores[i * 3 + j]
    np.testing.assert_array_equal(got, expected)


def test_finish_heatmap_quantile_blur_and_max() -> None:
    pixels = np.arange(16, dtype=np.float64).reshape(4, 4)
    np.testing.assert_array_equal(finish_heatmap(pixels), pixels / 15)
    cut = finish_heatmap(pixels, quantile=0.75)
    threshold = np.quantile(pixels, 0.75)  # 11.25: pixels 12..15 stay
    np.testing.assert_array_equal(cut, np.where(pixels < threshold, 0, pixels) / 15)
    assert (finish_heatmap(pixels, quantile=0.0) > 0).sum() == 15  # q = 0 keeps all (pixel 0 is 0)
    blurred = finish_heatmap(pixels, sigma=1.0)
    from scipy.ndimage import gaussian_filter

    reference = gaussian_filter(pixels, 1.0, mode="reflect", truncate=4.0)
    np.testing.assert_allclose(blurred, reference / reference.max())
    assert blurred.max() == 1.0
    assert not finish_heatmap(np.zeros((3, 3))).any()
    assert not finish_heatmap(-np.ones((3, 3))).any()


def test_dataset_images_get_file_names_any_file_system_takes() -> None:
    """'builtin:digits' (a colon: refused by Windows, awkward in shells) becomes 'builtin-digits';
    the identity recorded in Neo4j keeps the dataset's own name."""
    from cnngraph.datasets import ImageDataset
    from cnngraph.explain.images import gather

    data = ImageDataset(torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 0]), ["a", "b"], "builtin:digits")
    batch = gather([], data, [0, 2], (1, 8, 8), dataset_name="builtin:digits")
    assert batch.stems == ["builtin-digits-0", "builtin-digits-2"]
    assert batch.identities == ["builtin:digits#0", "builtin:digits#2"]
    assert gather([], data, [1], (1, 8, 8), dataset_name="::").stems == ["data-1"]
