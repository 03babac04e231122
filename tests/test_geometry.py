"""Per-axis window and weight-node geometry, against hand values and brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnngraph.mapping import geometry as geo

SAME3 = geo.AxisConv(3, 1, 1)
POOL2 = geo.AxisPool(2, 2)


def as_list(lo: np.ndarray, hi: np.ndarray) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in zip(lo, hi, strict=True)]


def test_same_3x3_window_is_3_wide_and_2_at_borders() -> None:
    assert as_list(*geo.windows(SAME3, 5, 5, [])) == [(0, 1), (0, 2), (1, 3), (2, 4), (3, 4)]


def test_window_after_2x2_pool_is_6_wide() -> None:
    # target p reads pooled [p-1, p+1] -> source [2p-2, 2p+3], clipped to [0, 7]
    assert as_list(*geo.windows(SAME3, 4, 8, [POOL2])) == [(0, 3), (0, 5), (2, 7), (4, 7)]


def test_strided_conv_window() -> None:
    conv = geo.AxisConv(3, 2, 1)
    assert as_list(*geo.windows(conv, 4, 8, [])) == [(0, 1), (1, 3), (3, 5), (5, 7)]


def test_1x1_conv_window_is_the_position_itself() -> None:
    assert as_list(*geo.windows(geo.AxisConv(1), 4, 4, [])) == [(0, 0), (1, 1), (2, 2), (3, 3)]


def test_valid_conv_window_never_clips() -> None:
    assert as_list(*geo.windows(geo.AxisConv(3), 3, 5, [])) == [(0, 2), (1, 3), (2, 4)]


def test_dilated_conv_window_is_the_hull() -> None:
    conv = geo.AxisConv(3, 1, 2, 2)
    assert as_list(*geo.windows(conv, 5, 5, [])) == [(0, 2), (0, 3), (0, 4), (1, 4), (2, 4)]


def test_window_wholly_in_padding_is_empty() -> None:
    lo, hi = geo.windows(geo.AxisConv(1, 1, 2), 5, 1, [])
    target, _ = geo.pairs(lo, hi)
    assert target.tolist() == [2]


def test_pairs_lists_every_position_of_every_window() -> None:
    lo, hi = np.array([0, 0, 1]), np.array([1, 2, 2])
    target, source = geo.pairs(lo, hi)
    assert list(zip(target.tolist(), source.tolist(), strict=True)) == [
        (0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 1), (2, 2),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("conv", "pools", "size", "out", "expected"),
    [
        (SAME3, [], 5, 5, [0, 1, 2, 3, 4]),
        (SAME3, [POOL2], 8, 4, [0, 0, 1, 1, 2, 2, 3, 3]),
        (SAME3, [POOL2, POOL2], 8, 2, [0, 0, 0, 0, 1, 1, 1, 1]),
        (geo.AxisConv(3, 2, 1), [], 8, 4, [0, 0, 1, 1, 2, 2, 3, 3]),
        (geo.AxisConv(3), [], 5, 3, [0, 0, 1, 2, 2]),
        (geo.AxisConv(1), [], 3, 3, [0, 1, 2]),
    ],
)
def test_nearest_target_hand_cases(
    conv: geo.AxisConv, pools: list[geo.AxisPool], size: int, out: int, expected: list[int]
) -> None:
    assert geo.nearest_target(geo.centre(conv, pools), size, out).tolist() == expected


def brute_nearest(conv: geo.AxisConv, pools: list[geo.AxisPool], size: int, out: int) -> np.ndarray:
    """Nearest window centre by scanning every target, centres composed in floats."""
    centres = []
    for p in range(out):
        c = p * conv.stride - conv.padding + (conv.kernel - 1) * conv.dilation / 2
        for pool in reversed(pools):
            c = c * pool.stride - pool.padding + (pool.kernel - 1) * pool.dilation / 2
        centres.append(c)
    dist = np.abs(np.array(centres)[None, :] - np.arange(size)[:, None])
    return dist.argmin(axis=1)  # first minimum = lower p on ties


def test_nearest_target_equals_brute_force_on_many_geometries() -> None:
    convs = [
        geo.AxisConv(k, s, p, d)
        for k, s, p, d in itertools.product([1, 2, 3, 5], [1, 2, 3], [0, 1, 2], [1, 2])
    ]
    pools = [[], [POOL2], [geo.AxisPool(3, 2, 1)], [geo.AxisPool(2, 2, 0, 1, True), geo.AxisPool(3, 1, 1)]]
    checked = 0
    for conv, chain in itertools.product(convs, pools):
        for size in (5, 8, 11):
            in_size = geo.input_sizes(size, chain)[-1] if size >= 3 else 0
            out = geo.conv_out_size(conv, in_size)
            if out < 1:
                continue
            got = geo.nearest_target(geo.centre(conv, chain), size, out)
            np.testing.assert_array_equal(got, brute_nearest(conv, chain, size, out))
            checked += 1
    assert checked > 300


@pytest.mark.parametrize("ceil", [False, True])
def test_pool_out_size_matches_torch(ceil: bool) -> None:
    for size, k, s, p in itertools.product(range(2, 12), [2, 3], [1, 2, 3], [0, 1]):
        if p > k // 2 or size + 2 * p < k:
            continue
        pool = geo.AxisPool(k, s, p, 1, ceil)
        got = F.max_pool2d(torch.zeros(1, 1, size, 1), (k, 1), (s, 1), (p, 0), ceil_mode=ceil).shape[2]
        assert pool.out_size(size) == got, (size, k, s, p, ceil)


def test_conv_out_size() -> None:
    assert geo.conv_out_size(SAME3, 7) == 7
    assert geo.conv_out_size(geo.AxisConv(3, 2, 1), 7) == 4
    assert geo.conv_out_size(geo.AxisConv(3, 1, 0, 2), 7) == 3
