"""Driver errors as one-line :class:`cnngraph.errors.Neo4jError`, for code that only holds a driver;
and the read guard: a reader's result counts only if the model is the same complete model after the
read as before it (:func:`unchanged_model`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from neo4j import Driver, ManagedTransaction, Session
from neo4j import exceptions as neo4j_exc

from cnngraph.errors import Neo4jError
from cnngraph.loader import schema
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


# ---------------------------------------------------------------------------------- reads: same model
# What makes a loaded model the same model: a load writes a fresh ``load_id`` (and ``created``) on
# the ``:Model`` node it creates, so a drop and reload of the very same mapping is a new load too.
IDENTITY = (
    "load_id", "created", "completed", "checksum", "status", "layout",
    "num_nodes", "num_arcs", "num_relationships", "num_classes", "num_layers",
)  # fmt: skip
SCORE_IDENTITY = ("scored_descriptor", "scored_at")
"""Also compared by readers of stored scores: a ``score`` that ran meanwhile changed them."""


class ModelChangedError(Neo4jError):
    """The model was dropped, replaced or rescored while a command read it; its result is discarded."""


@dataclass
class ModelSnapshot:
    """A complete model as a reader found it before reading (``props``), to compare with afterwards."""

    model: str
    props: dict[str, Any]
    scores: bool = False
    positions: int | None = None  # positions the reader got back, checked against num_nodes

    def read_positions(self, count: int) -> None:
        """Record how many positions the read returned (``verify`` checks it is all of them)."""
        self.positions = count

    def change(self, now: dict[str, Any] | None) -> str | None:
        """Why ``now`` (the model's properties after the read) is not the model read; None if it is."""
        m = self.model
        done = "so its result was discarded"
        if now is None:
            return (
                f"model '{m}' was dropped while this command read it, {done}; load it again "
                f"('cnngraph load FILE.npz --name {m}') to read it"
            )
        if now.get("status") == "deleting":
            return (
                f"model '{m}' is being deleted (a drop or 'load --replace' began while this command read "
                f"it), {done}; once 'cnngraph models' lists it as loaded again, run this again"
            )
        if any(now.get(k) != self.props.get(k) for k in IDENTITY):
            if now.get("status") != "complete":
                return (
                    f"model '{m}' was replaced while this command read it and is being loaded again, "
                    f"{done}; run this again once 'cnngraph models' shows it complete"
                )
            return (
                f"model '{m}' was replaced by another load while this command read it, {done}; run this again"
            )
        if self.scores and any(now.get(k) != self.props.get(k) for k in SCORE_IDENTITY):
            return (
                f"the scores of model '{m}' were recomputed ('cnngraph score') while this command read "
                f"them, {done}; run this again"
            )
        expected = int(self.props.get("num_nodes") or 0)
        if self.positions is not None and self.positions != expected:
            return (
                f"model '{m}' returned {self.positions:,} of its {expected:,} positions, {done}; its graph "
                f"is damaged: load its mapping again with 'cnngraph load FILE.npz --name {m} --replace'"
            )
        return None


def snapshot(driver: Driver, model: str, database: str | None = None, scores: bool = False) -> ModelSnapshot:
    """The model's properties before a read; a clear error unless it is completely loaded."""
    from cnngraph.loader.catalog import require_model

    return ModelSnapshot(model, require_model(driver, model, database), scores)


def verify(driver: Driver, snap: ModelSnapshot, database: str | None = None) -> None:
    """Raise :class:`ModelChangedError` unless the model is still the complete model ``snap`` saw."""
    from cnngraph.loader.catalog import get_model

    problem = snap.change(get_model(driver, snap.model, database))
    if problem is not None:
        raise ModelChangedError(problem)


@contextmanager
def unchanged_model(
    driver: Driver, model: str, database: str | None = None, scores: bool = False
) -> Iterator[ModelSnapshot]:
    """Read a model only if it is the same complete model before and after the read.

    Usage: ``with unchanged_model(driver, name) as snap: ...read, using snap.props...``; then
    use or write the result only after the block. Entering refuses a model that is not completely
    loaded; leaving raises :class:`ModelChangedError` (one line) when the model was dropped,
    replaced, reloaded (even from the same mapping) or, with ``scores``, rescored meanwhile, or when
    the read returned fewer positions than the model has (``snap.read_positions``). An error inside
    the block that a concurrent drop or replace caused (a vanished node, a short result) becomes
    that same one-line error.
    """
    snap = snapshot(driver, model, database, scores)
    try:
        yield snap
    except ModelChangedError:
        raise
    except Exception as error:
        try:
            verify(driver, snap, database)
        except ModelChangedError as changed:
            raise changed from error
        except Exception:
            pass  # the model cannot be checked now (server gone): the original error says more
        raise
    verify(driver, snap, database)


def hold_model(
    tx: ManagedTransaction, snap: ModelSnapshot, key: str | None = None, token: str | None = None
) -> None:
    """In a write transaction: lock the ``:Model`` node, then check it is still the model ``snap``
    read (and, given ``key``, that ``m[key] == token``); else raise and roll back before writing."""
    tx.run(schema.LOCK_MODEL, model=snap.model).consume()
    record = tx.run(schema.GET_MODEL, model=snap.model).single()
    now = None if record is None else dict(record["model"])
    problem = snap.change(now)
    if problem is not None:
        raise ModelChangedError(problem)
    if key is not None and (now or {}).get(key) != token:
        raise ModelChangedError(
            f"another 'cnngraph score' of model '{snap.model}' began while this one wrote its scores, "
            "so this one stopped (the other one's scores are kept); run it again if needed"
        )
