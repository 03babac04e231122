"""The JSON report of one pruning run and the atomic write of a run's output folder."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from cnngraph import __version__
from cnngraph.pruner.metrics import Summary, compare
from cnngraph.pruner.select import UnitSelection
from cnngraph.pruner.surgery import PrunedModel

REPORT_VERSION = 2


def build_report(
    selection: UnitSelection,
    pruned: PrunedModel,
    original: Summary,
    result: Summary,
    options: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Selection table (one row per unit), removed units and convolutions, both summaries with
    deltas, and every option used."""
    return {
        "version": REPORT_VERSION,
        "cnngraph_version": __version__,
        "options": dict(options),
        "selection": selection.to_dict(),
        "removed": [
            {"layer": k, "name": name} for k, name in zip(pruned.removed, pruned.removed_names, strict=True)
        ],
        "units_removed": [u.to_dict() for u in pruned.units],
        "rewired": [r.to_dict() for r in pruned.rewired],
        "original": original.to_dict(),
        "pruned": result.to_dict(),
        "comparison": [row.to_dict() for row in compare(original, result)],
        **(extra or {}),
    }


def dumps(document: Any, indent: int | None = 2) -> str:
    """Strict JSON text of ``document``: NaN becomes null, unknown objects become strings."""
    return json.dumps(_clean(document), indent=indent, default=str, allow_nan=False)


def write_json(path: str | Path, document: dict[str, Any]) -> Path:
    """Write ``document`` as indented strict JSON."""
    path = Path(path)
    path.write_text(dumps(document))
    return path


def _clean(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


@contextmanager
def staged_directory(target: str | Path) -> Iterator[Path]:
    """A temporary folder beside ``target`` that becomes ``target`` only if the block succeeds.

    An existing ``target`` is replaced (its old files moved aside first, deleted after); on error
    nothing of the run is left behind.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            target.replace(old / target.name)
        staging.replace(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
