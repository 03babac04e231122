"""What is loaded: read, list and drop ``:Model`` graphs (used by the loader and the commands)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from neo4j import Driver, ManagedTransaction

from cnngraph.errors import ConfigError, GraphNotFoundError, Neo4jError
from cnngraph.loader import lease, schema, waits
from cnngraph.loader.batches import DELETE_BATCH
from cnngraph.loader.guard import neo4j_errors, quiet_session

DeleteProgress = Callable[[int, int], None]
"""Called after every committed deletion batch with (positions done, positions in all)."""


MAX_NAME = 200


def check_model_name(name: str) -> str:
    """A model id must be non-blank, printable and at most ``MAX_NAME`` characters; else a clear error.

    The one check for the CLI and the API, before anything is written.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(
            "the model name is empty or blank; pass --name NAME (letters, digits, '-', '_', '.')"
        )
    if len(name) > MAX_NAME:
        raise ConfigError(f"the model name has {len(name):,} characters; use at most {MAX_NAME}")
    if not name.isprintable():
        raise ConfigError(
            f"the model name {name!r} has a control character (newline, tab...); pass --name NAME"
        )
    if name != name.strip():
        raise ConfigError(f"the model name {name!r} starts or ends with a space; pass --name NAME")
    return name


def get_model(driver: Driver, model: str, database: str | None = None) -> dict[str, Any] | None:
    """The ``:Model`` node's properties, or ``None`` when no such model is loaded."""
    with neo4j_errors(driver), quiet_session(driver, database) as session:
        record = session.run(schema.GET_MODEL, model=model).single()
    return None if record is None else dict(record["model"])


def require_model(
    driver: Driver, model: str, database: str | None = None, complete: bool = True
) -> dict[str, Any]:
    """The model's properties; a clear error when it is missing or (with ``complete``) not complete.

    Any status other than 'complete' (a load or a deletion under way or interrupted) means the
    graph is not whole, so no command may read it as a model.
    """
    props = get_model(driver, model, database)
    if props is None:
        raise GraphNotFoundError(f"model '{model}' is not loaded; 'cnngraph models' lists what is")
    if complete and props.get("status") != "complete":
        raise Neo4jError(not_loaded_message(model, props))
    return props


def not_loaded_message(model: str, props: dict[str, Any]) -> str:
    """Why a model that exists is not usable, and what finishes it."""
    if props.get("status") == "deleting":
        return (
            f"model '{model}' is being deleted (or a drop or 'load --replace' was interrupted); "
            f"run 'cnngraph drop --model {model}' or 'cnngraph load' again to finish it"
        )
    return (
        f"model '{model}' is only partly loaded (status '{props.get('status')}': a load is running or was "
        "interrupted); run 'cnngraph load' on its mapping again to complete it"
    )


def list_models(driver: Driver, database: str | None = None) -> list[dict[str, Any]]:
    """Every loaded model's properties, by id (empty list for an empty database)."""
    with neo4j_errors(driver), quiet_session(driver, database) as session:
        return [dict(r["model"]) for r in session.run(schema.LIST_MODELS)]


def drop_model(
    driver: Driver,
    model: str,
    database: str | None = None,
    batch_size: int = DELETE_BATCH,
    progress: DeleteProgress | None = None,
) -> bool:
    """Delete a model's graph in batched transactions; ``False`` when it was not there.

    Safe to interrupt at any moment and to run twice at once: see :func:`delete_graph`.
    """
    writer = lease.Writer.me()
    try:
        return delete_graph(driver, model, database, writer, batch_size, progress)
    finally:
        lease.release(driver, model, writer, database)


def delete_graph(
    driver: Driver,
    model: str,
    database: str | None,
    writer: lease.Writer,
    batch_size: int = DELETE_BATCH,
    progress: DeleteProgress | None = None,
    command: str = "drop",
) -> bool:
    """Take the model's lease and mark it 'deleting' (one committed transaction), then delete.

    Positions go in batches by nid (each with its relationships, about ``batch_size`` of them per
    transaction, each transaction checking the lease), then layers, classes and the model node.
    An interrupted deletion leaves a model marked 'deleting', which every command refuses and
    which a re-run of ``drop`` or ``load`` finishes. ``False`` when there was no such model.
    Taking the model waits at most ``waits.LOCK_WAIT`` s for a transaction that holds it; every
    other transaction is ended by the server after ``waits.WRITE_TIMEOUT`` s (``command`` names
    this run in ``SHOW TRANSACTIONS`` and in those errors).
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    meta = writer.metadata(model, command)
    mark = waits.bounded(_mark_deleting, waits.LOCK_WAIT, meta)
    with (
        lease.explained_waits(driver, model, database, writer, command, taking=True),
        neo4j_errors(driver),
        quiet_session(driver, database) as session,
    ):
        props = session.execute_write(mark, model, writer)
    if props is None:
        return False
    with (
        lease.explained_waits(driver, model, database, writer, command),
        neo4j_errors(driver),
        quiet_session(driver, database) as session,
    ):
        top = int(session.run(schema.POSITION_TOP, model=model).single(strict=True)["top"])
        per_node = 2 * int(props.get("num_relationships") or 0) / max(1, int(props.get("num_nodes") or 1))
        step = max(1, int(batch_size / max(1.0, per_node)))
        for lo in range(0, top + 1, step):
            session.execute_write(waits.bounded(_delete_range, metadata=meta), model, writer, lo, lo + step)
            if progress is not None:
                progress(min(top + 1, lo + step), top + 1)
        session.execute_write(waits.bounded(_delete_rest, metadata=meta), model, writer)
    return True


def _mark_deleting(tx: ManagedTransaction, model: str, writer: lease.Writer) -> dict[str, Any] | None:
    props = lease.take(tx, model, writer)
    if props is not None:
        tx.run(schema.MARK_DELETING, model=model).consume()
    return props


def _delete_range(tx: ManagedTransaction, model: str, writer: lease.Writer, lo: int, hi: int) -> None:
    lease.hold(tx, model, writer)
    tx.run(schema.DELETE_POSITION_RANGE, model=model, lo=lo, hi=hi).consume()


def _delete_rest(tx: ManagedTransaction, model: str, writer: lease.Writer) -> None:
    from cnngraph.loader.explanations import DELETE_EXPLANATIONS  # the model's explanations go with it

    lease.hold(tx, model, writer)
    tx.run(DELETE_EXPLANATIONS, model=model).consume()
    tx.run(schema.DELETE_MODEL, model=model).consume()
