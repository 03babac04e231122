"""The command modules, in the order they appear in --help. Each has register(app)."""

from __future__ import annotations

from types import ModuleType

MODULES: list[ModuleType] = []
