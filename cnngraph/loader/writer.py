"""Load a :class:`MultilayerNetwork` into Neo4j: batched, resumable, memory bounded.

Every batch is one transaction that also advances a progress counter on the ``:Model`` node, so
the database always records exactly how far a load got. A load that died (server killed, Ctrl-C)
is resumed from there when the mapping is the same (same checksum), and replaced otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from neo4j import Driver, ManagedTransaction

from cnngraph.errors import ConfigError, Neo4jError
from cnngraph.loader import rows, schema
from cnngraph.loader.catalog import delete_graph, get_model
from cnngraph.loader.guard import neo4j_errors, quiet_session
from cnngraph.mapping.network import MultilayerNetwork

DEFAULT_BATCH = 5_000  # arcs per transaction (times t relationships)
NODE_BATCH = 20_000

Progress = Callable[[str, int, int], None]
"""Called after every committed batch with (phase, done, total); phase is 'nodes' or 'arcs'."""


@dataclass(frozen=True)
class LoadReport:
    """What a load did. ``status``: 'loaded', 'resumed', 'replaced' or 'already loaded'."""

    model: str
    status: str
    nodes: int
    arcs: int
    relationships: int
    seconds: float
    arcs_written: int  # arcs written by this run (fewer than ``arcs`` when resumed)

    @property
    def relationships_per_second(self) -> float:
        classes = self.relationships // self.arcs if self.arcs else 0
        return self.arcs_written * classes / self.seconds if self.seconds > 0 else 0.0


def ensure_schema(driver: Driver, database: str | None = None) -> None:
    """Constraints and indexes (idempotent), online before anything is written."""
    with neo4j_errors(driver), quiet_session(driver, database) as session:
        for statement in schema.SCHEMA:
            session.run(statement).consume()
        session.run(schema.AWAIT_INDEXES).consume()


def load_network(
    driver: Driver,
    network: MultilayerNetwork,
    name: str,
    *,
    database: str | None = None,
    replace: bool = False,
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
) -> LoadReport:
    """Write ``network`` as model ``name``; see the module docstring for resume and replace."""
    if not name:
        raise ConfigError("the model name is empty; pass --name NAME")
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    started = time.perf_counter()
    digest = rows.checksum(network)
    ensure_schema(driver, database)
    existing = get_model(driver, name, database)
    status = _decide(name, existing, digest, replace)
    if status == "already loaded":
        return _report(network, name, status, started, 0)
    if existing is not None and status != "resumed":
        delete_graph(driver, name, database)
        existing = None
    if existing is None:
        _create_model(driver, network, name, digest, database)
        nodes_done, arcs_done = 0, 0
    else:
        nodes_done, arcs_done = int(existing["nodes_loaded"]), int(existing["arcs_loaded"])
    _write_positions(driver, network, name, nodes_done, database, progress)
    _write_arcs(driver, network, name, arcs_done, database, batch_size, progress)
    with neo4j_errors(driver):
        driver.execute_query(schema.COMPLETE, model=name, database_=database)
    return _report(network, name, status, started, network.topology.num_arcs - arcs_done)


def _decide(name: str, existing: dict[str, Any] | None, digest: str, replace: bool) -> str:
    """What to do given what the database holds: load, resume, replace, or nothing."""
    if existing is None:
        return "loaded"
    same = existing.get("checksum") == digest
    if replace:
        return "replaced"
    if existing.get("status") == "complete":
        if same:
            return "already loaded"
        raise Neo4jError(
            f"model '{name}' is already loaded from a different mapping; "
            "pass --replace to overwrite it or --name to load this one beside it"
        )
    return "resumed" if same else "replaced"


def _report(network: MultilayerNetwork, name: str, status: str, started: float, written: int) -> LoadReport:
    topo = network.topology
    return LoadReport(
        model=name,
        status=status,
        nodes=topo.num_nodes,
        arcs=topo.num_arcs,
        relationships=topo.num_arcs * network.num_classes,
        seconds=time.perf_counter() - started,
        arcs_written=written,
    )


def _create_model(
    driver: Driver, network: MultilayerNetwork, name: str, digest: str, database: str | None
) -> None:
    props = rows.model_properties(network, name, digest)
    with neo4j_errors(driver):
        driver.execute_query(
            schema.CREATE_MODEL,
            props=props,
            layers=rows.layer_rows(network),
            classes=rows.class_rows(network),
            model=name,
            database_=database,
        )


def _write_positions(
    driver: Driver,
    network: MultilayerNetwork,
    name: str,
    done: int,
    database: str | None,
    progress: Progress | None,
) -> None:
    total = network.topology.num_nodes
    batches = (
        (stop, rows.position_batch(network, start, stop)) for start, stop in _spans(done, total, NODE_BATCH)
    )
    _write_batches(
        driver,
        database,
        schema.CREATE_POSITIONS,
        schema.ADVANCE_NODES,
        name,
        batches,
        "nodes",
        total,
        progress,
    )


def _write_arcs(
    driver: Driver,
    network: MultilayerNetwork,
    name: str,
    done: int,
    database: str | None,
    batch_size: int,
    progress: Progress | None,
) -> None:
    total = network.topology.num_arcs
    if progress is not None:
        progress("arcs", done, total)
    batches = (
        (stop, rows.arc_batch(network, start, stop)) for start, stop in _spans(done, total, batch_size)
    )
    _write_batches(
        driver, database, schema.CREATE_ARCS, schema.ADVANCE_ARCS, name, batches, "arcs", total, progress
    )


def _spans(done: int, total: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of the batches that remain after the first ``done`` items."""
    for start in range(done, total, size):
        yield start, min(total, start + size)


def _write_batches(
    driver: Driver,
    database: str | None,
    write: str,
    advance: str,
    name: str,
    batches: Iterator[tuple[int, dict[str, Any]]],
    phase: str,
    total: int,
    progress: Progress | None,
) -> None:
    """Send each batch with its progress counter in one transaction; built lazily, one at a time."""
    with neo4j_errors(driver), quiet_session(driver, database) as session:
        for stop, batch in batches:
            session.execute_write(_batch_tx, write, advance, name, batch, stop)
            if progress is not None:
                progress(phase, stop, total)


def _batch_tx(
    tx: ManagedTransaction, write: str, advance: str, model: str, batch: dict[str, Any], loaded: int
) -> None:
    """One batch and its progress counter, committed together (retried as a whole if transient)."""
    tx.run(write, batch, model=model).consume()
    tx.run(advance, model=model, loaded=loaded).consume()
