"""Bounded waits: every write transaction of cnngraph carries a timeout that the server enforces.

A process that stops in the middle of a transaction (Ctrl-Z, SIGSTOP, a debugger) keeps its locks
until that transaction ends. Without a timeout it never ends, and every later load or drop of the
model waits on the ``:Model`` node's lock forever. So, on any Neo4j 5 server (the driver sends the
timeout with the transaction; the server ends the transaction when it is over, whether its client
answers or not, and its locks go with it):

- taking a model (the lease of a load or drop, creating the ``:Model`` node) waits at most
  ``LOCK_WAIT`` seconds for another transaction that holds it, then refuses, naming the holder;
- any other write transaction (a batch, a deletion step, a score write-back) is ended by the server
  after ``WRITE_TIMEOUT`` seconds: a writer stopped inside one loses it, and nothing of it is kept.

The local server (``cnngraph server start``) also sets ``db.lock.acquisition.timeout`` and
``db.transaction.timeout`` for every other client (server/.../Launcher.java, docs/GRAPH.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from neo4j import Query, unit_of_work
from neo4j import exceptions as neo4j_exc

LOCK_WAIT = 20.0
"""Seconds a load or drop waits for a model that another transaction holds, then refuses."""

WRITE_TIMEOUT = 60.0
"""Seconds the server lets one write transaction of cnngraph run (a batch takes about a second)."""

LABELS_TIMEOUT = 600.0
"""Seconds for ``size_labels.cypher`` after a score (it writes in transactions of 10,000 nodes)."""

RELEASE_TIMEOUT = 10.0
"""Seconds for giving a lease back (best effort: a lease not given back expires by itself)."""

SCHEMA_TIMEOUT = 120.0
"""Seconds for one constraint or index statement; a concurrent first load is retried until then."""

STALLED_CODES = frozenset(
    {
        "Neo.ClientError.Transaction.TransactionTimedOut",
        "Neo.ClientError.Transaction.TransactionTimedOutClientConfiguration",
        "Neo.ClientError.Transaction.LockClientStopped",
        "Neo.TransientError.Transaction.LockAcquisitionTimeout",
        "Neo.ClientError.Transaction.Terminated",
    }
)
"""What the server says when it ended a transaction for running or waiting too long."""

F = TypeVar("F", bound=Callable[..., Any])


def bounded(work: F, timeout: float | None = None, metadata: dict[str, Any] | None = None) -> F:
    """``work`` (a transaction function) with a server-enforced timeout (``WRITE_TIMEOUT`` unless
    given) and metadata that names it in ``SHOW TRANSACTIONS``."""
    seconds = WRITE_TIMEOUT if timeout is None else timeout
    return unit_of_work(timeout=seconds, metadata=metadata)(work)  # type: ignore[no-any-return]


def bounded_query(text: str, timeout: float | None = None, metadata: dict[str, Any] | None = None) -> Query:
    """An auto-commit query with a server-enforced timeout (``WRITE_TIMEOUT`` unless given)."""
    seconds = WRITE_TIMEOUT if timeout is None else timeout
    return Query(text, timeout=seconds, metadata=metadata)  # type: ignore[arg-type]


def stalled(error: BaseException | None) -> bool:
    """Whether ``error`` (or what it wraps) says the server ended a transaction that ran or waited
    too long, or that was terminated."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, neo4j_exc.Neo4jError) and error.code in STALLED_CODES:
            return True
        error = error.__cause__ or error.__context__
        seen += 1
    return False
