"""Per-axis read sets and weight-node geometry, against hand values, torch and brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from geometry_oracle import brute_pi

from cnngraph.mapping import geometry as geo

SAME3 = geo.AxisConv(3, 1, 1)
POOL2 = geo.AxisPool(2, 2)


def reads(m: geo.AxisMap) -> list[list[int]]:
    """The source positions each target reads, as lists."""
    out: list[list[int]] = [[] for _ in range(m.size)]
    for t, s in zip(m.target.tolist(), m.source.tolist(), strict=True):
        out[t].append(s)
    return out


def conv_map(conv: geo.AxisConv, size: int, out: int, pools: tuple[geo.AxisPool, ...] = ()) -> geo.AxisMap:
    m = geo.identity(size)
    for pool in pools:
        m = geo.through_taps(m, pool.as_taps(), pool.out_size(m.size))
    return geo.through_taps(m, conv, out)


def test_same_3x3_reads_3_and_2_at_borders() -> None:
    assert reads(conv_map(SAME3, 5, 5)) == [[0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4]]


def test_after_2x2_pool_a_3x3_window_reads_6() -> None:
    assert reads(conv_map(SAME3, 8, 4, (POOL2,))) == [
        [0, 1, 2, 3], [0, 1, 2, 3, 4, 5], [2, 3, 4, 5, 6, 7], [4, 5, 6, 7],
    ]  # fmt: skip


def test_dilated_window_has_gaps() -> None:
    assert reads(conv_map(geo.AxisConv(3, 1, 2, 2), 5, 5)) == [[0, 2], [1, 3], [0, 2, 4], [1, 3], [2, 4]]


def test_pool_with_kernel_below_stride_leaves_gaps() -> None:
    # MaxPool(1, 2) keeps the even positions only; a 3x3 conv then reads 2p-2, 2p, 2p+2.
    assert reads(conv_map(SAME3, 8, 4, (geo.AxisPool(1, 2),))) == [[0, 2], [0, 2, 4], [2, 4, 6], [4, 6]]


def test_window_wholly_in_padding_reads_nothing() -> None:
    assert reads(conv_map(geo.AxisConv(1, 1, 2), 1, 5)) == [[], [], [0], [], []]


@pytest.mark.parametrize("mode", ["reflect", "circular", "replicate"])
def test_padding_modes_equal_torch_pad(mode: str) -> None:
    for size in (1, 2, 3, 5, 8):
        pad = size - 1 if mode == "reflect" else size
        if pad == 0:
            continue
        index = torch.arange(size, dtype=torch.float64).view(1, 1, size)
        padded = F.pad(index, (pad, pad), mode=mode)[0, 0].long().numpy()
        got, valid = geo.padded_index(np.arange(-pad, size + pad), size, mode)
        assert valid.all()
        np.testing.assert_array_equal(got, padded)


def test_zero_padding_reads_nothing_outside() -> None:
    got, valid = geo.padded_index(np.arange(-2, 5), 3, "zeros")
    assert valid.tolist() == [False, False, True, True, True, False, False]
    assert got[valid].tolist() == [0, 1, 2]


def test_adaptive_window_equals_torch() -> None:
    for size, out in itertools.product(range(1, 12), range(1, 9)):
        start, end = geo.adaptive_window(size, out)
        eye = torch.eye(size, dtype=torch.float64).view(size, 1, size)
        used = F.adaptive_avg_pool1d(eye, out)[:, 0, :].T.numpy() > 0  # [out, size]
        expected = [np.flatnonzero(row).tolist() for row in used]
        assert [list(range(a, b)) for a, b in zip(start, end, strict=True)] == expected


def test_global_adaptive_pooling_reads_everything() -> None:
    m = geo.through_adaptive(geo.identity(7), 1)
    assert reads(m) == [list(range(7))]
    assert m.centre.tolist() == [3.0]


def test_broadcast_reads_the_one_position_and_pi_is_the_centre() -> None:
    m = geo.through_taps(geo.through_broadcast(geo.identity(1), 6), SAME3, 6)
    assert reads(m) == [[0]] * 6
    assert geo.nearest_target(m).tolist() == [2]
    assert geo.nearest_target(geo.through_broadcast(geo.identity(1), 5)).tolist() == [2]


@pytest.mark.parametrize(
    ("conv", "pools", "size", "out", "expected"),
    [
        (SAME3, (), 5, 5, [0, 1, 2, 3, 4]),
        (SAME3, (POOL2,), 8, 4, [0, 0, 1, 1, 2, 2, 3, 3]),
        (SAME3, (POOL2, POOL2), 8, 2, [0, 0, 0, 0, 1, 1, 1, 1]),
        (geo.AxisConv(3, 2, 1), (), 8, 4, [0, 0, 1, 1, 2, 2, 3, 3]),
        (geo.AxisConv(3), (), 5, 3, [0, 0, 1, 2, 2]),
        (geo.AxisConv(1), (), 3, 3, [0, 1, 2]),
        (geo.AxisConv(4, 1, 1), (), 6, 6, [0, 1, 2, 3, 4, 5]),  # 'same' even kernel: centre p + 1/2, tie to u
    ],
)
def test_nearest_target_hand_cases(
    conv: geo.AxisConv, pools: tuple[geo.AxisPool, ...], size: int, out: int, expected: list[int]
) -> None:
    assert geo.nearest_target(conv_map(conv, size, out, pools)).tolist() == expected


def brute_nearest(conv: geo.AxisConv, pools: tuple[geo.AxisPool, ...], size: int, out: int) -> np.ndarray:
    """Nearest window centre by scanning every target, centres composed in floats."""
    centres = []
    for p in range(out):
        c = p * conv.stride - conv.padding + (conv.kernel - 1) * conv.dilation / 2
        for pool in reversed(pools):
            c = c * pool.stride - pool.padding + (pool.kernel - 1) * pool.dilation / 2
        centres.append(c)
    return np.array(brute_pi(centres, size))


def brute_reads(conv: geo.AxisConv, pools: tuple[geo.AxisPool, ...], size: int, out: int) -> list[list[int]]:
    """Read sets by following every tap in plain Python, zero padding."""
    sizes = [size]
    for pool in pools:
        sizes.append(pool.out_size(sizes[-1]))
    result = []
    for p in range(out):
        current = {p * conv.stride - conv.padding + conv.dilation * m for m in range(conv.kernel)}
        current = {y for y in current if 0 <= y < sizes[-1]}
        for pool, n in zip(reversed(pools), reversed(sizes[:-1]), strict=True):
            current = {
                x * pool.stride - pool.padding + pool.dilation * m
                for x in current
                for m in range(pool.kernel)
            }
            current = {y for y in current if 0 <= y < n}
        result.append(sorted(current))
    return result


def test_reads_and_nearest_target_equal_brute_force_on_many_geometries() -> None:
    convs = [
        geo.AxisConv(k, s, p, d)
        for k, s, p, d in itertools.product([1, 2, 3, 5], [1, 2, 3], [0, 1, 2], [1, 2])
    ]
    chains: list[tuple[geo.AxisPool, ...]] = [
        (), (POOL2,), (geo.AxisPool(3, 2, 1),), (geo.AxisPool(2, 2, 0, 1, True), geo.AxisPool(3, 1, 1)),
        (geo.AxisPool(1, 2),), (geo.AxisPool(2, 3),), (geo.AxisPool(2, 2, 0, 2),),
    ]  # fmt: skip
    checked = 0
    for conv, chain in itertools.product(convs, chains):
        for size in (5, 8, 11):
            try:
                in_size = size
                for pool in chain:
                    in_size = pool.out_size(in_size)
            except Exception:
                continue
            out = geo.conv_out_size(conv, in_size)
            if out < 1:
                continue
            m = conv_map(conv, size, out, chain)
            assert reads(m) == brute_reads(conv, chain, size, out)
            np.testing.assert_array_equal(geo.nearest_target(m), brute_nearest(conv, chain, size, out))
            checked += 1
    assert checked > 900


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
    assert geo.conv_out_size(geo.AxisConv(4, 1, 1), 7, padding_end=2) == 7  # 'same', even kernel


def test_ties_go_to_the_target_nearest_floor_u_times_ratio() -> None:
    # adaptive 10 -> 4: windows [0,3) [2,5) [5,8) [7,10), centres 1, 3, 6, 8
    m = geo.through_adaptive(geo.identity(10), 4)
    assert m.centre.tolist() == [1.0, 3.0, 6.0, 8.0]
    # u = 2 ties between 0 and 1 (floor(8/10) = 0); u = 7 between 2 and 3 (floor(28/10) = 2)
    assert geo.nearest_target(m).tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
    # adaptive up-sampling 3 -> 7: runs of equal centres, ties among them
    up = geo.through_adaptive(geo.identity(3), 7)
    assert geo.nearest_target(up).tolist() == brute_pi(up.centre.tolist(), 3)
    # 'valid' 2-wide kernel 5 -> 4, centres p + 1/2: u ties between u - 1 and u, floor(4u/5) decides
    assert geo.nearest_target(conv_map(geo.AxisConv(2, 1, 0), 5, 4)).tolist() == [0, 0, 1, 2, 3]
    # a stride r gives u // r
    assert geo.nearest_target(conv_map(geo.AxisConv(4, 2, 1), 8, 4)).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


@pytest.mark.parametrize("kernel", [2, 4, 6])
@pytest.mark.parametrize("dilation", [1, 3])
def test_even_kernel_same_padding_weight_node_is_u(kernel: int, dilation: int) -> None:
    for size in range(1, 12):
        pad = dilation * (kernel - 1) // 2  # the left padding of 'same'; PyTorch puts one more on the right
        m = conv_map(geo.AxisConv(kernel, 1, pad, dilation), size, size)
        assert geo.nearest_target(m).tolist() == list(range(size))


def test_adaptive_pooling_ties_equal_brute_force() -> None:
    checked = ties = 0
    for size, out in itertools.product(range(1, 17), range(1, 17)):
        for conv in (geo.AxisConv(1), geo.AxisConv(3, 1, 1), geo.AxisConv(2, 1, 0)):
            after = geo.conv_out_size(conv, out)
            if after < 1:
                continue
            m = geo.through_taps(geo.through_adaptive(geo.identity(size), out), conv, after)
            centres = m.centre.tolist()
            expected = brute_pi(centres, size)
            assert geo.nearest_target(m).tolist() == expected, (size, out, conv)
            checked += 1
            ties += sum(
                sorted(abs(c - u) for c in centres)[:2] == [min(abs(c - u) for c in centres)] * 2
                for u in range(size)
                if len(centres) > 1
            )
    assert checked > 600 and ties > 100
