"""One writer per model: a lease on the ``:Model`` node, checked inside every write transaction.

A writer (a load, a drop, the deletion half of ``load --replace``) holds the lease as
``m.writer`` (a random token), ``m.writer_host``, ``m.writer_pid`` and ``m.lease_until`` (server
time in ms). Each transaction that writes first locks the model node, then checks that the lease
is still its own and that the progress counter is where it expects; otherwise the transaction
fails and rolls back, so no batch is ever written twice, whatever two processes do at once.

A lease is free when nobody holds it, when it expired (its holder stopped renewing it), or when
its holder was a process on this host that no longer runs (``kill -9``): a re-run right after a
crash does not wait for the expiry.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from dataclasses import dataclass
from typing import Any

from neo4j import Driver, ManagedTransaction

from cnngraph.errors import Neo4jError
from cnngraph.loader import schema
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
        raise ModelBusyError(
            f"model '{model}' is being written by another cnngraph process (pid {props.get('writer_pid')} "
            f"on {props.get('writer_host')}); wait for it to finish, or if it was stopped, run this "
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
        session.run(schema.RELEASE_LEASE, model=model, token=writer.token).consume()


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
