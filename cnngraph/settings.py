"""Connection settings for Neo4j, shared by the CLI and the Python API. Imports nothing else."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_URI = "neo4j://127.0.0.1:7687"


@dataclass(frozen=True)
class Neo4jSettings:
    """Where Neo4j is and how to log in. Any Bolt URI works (bolt://, neo4j://, neo4j+s://)."""

    uri: str = DEFAULT_URI
    user: str = "neo4j"
    password: str | None = None
    database: str | None = None

    @classmethod
    def from_env(cls) -> Neo4jSettings:
        """``NEO4J_URI``, ``NEO4J_USER``, ``NEO4J_PASSWORD``, ``NEO4J_DATABASE``."""
        return cls(
            uri=os.environ.get("NEO4J_URI") or DEFAULT_URI,
            user=os.environ.get("NEO4J_USER") or "neo4j",
            password=os.environ.get("NEO4J_PASSWORD") or None,
            database=os.environ.get("NEO4J_DATABASE") or None,
        )
