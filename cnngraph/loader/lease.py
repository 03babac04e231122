"""One writer per model: a lease on the ``:Model`` node, checked inside every write transaction.

A writer (a load, a drop, the deletion half of ``load --replace``) holds the lease as
``m.writer`` (a random token), ``m.writer_host``, ``m.writer_pid`` and ``m.lease_until`` (server
time in ms). Each transaction that writes first locks the model node, then checks that the lease
is still its own and that the progress counter is where it expects; otherwise the transaction
fails and rolls back, so no batch is ever written twice, whatever two processes do at once.

A lease is free when nobody holds it, when it expired (its holder stopped renewing it), or when
its holder was a process on this host that no longer runs (``kill -9``): a re-run right after a
crash does not wait for the expiry.

No wait is unbounded (``cnngraph/loader/waits.py``): taking the lease waits at most
``waits.LOCK_WAIT`` for a transaction that holds the model node (a writer stopped inside one, by
Ctrl-Z or SIGSTOP), then refuses and names it (:func:`explained_waits`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neo4j import Driver, ManagedTransaction

from cnngraph.errors import Neo4jError
from cnngraph.loader import schema, waits
from cnngraph.loader.guard import quiet_session
from cnngraph.processes import process_alive

LEASE_MS = 60_000
"""How long a lease lasts without renewal; every batch renews it."""


class ModelBusyError(Neo4jError):
    """Another live process is writing (loading or deleting) the same model."""


class LeaseLostError(Neo4jError):
    """This process's lease was taken over or its model deleted while it was writing."""


@dataclass(frozen=True)
class Writer:
    """Who writes: a token unique to one command run, plus where it runs (to spot dead holders)."""

    token: str
    host: str
    pid: int

    @classmethod
    def me(cls) -> Writer:
        return cls(token=secrets.token_hex(16), host=socket.gethostname(), pid=os.getpid())

    def params(self) -> dict[str, Any]:
        return {"token": self.token, "host": self.host, "pid": self.pid, "ttl": LEASE_MS}

    def metadata(self, model: str, command: str) -> dict[str, Any]:
        """Transaction metadata: ``SHOW TRANSACTIONS`` names who holds what."""
        return {"app": "cnngraph", "command": command, "model": model, "pid": self.pid, "host": self.host}


def take(tx: ManagedTransaction, model: str, writer: Writer) -> dict[str, Any] | None:
    """Lock the model node and take its lease; its fresh properties, or None when there is none.

    Raises :class:`ModelBusyError` (the transaction rolls back) when another live writer holds it.
    """
    props, now = _locked(tx, model)
    if props is None:
        return None
    holder = props.get("writer")
    if holder is not None and holder != writer.token and not _is_free(props, now):
        left = max(0, int(props.get("lease_until", now)) - now) / 1000.0
        pid, host = props.get("writer_pid"), props.get("writer_host")
        if _stopped(pid, host):
            raise ModelBusyError(
                f"model '{model}' is being written by another cnngraph process (pid {pid} on {host}), which "
                f"is stopped (Ctrl-Z or SIGSTOP): resume it ('fg' or 'kill -CONT {pid}') or end it "
                f"('kill {pid}'), or run this again after its lease expires ({left:.0f} s) to take it over"
            )
        raise ModelBusyError(
            f"model '{model}' is being written by another cnngraph process (pid {pid} "
            f"on {host}); wait for it to finish, or if it was stopped, run this "
            f"again after its lease expires ({left:.0f} s)"
        )
    tx.run(schema.TAKE_LEASE, model=model, **writer.params()).consume()
    return props


def hold(
    tx: ManagedTransaction, model: str, writer: Writer, counter: str | None = None, start: int = 0
) -> dict[str, Any]:
    """Lock the model node, check the lease is ours (and ``counter == start``), renew it.

    Call first in every write transaction; on failure it raises and the transaction rolls back.
    """
    props, _ = _locked(tx, model)
    if props is None or props.get("writer") != writer.token:
        raise LeaseLostError(
            f"model '{model}' was dropped or taken over by another cnngraph process while this one "
            "was writing it; nothing more was written ('cnngraph models' shows its state)"
        )
    if counter is not None and int(props.get(counter, -1)) != start:
        raise LeaseLostError(
            f"model '{model}' records {props.get(counter)} {counter.replace('_', ' ')}, not {start}: "
            "another process wrote it; nothing more was written, run the load again to resume"
        )
    tx.run(schema.RENEW_LEASE, model=model, ttl=LEASE_MS).consume()
    return props


def release(driver: Driver, model: str, writer: Writer, database: str | None) -> None:
    """Give the lease back (best effort: an expired or dead holder's lease is free anyway)."""
    # Never mask the error that ended the write: a lease not given back expires by itself.
    with contextlib.suppress(Exception), quiet_session(driver, database) as session:
        query = waits.bounded_query(
            schema.RELEASE_LEASE, waits.RELEASE_TIMEOUT, writer.metadata(model, "release")
        )
        session.run(query, model=model, token=writer.token).consume()


@contextlib.contextmanager
def explained_waits(
    driver: Driver, model: str, database: str | None, writer: Writer, command: str, taking: bool = False
) -> Iterator[None]:
    """Turn "the server ended this transaction" (it waited or ran past its timeout) into one line:
    while ``taking`` the model, :class:`ModelBusyError` naming what holds it; else what happened to
    this ``command`` and how to go on. Wrap it around ``neo4j_errors``."""
    try:
        yield
    except Neo4jError as e:
        if not waits.stalled(e):
            raise
        if taking:
            raise ModelBusyError(blocked_message(driver, model, database, writer)) from e
        again = {
            "load": "run the same 'cnngraph load' again to resume it",
            "drop": f"run 'cnngraph drop --model {model}' again to finish it",
        }.get(command, "run it again")
        raise Neo4jError(
            f"Neo4j ended a transaction of this {command} of model '{model}' after it ran or waited for "
            f"{waits.WRITE_TIMEOUT:.0f} s (this process was stopped, e.g. by Ctrl-Z, or another transaction "
            f"held the model); nothing of that transaction was kept: {again}"
        ) from e


def blocked_message(driver: Driver, model: str, database: str | None, writer: Writer) -> str:
    """What holds the model after a wait of ``waits.LOCK_WAIT`` seconds, and what to do about it."""
    holder = _holder(driver, model, database, writer)
    if holder is None:
        return (
            f"model '{model}' is locked by another transaction that has not finished in "
            f"{waits.LOCK_WAIT:.0f} s (not a cnngraph writer; 'SHOW TRANSACTIONS' in Neo4j Browser lists "
            "it, 'TERMINATE TRANSACTION' ends it); run this again once it has finished"
        )
    command, pid, host = holder
    state = (
        ", which is stopped (Ctrl-Z or SIGSTOP)" if _stopped(pid, host) else ", which is not making progress"
    )
    return (
        f"model '{model}' is being written by a cnngraph {command} (pid {pid} on {host}){state}: it has "
        f"held the model for over {waits.LOCK_WAIT:.0f} s; resume it ('fg' or 'kill -CONT {pid}') or end "
        f"it ('kill {pid}'). Neo4j ends its transaction {waits.WRITE_TIMEOUT:.0f} s after it began and its "
        f"lease lapses {LEASE_MS // 1000} s after its last batch; run this again then to take the model over"
    )


HOLDERS = """
SHOW TRANSACTIONS YIELD metaData, status
WHERE metaData.app = 'cnngraph' AND metaData.model = $model AND NOT status STARTS WITH 'Blocked'
  AND (metaData.pid <> $pid OR metaData.host <> $host)
RETURN metaData.command AS command, metaData.pid AS pid, metaData.host AS host
LIMIT 1
"""


def _holder(driver: Driver, model: str, database: str | None, writer: Writer) -> tuple[str, Any, Any] | None:
    """(command, pid, host) of the cnngraph transaction that holds the model, else of the lease."""
    with contextlib.suppress(Exception), quiet_session(driver, database) as session:
        query = waits.bounded_query(HOLDERS, waits.RELEASE_TIMEOUT)
        record = session.run(query, model=model, pid=writer.pid, host=writer.host).single()
        if record is not None:
            return str(record["command"]), record["pid"], record["host"]
    with contextlib.suppress(Exception), quiet_session(driver, database) as session:
        query = waits.bounded_query(schema.GET_MODEL, waits.RELEASE_TIMEOUT)
        found = session.run(query, model=model).single()
        props = {} if found is None else dict(found["model"])
        if props.get("writer") not in (None, writer.token):
            return "writer", props.get("writer_pid"), props.get("writer_host")
    return None


def _stopped(pid: Any, host: Any) -> bool:
    """Whether ``pid`` is a process of this host that is stopped (state T: Ctrl-Z, SIGSTOP)."""
    if host != socket.gethostname() or not isinstance(pid, int):
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("T", "t")


def _locked(tx: ManagedTransaction, model: str) -> tuple[dict[str, Any] | None, int]:
    """Write-lock the model node (held until the transaction ends), then read it fresh."""
    tx.run(schema.LOCK_MODEL, model=model).consume()
    record = tx.run(schema.GET_MODEL_AT, model=model).single()
    if record is None or record["model"] is None:
        return None, 0
    return dict(record["model"]), int(record["now"])


def _is_free(props: dict[str, Any], now: int) -> bool:
    """Expired, or held by a process of this host that has gone."""
    if int(props.get("lease_until") or 0) < now:
        return True
    pid = props.get("writer_pid")
    if props.get("writer_host") != socket.gethostname() or not isinstance(pid, int):
        return False
    return pid != os.getpid() and not process_alive(pid)
