"""Shared fixtures: a real Neo4j server for the session, and the CLI app.

The server is the project's own launcher (``cnngraph.server.local``) started on free ports with
a fresh store in a temporary folder and auth on with the password it generates and stores (as
``cnngraph server start`` does), then stopped at the end. Set ``CNNGRAPH_TEST_NEO4J_URI`` (and
``CNNGRAPH_TEST_NEO4J_PASSWORD``) to use a running server instead. Tests that need no database
never start it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from cnngraph.settings import Neo4jSettings


@pytest.fixture(scope="session")
def neo4j_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The session's own server (``cnngraph.server.local``), as the CLI starts it: auth on with a
    generated password stored in its state directory. None with ``CNNGRAPH_TEST_NEO4J_URI``."""
    if os.environ.get("CNNGRAPH_TEST_NEO4J_URI"):
        yield None
        return
    from cnngraph.server import local

    config = local.ServerConfig(
        state_dir=Path(tmp_path_factory.mktemp("neo4j")),
        bolt_port=local.free_port(),
        http_port=local.free_port(),
        heap="1g",
        pagecache="256m",
    )
    local.start(config, timeout=240)
    try:
        yield config
    finally:
        local.stop(config)


@pytest.fixture(scope="session")
def neo4j_settings(neo4j_server: Any) -> Neo4jSettings:
    external = os.environ.get("CNNGRAPH_TEST_NEO4J_URI")
    if external:
        return Neo4jSettings(uri=external, password=os.environ.get("CNNGRAPH_TEST_NEO4J_PASSWORD") or None)
    from cnngraph.server import local

    return Neo4jSettings(uri=neo4j_server.bolt_uri, password=local.stored_password(neo4j_server))


@pytest.fixture(scope="session")
def neo4j_driver(neo4j_settings: Neo4jSettings) -> Iterator[object]:
    from cnngraph.loader.connection import connect

    driver = connect(neo4j_settings)
    try:
        yield driver
    finally:
        driver.close()


@pytest.fixture
def driver(neo4j_driver: Any) -> Any:
    """The session's driver for the real test server."""
    return neo4j_driver


@pytest.fixture
def model_id(neo4j_driver: Any) -> Iterator[str]:
    """A unique model id; afterwards any lease a killed writer left is freed and the model dropped."""
    from cnngraph.loader.catalog import drop_model

    name = f"test-{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        neo4j_driver.execute_query("MATCH (m:Model {id: $model}) REMOVE m.writer, m.lease_until", model=name)
        drop_model(neo4j_driver, name)


@pytest.fixture(scope="session")
def cli_app() -> typer.Typer:
    """The ``cnngraph`` Typer app with every command registered (once)."""
    from cnngraph.cli import main

    if not main.app.registered_groups and not main.app.registered_commands:
        main._register()
    return main.app


@pytest.fixture
def neo4j_env(neo4j_settings: Neo4jSettings) -> dict[str, str]:
    """Environment variables that point the CLI at the test server."""
    env = {"NEO4J_URI": neo4j_settings.uri, "NEO4J_USER": neo4j_settings.user}
    env["NEO4J_PASSWORD"] = neo4j_settings.password or ""
    return env
