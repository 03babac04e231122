"""Cypher over the loaded graph: degrees, node scores, summaries. Query text lives in ``*.cypher``."""

from __future__ import annotations

from functools import cache
from importlib import resources

QUERY_NAMES = (
    "degrees",
    "degrees_compact",
    "scores",
    "scores_compact",
    "size_labels",
    "stored_scores",
    "layer_summary",
    "top_nodes",
    "neighbourhood",
)


@cache
def cypher(name: str) -> str:
    """The text of ``cnngraph/queries/<name>.cypher`` (the same file a user pastes into Browser)."""
    if name not in QUERY_NAMES:
        raise KeyError(f"no query '{name}'; have {', '.join(QUERY_NAMES)}")
    return resources.files(__package__).joinpath(f"{name}.cypher").read_text(encoding="utf-8")


def for_layout(name: str, layout: str | None) -> str:
    """The text of query ``name`` for a model stored in ``layout`` (``<name>_compact`` when one exists)."""
    compact = f"{name}_compact"
    return cypher(compact if layout == "compact" and compact in QUERY_NAMES else name)


def style_path() -> str:
    """Filesystem path of the Neo4j Browser style sheet shipped with the package."""
    return str(resources.files(__package__).joinpath("style.grass"))
