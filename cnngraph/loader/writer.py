"""Load a :class:`MultilayerNetwork` into Neo4j: batched, resumable, memory bounded.

Every batch is one transaction that also advances a progress counter on the ``:Model`` node, so
the database always records exactly how far a load got. A load that died (server killed, Ctrl-C)
is resumed from there when the mapping is the same (same checksum), and replaced otherwise.

One writer per model: a load holds the model's lease (``cnngraph/loader/lease.py``) and every
batch transaction checks it and the progress counter before writing, so a second load of the same
name at the same time is refused and no batch is ever written twice. Only a load whose counters
reached the end marks the model 'complete'; any other status means "not loaded" everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from dataclasses import replace as replace_dc
from typing import Any

from neo4j import Driver, ManagedTransaction
from neo4j import exceptions as neo4j_exc

from cnngraph.errors import ConfigError, Neo4jError
from cnngraph.loader import lease, rows, schema
from cnngraph.loader.catalog import check_model_name, delete_graph, get_model
from cnngraph.loader.guard import neo4j_errors, quiet_session
from cnngraph.mapping.network import MultilayerNetwork

DEFAULT_BATCH = 5_000  # arcs per transaction (times t relationships)
# Arc x class weights per transaction at most, whatever the batch size: with 1,000 classes a
# 5,000-arc batch would be 5M relationships (per-class) or 10M list elements (compact) at once.
MAX_CLASS_ARCS = 100_000
NODE_BATCH = 20_000

Progress = Callable[[str, int, int], None]
"""Called after every committed batch with (phase, done, total); phase is 'nodes' or 'arcs', or
'deleting' (positions) while a replaced model's old graph is deleted first."""


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
    # ``seconds`` counts writing only; deleting the old graph (replace) took ``delete_seconds``.
    delete_seconds: float = 0.0
    layout: str = "per-class"
    classes: int = 0

    @property
    def relationships_per_second(self) -> float:
        per_arc = self.relationships // self.arcs if self.arcs else 0
        return self.arcs_written * per_arc / self.seconds if self.seconds > 0 else 0.0

    @property
    def class_arcs_per_second(self) -> float:
        """Arc x class weights written per second: the one rate that compares the two layouts."""
        return self.arcs_written * self.classes / self.seconds if self.seconds > 0 else 0.0


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
    layout: str = "per-class",
) -> LoadReport:
    """Write ``network`` as model ``name``; see the module docstring for resume and replace.

    ``layout`` (``schema.LAYOUTS``): 'per-class' writes one ``:ARC`` per arc and class, 'compact'
    one ``:ARC`` per arc with per-class weight lists (t times fewer relationships).
    """
    check_model_name(name)
    check_layout(layout)
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    started = time.perf_counter()
    digest = _layout_digest(rows.checksum(network), layout)
    ensure_schema(driver, database)
    existing = get_model(driver, name, database)
    _check_layout(name, existing, layout, replace)
    status = _decide(name, existing, digest, replace)
    if status == "already loaded":
        return _report(network, name, status, started, 0, layout)
    writer = lease.Writer.me()
    try:
        # Decide again on what the database holds once the lease is ours (it may have changed).
        existing = _take_lease(driver, name, database, writer)
        _check_layout(name, existing, layout, replace)
        status = _decide(name, existing, digest, replace)
        if status == "already loaded":
            return _report(network, name, status, started, 0, layout)
        deleted = 0.0
        if existing is not None and status != "resumed":
            deleting = time.perf_counter()
            # The old graph goes in transactions of about as many relationships as a batch writes.
            per_batch = batch_size * network.num_classes
            delete_graph(driver, name, database, writer, per_batch, _deleting(progress))
            existing = None
            deleted = time.perf_counter() - deleting
        writing = time.perf_counter()
        if existing is None:
            _create_model(driver, network, name, digest, database, layout, writer)
            nodes_done, arcs_done = 0, 0
        else:
            nodes_done, arcs_done = int(existing["nodes_loaded"]), int(existing["arcs_loaded"])
        _write_positions(driver, network, name, nodes_done, database, progress, writer)
        _write_arcs(driver, network, name, arcs_done, database, batch_size, progress, layout, writer)
        _complete(driver, network, name, database, writer)
    finally:
        lease.release(driver, name, writer, database)
    report = _report(network, name, status, writing, network.topology.num_arcs - arcs_done, layout)
    return replace_dc(report, delete_seconds=deleted)


def _deleting(progress: Progress | None) -> Callable[[int, int], None] | None:
    return None if progress is None else lambda done, total: progress("deleting", done, total)


def _take_lease(
    driver: Driver, name: str, database: str | None, writer: lease.Writer
) -> dict[str, Any] | None:
    """The model's fresh properties with its lease now ours, or None when there is no model yet."""
    with neo4j_errors(driver), quiet_session(driver, database) as session:
        return session.execute_write(lease.take, name, writer)


def _complete(
    driver: Driver, network: MultilayerNetwork, name: str, database: str | None, writer: lease.Writer
) -> None:
    """Mark the model complete, only if this writer still holds it and both counters are at the end."""

    def work(tx: ManagedTransaction) -> None:
        props = lease.hold(tx, name, writer, "arcs_loaded", network.topology.num_arcs)
        if int(props.get("nodes_loaded", -1)) != network.topology.num_nodes:
            raise lease.LeaseLostError(
                f"model '{name}' records {props.get('nodes_loaded')} of {network.topology.num_nodes} "
                "positions; run the load again to complete it"
            )
        tx.run(schema.COMPLETE, model=name).consume()

    with neo4j_errors(driver), quiet_session(driver, database) as session:
        session.execute_write(work)


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


def check_layout(layout: str) -> str:
    """``layout`` itself when it is one of ``schema.LAYOUTS``; a clear error otherwise."""
    if layout not in schema.LAYOUTS:
        raise ConfigError(f"unknown layout '{layout}'; use --layout {' or '.join(schema.LAYOUTS)}")
    return layout


def _layout_digest(digest: str, layout: str) -> str:
    """The stored checksum names the layout too (per-class keeps the bare one), so a half-done load
    is only ever resumed in the layout it was started in."""
    return digest if layout == "per-class" else f"{digest}:{layout}"


def _check_layout(name: str, existing: dict[str, Any] | None, layout: str, replace: bool) -> None:
    """A complete model in the other layout is never silently rewritten."""
    if existing is None or replace or existing.get("status") != "complete":
        return
    stored = str(existing.get("layout", "per-class"))
    if stored != layout:
        raise ConfigError(
            f"model '{name}' is loaded in the {stored} layout; pass --replace to load it again "
            f"as {layout}, or --name to load this one beside it"
        )


def _report(
    network: MultilayerNetwork, name: str, status: str, started: float, written: int, layout: str
) -> LoadReport:
    topo = network.topology
    return LoadReport(
        model=name,
        status=status,
        nodes=topo.num_nodes,
        arcs=topo.num_arcs,
        relationships=topo.num_arcs * (1 if layout == "compact" else network.num_classes),
        seconds=time.perf_counter() - started,
        arcs_written=written,
        layout=layout,
        classes=network.num_classes,
    )


def _create_model(
    driver: Driver,
    network: MultilayerNetwork,
    name: str,
    digest: str,
    database: str | None,
    layout: str,
    writer: lease.Writer,
) -> None:
    """The ``:Model`` node with its layers and classes, and this writer's lease, in one transaction."""
    props = rows.model_properties(network, name, digest, layout)
    params = {
        "props": props,
        "layers": rows.layer_rows(network),
        "classes": rows.class_rows(network),
        "feeds": rows.feed_rows(network),
    }

    def work(tx: ManagedTransaction) -> None:
        tx.run(schema.CREATE_MODEL, params, model=name).consume()
        tx.run(schema.TAKE_LEASE, model=name, **writer.params()).consume()

    try:
        with neo4j_errors(driver), quiet_session(driver, database) as session:
            session.execute_write(work)
    except Neo4jError as e:
        if isinstance(e.__cause__, neo4j_exc.ConstraintError):  # another process created it first
            raise lease.ModelBusyError(
                f"model '{name}' was just created by another cnngraph process that is loading it; "
                "wait for it to finish ('cnngraph models' shows its progress)"
            ) from e
        raise


def _write_positions(
    driver: Driver,
    network: MultilayerNetwork,
    name: str,
    done: int,
    database: str | None,
    progress: Progress | None,
    writer: lease.Writer,
) -> None:
    total = network.topology.num_nodes
    if progress is not None:
        progress("nodes", done, total)
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
        writer,
        done,
    )


def _write_arcs(
    driver: Driver,
    network: MultilayerNetwork,
    name: str,
    done: int,
    database: str | None,
    batch_size: int,
    progress: Progress | None,
    layout: str,
    writer: lease.Writer,
) -> None:
    total = network.topology.num_arcs
    if progress is not None:
        progress("arcs", done, total)
    compact = layout == "compact"
    batch_of = rows.compact_arc_batch if compact else rows.arc_batch
    size = max(1, min(batch_size, MAX_CLASS_ARCS // max(1, network.num_classes)))
    batches = ((stop, batch_of(network, start, stop)) for start, stop in _spans(done, total, size))
    write = schema.CREATE_ARCS_COMPACT if compact else schema.CREATE_ARCS
    _write_batches(
        driver, database, write, schema.ADVANCE_ARCS, name, batches, "arcs", total, progress, writer, done
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
    writer: lease.Writer,
    done: int,
) -> None:
    """Send each batch with its progress counter in one transaction; built lazily, one at a time."""
    counter = "nodes_loaded" if phase == "nodes" else "arcs_loaded"
    start = done
    with neo4j_errors(driver), quiet_session(driver, database) as session:
        for stop, batch in batches:
            session.execute_write(_batch_tx, write, advance, name, batch, (start, stop), writer, counter)
            start = stop
            if progress is not None:
                progress(phase, stop, total)


def _batch_tx(
    tx: ManagedTransaction,
    write: str,
    advance: str,
    model: str,
    batch: dict[str, Any],
    span: tuple[int, int],
    writer: lease.Writer,
    counter: str,
) -> None:
    """One batch and its progress counter, committed together (retried as a whole if transient).

    First the lease check: this writer still holds the model and its counter is at ``span[0]``,
    else the transaction fails before writing anything.
    """
    lease.hold(tx, model, writer, counter, span[0])
    tx.run(write, batch, model=model).consume()
    tx.run(advance, model=model, loaded=span[1]).consume()
