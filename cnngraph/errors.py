"""Error classes shared by every stage. Imports nothing from the project.

Every error a user can cause derives from :class:`CnnGraphError`; the CLI turns it into one
line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` with its noun in the right number: ``1 image``, ``2 images``, ``1 class``, ``3 classes``."""
    if n == 1:
        return f"{n} {noun}"
    return f"{n} {plural or (noun + 'es' if noun.endswith(('s', 'sh', 'ch', 'x')) else noun + 's')}"


class CnnGraphError(Exception):
    """Base class: a problem the user can fix; the message names it and what to do."""

    exit_code = 2


class ConfigError(CnnGraphError):
    """Bad option, missing tool (Java, Maven) or unusable setting."""


class ModelError(CnnGraphError):
    """The model cannot be built, loaded, traced or mapped."""


class DataError(CnnGraphError):
    """The dataset cannot be read or does not fit the model."""


class MappingFileError(CnnGraphError):
    """A saved mapping file is missing, corrupt or of an unknown version."""


class Neo4jError(CnnGraphError):
    """Talking to Neo4j failed: unreachable, bad credentials, query failure."""


class ServerError(CnnGraphError):
    """The local Neo4j server could not be built, started, stopped or inspected."""


class GraphNotFoundError(Neo4jError):
    """The requested model is not loaded in the database."""


class PruningError(CnnGraphError):
    """Selection or surgery cannot produce a working model."""
