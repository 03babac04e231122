"""The command modules, in the order they appear in --help. Each has register(app)."""

from __future__ import annotations

from types import ModuleType

from cnngraph.cli import (
    browse_cmd,
    degrees_cmd,
    drop_cmd,
    explain_cmd,
    export_cmd,
    faithfulness_cmd,
    inspect_cmd,
    load_cmd,
    map_cmd,
    method_cmd,
    models_cmd,
    plot_cmd,
    prune_cmd,
    score_cmd,
    server_cmd,
    sweep_cmd,
    train_cmd,
)

MODULES: list[ModuleType] = [
    server_cmd,
    train_cmd,
    map_cmd,
    load_cmd,
    models_cmd,
    degrees_cmd,
    score_cmd,
    browse_cmd,
    plot_cmd,
    drop_cmd,
    inspect_cmd,
    export_cmd,
    prune_cmd,
    sweep_cmd,
    method_cmd,
    explain_cmd,
    faithfulness_cmd,
]
