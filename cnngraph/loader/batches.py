"""Batch sizes of the writers, in a module that imports nothing, so the CLI can show them as
option defaults without importing the Neo4j driver (``cnngraph --help`` stays fast)."""

from __future__ import annotations

DEFAULT_BATCH = 5_000  # arcs per load transaction (times t relationships on the per-class layout)
DELETE_BATCH = 10_000  # positions per drop transaction
