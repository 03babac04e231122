"""The options of one explanation (docs/METHOD.md section 10), our defaults and the authors' preset.

Every option is recorded with every output (``ExplainOptions.to_dict``), so a heatmap can always
be made again. ``sigma`` is given in pixels of the explained image; the authors' preset states
its blur at 224 px and scales it with the image: ``sigma = 2 * H / 224`` (H the image height).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from cnngraph.errors import ConfigError

MODES = ("paths", "flow")
DESCRIPTORS = ("max", "mean", "median", "sum")
RESPONSES = ("activation", "conv")
PRESETS = ("ours", "authors")

AUTHORS_SIGMA_AT_224 = 2.0


@dataclass(frozen=True)
class ExplainOptions:
    """How an image network is built and read back into a heatmap.

    ``descriptor``: node value over the filters (``max`` by default, METHOD 10).
    ``max_per_node``: ``m``, the heaviest arcs entering a node that paths follow.
    ``mode``: ``paths`` (exact path sums by dynamic programming) or ``flow`` (score split in
    proportion to the arc weights).
    ``quantile``: pixels strictly below this quantile of the pixel scores become 0 (0 keeps all).
    ``sigma``: Gaussian blur in pixels (0: none); when None, ``sigma_at_224`` scaled to the image.
    ``response``: the layer response the node values come from (METHOD section 2).
    """

    descriptor: str = "max"
    max_per_node: int = 9
    mode: str = "paths"
    quantile: float = 0.0
    sigma: float | None = None
    sigma_at_224: float | None = 7.0
    response: str = "activation"
    preset: str = "ours"

    def __post_init__(self) -> None:
        if self.descriptor not in DESCRIPTORS:
            raise ConfigError(f"unknown descriptor '{self.descriptor}'; use one of {', '.join(DESCRIPTORS)}")
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode '{self.mode}'; use paths or flow")
        if self.response not in RESPONSES:
            raise ConfigError(f"unknown response '{self.response}'; use activation or conv")
        if not isinstance(self.max_per_node, int) or self.max_per_node < 1:
            raise ConfigError(f"--max-per-node must be a whole number of at least 1, got {self.max_per_node}")
        if not 0.0 <= self.quantile < 1.0:
            raise ConfigError(f"--quantile must be at least 0 and below 1, got {self.quantile}")
        for value in (self.sigma, self.sigma_at_224):
            if value is not None and value < 0:
                raise ConfigError(f"--sigma must be 0 or more, got {value}")

    def sigma_for(self, height: int) -> float:
        """The blur in pixels for an image ``height`` pixels high."""
        if self.sigma is not None:
            return float(self.sigma)
        if self.sigma_at_224 is not None:
            return self.sigma_at_224 * height / 224.0
        return 0.0

    def to_dict(self, height: int | None = None) -> dict[str, Any]:
        """Every option; with ``height``, the blur actually used (``sigma_pixels``) too."""
        d = asdict(self)
        if height is not None:
            d["sigma_pixels"] = self.sigma_for(height)
        return d


OURS = ExplainOptions(max_per_node=9, mode="paths", quantile=0.0, sigma_at_224=7.0)
"""Our defaults: max descriptor, 9 arcs per node, path sums, no quantile cut, a blur of 7 px at
224 px (1 px at 32 px).

Chosen before the study by a pilot on 32 CIFAR-10 test images outside the study's 500
(``bench/experiments/explain_pilot.py``, docs/results/explain/pilot/), by deletion minus
insertion AUC summed over the two baselines: 9 arcs per node beat 1, 3, 18 and 27; paths and
flow were close; a 1-pixel blur helped; the 0.75 quantile cut did not (it leaves three quarters
of the pixels at 0, whose order the curves then draw at random).
"""

AUTHORS = ExplainOptions(
    descriptor="max", max_per_node=9, mode="paths", quantile=0.75, sigma_at_224=AUTHORS_SIGMA_AT_224,
    preset="authors",
)  # fmt: skip
"""The authors' public code: max descriptor, 9 arcs per node, quantile 0.75, sigma 2 at 224 px.

Their "3x3 spread" (each first-layer position credits the 3x3 pixels around it) is our pixel
rule itself for their VGG's 3x3 stride-1 'same' first convolution: a node scores the pixels its
window reads."""


def preset(name: str) -> ExplainOptions:
    """The options of a preset by name (``ours`` or ``authors``)."""
    if name == "ours":
        return OURS
    if name == "authors":
        return AUTHORS
    raise ConfigError(f"unknown preset '{name}'; use one of {', '.join(PRESETS)}")


def with_overrides(base: ExplainOptions, **changes: Any) -> ExplainOptions:
    """``base`` with the options given (None means keep); a ``sigma`` in pixels wins over a scaled one."""
    given = {k: v for k, v in changes.items() if v is not None}
    return replace(base, **given)
