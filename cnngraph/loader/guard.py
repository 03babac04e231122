"""Driver errors as one-line :class:`cnngraph.errors.Neo4jError`, for code that only holds a driver."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from neo4j import Driver, Session
from neo4j import exceptions as neo4j_exc

from cnngraph.loader.connection import translate
from cnngraph.settings import Neo4jSettings


def settings_of(driver: Driver) -> Neo4jSettings:
    """Enough settings to name the server in an error message."""
    address = getattr(driver, "address", None)
    scheme = "neo4j+s" if getattr(driver, "encrypted", False) else "bolt"
    return Neo4jSettings(uri=f"{scheme}://{address}" if address else "the configured server")


@contextmanager
def neo4j_errors(driver: Driver) -> Iterator[None]:
    """Re-raise what the driver throws (lost connection, bad login, failed query) as a domain error."""
    try:
        yield
    except (neo4j_exc.Neo4jError, neo4j_exc.DriverError, OSError) as e:
        raise translate(e, settings_of(driver)) from e


def quiet_session(driver: Driver, database: str | None) -> Session:
    """A session that does not log the server's planner notifications (unknown labels on a new database)."""
    return driver.session(database=database, notifications_min_severity="OFF")
