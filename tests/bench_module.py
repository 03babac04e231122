"""Load one of the scripts under bench/ as a module, for tests of its functions."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def load_bench_script(relative: str) -> Any:
    """The script at ``ROOT/relative`` (e.g. ``bench/experiments/study_report.py``), imported fresh."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
