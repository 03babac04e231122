"""Mapping stage: a trained CNN and labelled images in, the multilayer network (arrays) out."""

from __future__ import annotations

from cnngraph.mapping.api import map_model

__all__ = ["map_model"]
