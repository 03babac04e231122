"""Connection settings for Neo4j, shared by the CLI and the Python API. Imports nothing else.

A local server started by ``cnngraph server start`` has auth on with a generated password kept in
its state directory (owner-only file); when no password is given and the URI points at that
server, the settings pick the password up from there.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_URI = "neo4j://127.0.0.1:7687"
STATE_DIR_ENV = "CNNGRAPH_STATE_DIR"
PASSWORD_FILE = "neo4j.password"
STATE_FILE = "neo4j.json"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
SERVER_START_TIMEOUT = 600.0
"""Seconds ``cnngraph server start`` waits: a store of millions of relationships can take minutes to
recover."""


def default_state_dir() -> Path:
    """``CNNGRAPH_STATE_DIR``, else ``~/.local/state/cnngraph``: where the local server keeps its state."""
    env = os.environ.get(STATE_DIR_ENV)
    return Path(env) if env else Path.home() / ".local" / "state" / "cnngraph"


@dataclass(frozen=True)
class Neo4jSettings:
    """Where Neo4j is and how to log in. Any Bolt URI works (bolt://, neo4j://, neo4j+s://)."""

    uri: str = DEFAULT_URI
    user: str = "neo4j"
    password: str | None = None
    database: str | None = None

    @classmethod
    def from_env(cls) -> Neo4jSettings:
        """``NEO4J_URI``, ``NEO4J_USER``, ``NEO4J_PASSWORD`` (else the local one), ``NEO4J_DATABASE``."""
        return cls(
            uri=os.environ.get("NEO4J_URI") or DEFAULT_URI,
            user=os.environ.get("NEO4J_USER") or "neo4j",
            password=os.environ.get("NEO4J_PASSWORD") or None,
            database=os.environ.get("NEO4J_DATABASE") or None,
        ).with_local_password()

    def with_local_password(self, state_dir: Path | None = None) -> Neo4jSettings:
        """These settings, with the local server's stored password when none is set and the URI is it."""
        if self.password is not None or self.user != "neo4j":
            return self
        password = local_server_password(self.uri, state_dir or default_state_dir())
        return self if password is None else replace(self, password=password)


def local_server_password(uri: str, state_dir: Path) -> str | None:
    """The stored password of the server recorded in ``state_dir`` when ``uri`` is its Bolt address."""
    try:
        state = json.loads((state_dir / STATE_FILE).read_text())
        if not state.get("auth") or bolt_address(str(state["bolt_uri"])) != bolt_address(uri):
            return None
        return (state_dir / PASSWORD_FILE).read_text().strip() or None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def bolt_address(uri: str) -> tuple[str, int]:
    """``(host, port)`` of a Bolt URI, every loopback name as 127.0.0.1, port 7687 by default."""
    parts = urlsplit(uri)
    host = (parts.hostname or "127.0.0.1").lower()
    return ("127.0.0.1" if host in LOCAL_HOSTS else host), parts.port or 7687
