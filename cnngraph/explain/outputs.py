"""What ``explain`` writes per image: a PNG to look at, the raw heatmap, and JSON with everything.

- ``STEM.png``: the image, the heatmap and the overlay side by side, titled with the explained
  class and its probability;
- ``STEM.npy``: the heatmap, float64 ``[H, W]`` in [0, 1];
- ``STEM.json``: the image, the classes, the probability, every option, and per layer the path
  score of every position.

Each file goes to a temporary name beside its target and is renamed over it, so a reader, a
``kill -9`` or a second copy never sees half a file.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from cnngraph.explain.api import Explanation
from cnngraph.files import write_bytes
from cnngraph.mapping.network import Topology


def record(
    explanation: Explanation, topology: Topology, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The JSON record of one explanation."""
    return {
        **explanation.summary(),
        "probabilities": explanation.probabilities.tolist(),
        "class_names": list(explanation.class_names),
        "options": explanation.options,
        **(extra or {}),
        "layers": explanation.layer_scores(topology),
    }


def figure_png(image: np.ndarray, explanation: Explanation) -> bytes:
    """Image | heatmap | overlay, as PNG bytes (matplotlib, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    picture = image.transpose(1, 2, 0) if image.shape[0] > 1 else image[0]
    picture = np.clip(picture, 0.0, 1.0)
    cmap = None if image.shape[0] > 1 else "gray"
    fig, axes = plt.subplots(1, 3, figsize=(9.6, 3.6), dpi=110)
    try:
        axes[0].imshow(picture, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        axes[0].set_title("image")
        shown = axes[1].imshow(explanation.heatmap, cmap="inferno", vmin=0, vmax=1, interpolation="nearest")
        axes[1].set_title("heatmap")
        fig.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.04)
        axes[2].imshow(picture, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        axes[2].imshow(
            explanation.heatmap, cmap="inferno", vmin=0, vmax=1, alpha=0.55, interpolation="bilinear"
        )
        axes[2].set_title("overlay")
        for ax in axes:
            ax.set_axis_off()
        title = f"{explanation.explained_name}: p = {explanation.probability:.3f}"
        if explanation.predicted != explanation.explained:
            title += f" (predicted {explanation.predicted_name})"
        if explanation.label is not None:
            title += f"; label {explanation.summary()['label']}"
        fig.suptitle(title)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    return buffer.getvalue()


def write_outputs(
    folder: Path,
    stem: str,
    image: np.ndarray,
    explanation: Explanation,
    topology: Topology,
    extra: dict[str, Any] | None = None,
) -> dict[str, str]:
    """The three files of one explanation; their paths by kind."""
    paths = {kind: folder / f"{stem}.{kind}" for kind in ("png", "npy", "json")}
    write_bytes(paths["png"], figure_png(image, explanation))
    buffer = io.BytesIO()
    np.save(buffer, explanation.heatmap, allow_pickle=False)
    write_bytes(paths["npy"], buffer.getvalue())
    text = json.dumps(record(explanation, topology, extra), indent=1)
    write_bytes(paths["json"], text.encode())
    return {kind: str(path) for kind, path in paths.items()}
