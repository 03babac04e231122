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

import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from dataclasses import replace as replace_dc
from typing import Any

from neo4j import Driver, ManagedTransaction
from neo4j import exceptions as neo4j_exc

from cnngraph.errors import ConfigError, Neo4jError
from cnngraph.loader import lease, rows, schema, waits
from cnngraph.loader.batches import DEFAULT_BATCH
from cnngraph.loader.catalog import check_model_name, delete_graph, get_model
from cnngraph.loader.guard import neo4j_errors, quiet_session
from cnngraph.mapping.network import MultilayerNetwork

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


SCHEMA_STATE = "SHOW INDEXES YIELD name, state WHERE name STARTS WITH 'cnngraph_' RETURN name, state"

# What a constraint or index statement says when another process creates the same one at that
# moment (into an empty database, several first loads at once): a deadlock on the label's schema
# lock, or "an equivalent index already exists". Then it exists, or the statement is tried again.
SCHEMA_RACES = frozenset(
    {
        "Neo.ClientError.Schema.EquivalentSchemaRuleAlreadyExists",
        "Neo.ClientError.Schema.IndexAlreadyExists",
        "Neo.ClientError.Schema.IndexWithNameAlreadyExists",
        "Neo.ClientError.Schema.ConstraintAlreadyExists",
        "Neo.ClientError.Schema.ConstraintWithNameAlreadyExists",
    }
)


def ensure_schema(
    driver: Driver, database: str | None = None, statements: Sequence[str] = schema.SCHEMA
) -> None:
    """Constraints and indexes (``CREATE ... name IF NOT EXISTS`` statements, by default the
    graph's), online before anything is written; safe to run by several processes
    at once. Those that exist (listed by ``SHOW INDEXES``, which takes no lock) are left alone, so a
    load never waits on a schema lock that another writer's open transaction holds; a statement that
    loses a race with another process's is checked again and retried. Waiting for them to come
    online polls ``SHOW INDEXES`` between transactions: ``db.awaitIndexes`` waits inside one, and
    several of those at once keep another process's new constraint from coming online (until they
    time out). All of it within ``waits.SCHEMA_TIMEOUT``."""
    names = [statement.split()[2] for statement in statements]
    deadline = time.monotonic() + waits.SCHEMA_TIMEOUT
    with neo4j_errors(driver), quiet_session(driver, database) as session:
        state = _schema_state(session)
        for name, statement in zip(names, statements, strict=True):
            tries = 0
            while name not in state:
                left = deadline - time.monotonic()
                try:
                    session.run(waits.bounded_query(statement, max(1.0, left))).consume()
                except neo4j_exc.Neo4jError as e:
                    if not _schema_race(e) or left <= 0:
                        raise
                    tries += 1
                    time.sleep(random.uniform(0.05, 0.2) * min(tries, 5))
                state = _schema_state(session)
        await_online(session, names, deadline)


def await_online(session: Any, names: list[str], deadline: float) -> None:
    """Poll ``SHOW INDEXES`` (each poll its own short transaction) until ``names`` are ONLINE."""
    delay = 0.02
    while True:
        state = _schema_state(session)
        pending = {name: state.get(name) for name in names if state.get(name) != "ONLINE"}
        if not pending:
            return
        if any(s == "FAILED" for s in pending.values()) or time.monotonic() > deadline:
            listed = ", ".join(f"{k}: {v}" for k, v in pending.items())
            raise Neo4jError(
                f"Neo4j's indexes for cnngraph are not online ({listed}); 'SHOW INDEXES' in Neo4j "
                "Browser says more; drop a FAILED one and load again"
            )
        time.sleep(delay)
        delay = min(0.5, delay * 2)


def _schema_state(session: Any) -> dict[str, str]:
    return {str(r["name"]): str(r["state"]) for r in session.run(SCHEMA_STATE)}


def _schema_race(error: neo4j_exc.Neo4jError) -> bool:
    return error.code in SCHEMA_RACES or isinstance(error, neo4j_exc.TransientError)


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
    _check_layout(name, existing, digest, layout, replace)
    status = _decide(name, existing, digest, replace)
    if status == "already loaded":
        return _report(network, name, status, started, 0, layout)
    writer = lease.Writer.me()
    try:
        # Decide again on what the database holds once the lease is ours (it may have changed).
        existing = _take_lease(driver, name, database, writer)
        _check_layout(name, existing, digest, layout, replace)
        status = _decide(name, existing, digest, replace)
        if status == "already loaded":
            return _report(network, name, status, started, 0, layout)
        deleted = 0.0
        if existing is not None and status != "resumed":
            deleting = time.perf_counter()
            # The old graph goes in transactions of about as many relationships as a batch writes.
            per_batch = batch_size * network.num_classes
            delete_graph(driver, name, database, writer, per_batch, _deleting(progress), "load")
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
    """The model's fresh properties with its lease now ours, or None when there is no model yet.

    Waits at most ``waits.LOCK_WAIT`` s for a transaction that holds the model, then refuses."""
    take = waits.bounded(lease.take, waits.LOCK_WAIT, writer.metadata(name, "load"))
    with (
        lease.explained_waits(driver, name, database, writer, "load", taking=True),
        neo4j_errors(driver),
        quiet_session(driver, database) as session,
    ):
        return session.execute_write(take, name, writer)


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

    with (
        lease.explained_waits(driver, name, database, writer, "load"),
        neo4j_errors(driver),
        quiet_session(driver, database) as session,
    ):
        session.execute_write(waits.bounded(work, metadata=writer.metadata(name, "load")))


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


def _check_layout(
    name: str, existing: dict[str, Any] | None, digest: str, layout: str, replace: bool
) -> None:
    """A complete model in the other layout is never silently rewritten; when it is another mapping
    too, that is what the error says (``_decide`` refuses another mapping in the same layout)."""
    if existing is None or replace or existing.get("status") != "complete":
        return
    stored = str(existing.get("layout", "per-class"))
    if stored == layout:
        return
    if str(existing.get("checksum", "")).split(":")[0] != digest.split(":")[0]:
        raise Neo4jError(
            f"model '{name}' is already loaded from a different mapping (in the {stored} layout); "
            "pass --replace to overwrite it or --name to load this one beside it"
        )
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
        with (
            lease.explained_waits(driver, name, database, writer, "load", taking=True),
            neo4j_errors(driver),
            quiet_session(driver, database) as session,
        ):
            session.execute_write(waits.bounded(work, waits.LOCK_WAIT, writer.metadata(name, "load")))
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
    work = waits.bounded(_batch_tx, metadata=writer.metadata(name, "load"))
    with (
        lease.explained_waits(driver, name, database, writer, "load"),
        neo4j_errors(driver),
        quiet_session(driver, database) as session,
    ):
        for stop, batch in batches:
            session.execute_write(work, write, advance, name, batch, (start, stop), writer, counter)
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
