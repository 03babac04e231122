"""``cnngraph models``: what the listing says for each load state and layout (no database needed)."""

from __future__ import annotations

from cnngraph.cli.models_cmd import summarise


def _props(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "id": "m", "num_layers": 3, "num_classes": 10, "num_nodes": 100, "num_arcs": 400,
        "num_relationships": 4000, "status": "complete", "arcs_loaded": 400, "layout": "per-class",
    }  # fmt: skip
    return {**base, **kw}


def test_progress_counts_arcs_on_both_layouts() -> None:
    per_class = summarise(_props(status="loading", arcs_loaded=100))
    compact = summarise(_props(status="loading", arcs_loaded=100, layout="compact", num_relationships=400))
    assert per_class["status"] == compact["status"] == "loading 25%"
    assert compact["layout"] == "compact" and compact["relationships"] == 400 and compact["arcs"] == 400


def test_a_model_being_deleted_shows_no_percentage() -> None:
    assert summarise(_props(status="deleting", arcs_loaded=0))["status"] == "deleting"


def test_a_complete_model_lists_arcs_and_relationships() -> None:
    row = summarise(_props())
    assert row["status"] == "complete" and row["arcs"] == 400 and row["relationships"] == 4000
