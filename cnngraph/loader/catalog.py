"""What is loaded: read, list and drop ``:Model`` graphs (used by the loader and the commands)."""

from __future__ import annotations

from typing import Any

from neo4j import Driver

from cnngraph.errors import GraphNotFoundError, Neo4jError
from cnngraph.loader import schema
from cnngraph.loader.guard import neo4j_errors, quiet_session

DELETE_BATCH = 10_000


def get_model(driver: Driver, model: str, database: str | None = None) -> dict[str, Any] | None:
    """The ``:Model`` node's properties, or ``None`` when no such model is loaded."""
    with neo4j_errors(driver), quiet_session(driver, database) as session:
        record = session.run(schema.GET_MODEL, model=model).single()
    return None if record is None else dict(record["model"])


def require_model(
    driver: Driver, model: str, database: str | None = None, complete: bool = True
) -> dict[str, Any]:
    """The model's properties; a clear error when it is missing or (with ``complete``) half-loaded."""
    props = get_model(driver, model, database)
    if props is None:
        raise GraphNotFoundError(f"model '{model}' is not loaded; 'cnngraph models' lists what is")
    if complete and props.get("status") != "complete":
        raise Neo4jError(
            f"model '{model}' is only partly loaded (a load was interrupted); "
            "run 'cnngraph load' on its mapping again to complete it"
        )
    return props


def list_models(driver: Driver, database: str | None = None) -> list[dict[str, Any]]:
    """Every loaded model's properties, by id (empty list for an empty database)."""
    with neo4j_errors(driver), quiet_session(driver, database) as session:
        return [dict(r["model"]) for r in session.run(schema.LIST_MODELS)]


def drop_model(
    driver: Driver, model: str, database: str | None = None, batch_size: int = DELETE_BATCH
) -> bool:
    """Delete a model's graph in batched transactions; ``False`` when it was not there."""
    if get_model(driver, model, database) is None:
        return False
    delete_graph(driver, model, database, batch_size)
    return True


def delete_graph(driver: Driver, model: str, database: str | None, batch_size: int = DELETE_BATCH) -> None:
    """Arcs, then positions, then layers, classes and the model node (last, so a cut drop is visible)."""
    params: dict[str, Any] = {"model": model, "batch": int(batch_size)}
    with neo4j_errors(driver), quiet_session(driver, database) as session:
        session.run(schema.DELETE_ARCS, params).consume()
        session.run(schema.DELETE_POSITIONS, params).consume()
        session.run(schema.DELETE_MODEL, model=model).consume()
