"""docs/SCALE.md's table: relationships, store size, load and score time for 10/100/1000 classes at
32/96/224 px, per graph layout, extrapolated from measured rates.

    .venv/bin/python bench/scale_table.py --per-class-load 2204880:65.3 --per-class-score 2204880:11.6 \\
        --compact-load 10:220488:15.5,1000:36242:120 --compact-score 10:220488:4.2,1000:36242:30

Arc counts are exact (the topology of each model traced at each size, no weights). Times: the
per-class layout costs the same per relationship whatever t is (one measured rate); a compact arc
costs ``a + b * t`` (its weight lists grow with t), fitted through two measurements at different t.
Store sizes use Neo4j 5's record sizes (relationship 34 B, property record 41 B holding 4 blocks,
dynamic array block 128 B with 120 B of data), checked against measured store growth in
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import math

import torchvision

from cnngraph.mapping.topology import topology_for_model
from cnngraph.models import ModelSpec, build_model

SIZES = (32, 96, 224)
CLASSES = (10, 100, 1000)
RELATIONSHIP = 34
PROPERTY_RECORD = 41
ARRAY_BLOCK, ARRAY_DATA = 128, 120


def per_class_bytes() -> int:
    """One :ARC {class, mean, median, w}: 1 + 2 + 2 + 2 property blocks = 2 property records."""
    return RELATIONSHIP + 2 * PROPERTY_RECORD


def compact_bytes(t: int) -> int:
    """One :ARC {mean: [t], median: [t]}: one property record pointing at two double arrays."""
    blocks = math.ceil((8 * t + 8) / ARRAY_DATA)
    return RELATIONSHIP + PROPERTY_RECORD + 2 * blocks * ARRAY_BLOCK


def linear_fit(points: str) -> tuple[float, float]:
    """Seconds per arc ``a + b * t`` through two 't:arcs:seconds' measurements."""
    (t1, u1), (t2, u2) = [
        (int(t), float(s) / int(n)) for t, n, s in (p.split(":") for p in points.split(","))
    ]
    b = (u2 - u1) / (t2 - t1)
    return u1 - b * t1, b


def rate(point: str) -> float:
    """Relationships per second from 'relationships:seconds'."""
    n, s = point.split(":")
    return int(n) / float(s)


def arcs_per_class() -> dict[tuple[str, int], int]:
    counts = {}
    for size in SIZES:
        vgg = build_model(ModelSpec(source="vgg16", num_classes=10, input_size=size))
        counts["VGG16", size] = topology_for_model(vgg, (3, size, size)).num_arcs
        counts["ResNet-18", size] = topology_for_model(
            torchvision.models.resnet18(), (3, size, size)
        ).num_arcs
    return counts


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def human_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 3 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.0f} days"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class-load", required=True, help="relationships:seconds")
    parser.add_argument("--per-class-score", required=True, help="relationships:seconds")
    parser.add_argument("--compact-load", required=True, help="t:arcs:seconds,t:arcs:seconds")
    parser.add_argument("--compact-score", required=True, help="t:arcs:seconds,t:arcs:seconds")
    args = parser.parse_args()
    pc_load, pc_score = rate(args.per_class_load), rate(args.per_class_score)
    cl_a, cl_b = linear_fit(args.compact_load)
    cs_a, cs_b = linear_fit(args.compact_score)
    print(
        "| model | px | classes | arcs per class | per-class: relationships | store | load | score "
        "| compact: relationships | store | load | score |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (model, size), arcs in arcs_per_class().items():
        for t in CLASSES:
            rels = arcs * t
            print(
                f"| {model} | {size} | {t:,} | {arcs:,} | {rels:,} | {human_bytes(rels * per_class_bytes())} "
                f"| {human_seconds(rels / pc_load)} | {human_seconds(rels / pc_score)} "
                f"| {arcs:,} | {human_bytes(arcs * compact_bytes(t))} "
                f"| {human_seconds(arcs * (cl_a + cl_b * t))} | {human_seconds(arcs * (cs_a + cs_b * t))} |"
            )


if __name__ == "__main__":
    main()
