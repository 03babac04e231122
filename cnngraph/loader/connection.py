"""Creating a driver and turning connection failures into one-line domain errors."""

from __future__ import annotations

import ssl

from neo4j import Driver, GraphDatabase
from neo4j import exceptions as neo4j_exc

from cnngraph.errors import Neo4jError
from cnngraph.settings import Neo4jSettings

BOLT_SCHEMES = ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc")
RATE_LIMITED = "Neo.ClientError.Security.AuthenticationRateLimit"


def connect(settings: Neo4jSettings, verify: bool = True) -> Driver:
    """A driver for ``settings``; checks that the server answers and accepts the login."""
    scheme = settings.uri.split("://", 1)[0] if "://" in settings.uri else ""
    if scheme not in BOLT_SCHEMES:
        raise Neo4jError(
            f"bad Neo4j URI '{settings.uri}'; use bolt://, neo4j://, neo4j+s:// (or bolt+s, +ssc variants)"
        )
    auth = (settings.user, settings.password) if settings.password else None
    try:
        driver = GraphDatabase.driver(settings.uri, auth=auth)
    except (ValueError, neo4j_exc.ConfigurationError) as e:
        raise Neo4jError(f"bad Neo4j URI '{settings.uri}' ({e}); use bolt://, neo4j:// or neo4j+s://") from e
    if verify:
        try:
            driver.verify_connectivity()
        except BaseException as e:
            driver.close()
            raise translate(e, settings) from e
    return driver


def translate(error: BaseException, settings: Neo4jSettings) -> BaseException:
    """A driver exception as a :class:`Neo4jError` that says what to do; others unchanged."""
    if isinstance(error, neo4j_exc.AuthError):
        return Neo4jError(
            f"Neo4j at {settings.uri} refused user '{settings.user}': wrong or missing password; "
            "set NEO4J_USER / NEO4J_PASSWORD"
        )
    tls = _tls_failure(error)
    if tls is not None and isinstance(error, neo4j_exc.DriverError | OSError):
        return Neo4jError(
            f"TLS with Neo4j at {settings.uri} failed ({tls}); the server may not offer TLS (a local "
            "'cnngraph server' does not: use bolt:// or neo4j://) or its certificate is not trusted "
            "(bolt+ssc:// or neo4j+ssc:// accept a self-signed one)"
        )
    if isinstance(error, neo4j_exc.ServiceUnavailable | OSError):
        return Neo4jError(
            f"cannot reach Neo4j at {settings.uri}; start one with 'cnngraph server start' "
            "or point NEO4J_URI at a running server"
        )
    if isinstance(error, neo4j_exc.Neo4jError) and error.code == RATE_LIMITED:
        return Neo4jError(
            f"Neo4j at {settings.uri} has locked user '{settings.user}' for a few seconds after failed "
            "logins (dbms.security.auth_lock_time, 5 s by default): some other client, perhaps a web page "
            "open in a browser here, tried wrong passwords; try again, or log in as a user of your own "
            "(README, 'Getting Neo4j')"
        )
    if isinstance(error, neo4j_exc.Neo4jError):
        return Neo4jError(f"Neo4j at {settings.uri} failed: {_one_line(error.message or error)}")
    if isinstance(error, neo4j_exc.DriverError):
        return Neo4jError(f"Neo4j driver error talking to {settings.uri}: {_one_line(error)}")
    return error


def _one_line(message: object) -> str:
    """Neo4j's messages can span lines (a deadlock report lists its lock waits): one line of them."""
    return " ".join(str(message).split())


def _tls_failure(error: BaseException, depth: int = 0) -> str | None:
    """The TLS error (``ssl.SSLError``) somewhere in ``error``'s causes, said briefly; else None."""
    if depth > 8:
        return None
    if isinstance(error, ssl.SSLError):
        return f"{type(error).__name__}: {error.reason or error.strerror or error}"
    nested = list(error.exceptions) if isinstance(error, BaseExceptionGroup) else []
    for inner in [error.__cause__, error.__context__, *nested]:
        if inner is not None and inner is not error:
            found = _tls_failure(inner, depth + 1)
            if found is not None:
                return found
    return None
