"""Mapping stage: a trained CNN and labelled images in, the multilayer network (arrays) out.

``map_model`` is imported lazily: ``cnngraph.mapping.network`` (numpy only) must not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["map_model"]


def __getattr__(name: str) -> Any:
    if name == "map_model":
        return importlib.import_module("cnngraph.mapping.api").map_model
    raise AttributeError(f"module 'cnngraph.mapping' has no attribute '{name}'")
