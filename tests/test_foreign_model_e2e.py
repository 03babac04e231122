"""A model trained elsewhere: ``file.py:factory`` + a plain state dict through the whole chain.

map -> load -> score -> prune -> fine-tune, against the real Neo4j; the architecture comes from
the mapping recorded in the graph (or ``--arch``), the data from ``--data``.
"""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from cnngraph.loader.catalog import drop_model
from cnngraph.models import ModelSpec, build_model
from cnngraph.pruner.surgery import load_pruned

runner = CliRunner()

NET = textwrap.dedent(
    """
    from torch import nn

    def net():
        return nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
            nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
            nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(4 * 8 * 8, 2),
        )
    """
)


def _invoke(app: typer.Typer, env: dict[str, str], *args: str | Path) -> Any:
    return runner.invoke(app, [str(a) for a in args], env=env)


@pytest.mark.neo4j
def test_plain_state_dict_model_maps_loads_scores_and_prunes(
    cli_app: typer.Typer, neo4j_env: dict[str, str], neo4j_driver: Any, tmp_path: Path
) -> None:
    source = tmp_path / "my.py"
    source.write_text(NET)
    factory = f"{source}:net"
    torch.manual_seed(0)
    checkpoint = tmp_path / "my.pt"
    torch.save(build_model(ModelSpec(factory)).state_dict(), checkpoint)  # a bare state dict
    rng = np.random.default_rng(0)
    labels = np.arange(40) % 2
    images = (rng.random((40, 8, 8)) * 80).astype(np.uint8)
    images[labels == 1, :, :4] += 150
    data = tmp_path / "data.npz"
    np.savez(data, images=images, labels=labels, classes=np.array(["left", "right"]))
    model = f"foreign-{uuid.uuid4().hex[:8]}"
    mapping = tmp_path / f"{model}.npz"
    try:
        steps = [
            ("map", factory, data, "--checkpoint", checkpoint, "--out", mapping, "--device", "cpu"),
            ("load", mapping),
            ("score", "--model", model),
        ]
        for step in steps:
            result = _invoke(cli_app, neo4j_env, *step)
            assert result.exit_code == 0, (step[0], result.output)

        no_data = _invoke(cli_app, neo4j_env, "prune", "--model", model, "--checkpoint", checkpoint)
        assert no_data.exit_code == 2 and "give --data" in no_data.stderr

        # The sweep (with the checkpoint: it rebuilds the model too) says which gamma removes
        # some but not all convolutions; prune at that gamma must remove exactly those.
        sweep: list[str | Path] = ["sweep", "--model", model, "--checkpoint", checkpoint, "--data", data]
        sweep += ["--gamma-start", "0.9", "--gamma-stop", "1.2", "--gamma-step", "0.01"]
        result = _invoke(cli_app, neo4j_env, *sweep, "--rule", "fraction:0.5", "--json")
        assert result.exit_code == 0, result.output
        rows = json.loads(result.stdout)["rows"]
        gamma, removed = next((r["gamma"], r["removed"]) for r in rows if 0 < len(r["removed"]) < 3)

        out = tmp_path / "pruned"
        base: list[str | Path] = ["prune", "--model", model, "--checkpoint", checkpoint, "--data", data]
        args = [*base, "--epochs", "1", "--gamma", str(gamma), "--rule", "fraction:0.5"]
        result = _invoke(cli_app, neo4j_env, *args, "--latency-repeats", "2", "--out", out, "--json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["files"]["pruned.pt"] == str(out / "pruned.pt") and (out / "report.json").is_file()
        recipe = json.loads((out / "pruned.json").read_text())
        assert recipe["spec"]["source"] == factory  # the architecture recorded with the mapping
        assert recipe["removed"] == removed
        pruned = load_pruned(out / "pruned.pt")
        assert pruned(torch.zeros(2, 1, 8, 8)).shape == (2, 2)
        assert sum(isinstance(m, torch.nn.Conv2d) for m in pruned.modules()) < 3

        dry = [*base, "--dry-run", "--json"]
        explicit = _invoke(cli_app, neo4j_env, *dry, "--arch", factory)
        recorded = _invoke(cli_app, neo4j_env, *dry)
        assert explicit.exit_code == 0 and recorded.exit_code == 0, explicit.output + recorded.output
        assert json.loads(explicit.stdout) == json.loads(recorded.stdout)

        wrong = _invoke(cli_app, neo4j_env, *dry, "--arch", "small_cnn")
        assert wrong.exit_code == 2 and "does not fit" in wrong.stderr
    finally:
        drop_model(neo4j_driver, model)
