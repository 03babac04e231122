"""``prune --dry-run`` writes nothing; prune refuses partial models and other checkpoints first.

Against the real server: a tiny trained small_cnn, mapped and loaded, pruned with --dry-run before
any scores exist; then the same with a graph of another model and with a half-loaded graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from test_loader import Interrupt, interrupt_after, synthetic_network
from typer.testing import CliRunner

from cnngraph.loader.catalog import get_model
from cnngraph.loader.writer import load_network
from cnngraph.mapping.network import MultilayerNetwork

pytestmark = pytest.mark.neo4j
runner = CliRunner()

WRITTEN = """
MATCH (p:Position {model: $model})
RETURN count(p.delta) + count(p.delta_entropy) + count(p.delta_descriptor) AS scored,
       sum(size([l IN labels(p) WHERE l STARTS WITH 'D'])) AS size_labels
"""


def tiny_checkpoint_and_mapping(cli_app: typer.Typer, folder: Path) -> tuple[Path, Path]:
    """A checkpoint of small_cnn (5 convolutions) on tiny 8x8 two-class data in ``folder``, and its
    mapping (shared with tests/test_read_races.py)."""
    rng = np.random.default_rng(0)
    labels = np.arange(32) % 2
    images = (rng.random((32, 8, 8)) * 60).astype(np.uint8)
    images[labels == 1, :4] += 180
    data = folder / "tiny.npz"
    np.savez(data, images=images, labels=labels, classes=np.array(["dark", "bright"]))
    checkpoint = folder / "model.pt"
    args = ["train", "--model", "small_cnn", "--data", str(data), "--width", "0.25", "--epochs", "1"]
    result = runner.invoke(cli_app, [*args, "--batch-size", "16", "--seed", "1", "--out", str(checkpoint)])
    assert result.exit_code == 0, result.output
    mapping = folder / "tiny-map.npz"
    args = ["map", "--checkpoint", str(checkpoint), str(data), "--images-per-class", "4"]
    result = runner.invoke(cli_app, [*args, "--out", str(mapping)])
    assert result.exit_code == 0, result.output
    return checkpoint, mapping


@pytest.fixture(scope="module")
def trained(cli_app: typer.Typer, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A checkpoint of small_cnn on tiny 8x8 two-class data, and its mapping."""
    return tiny_checkpoint_and_mapping(cli_app, tmp_path_factory.mktemp("dry"))


def written(driver: Any, model: str) -> tuple[int, int, Any]:
    records, _, _ = driver.execute_query(WRITTEN, model=model)
    props = get_model(driver, model) or {}
    return int(records[0]["scored"]), int(records[0]["size_labels"] or 0), props.get("scored_descriptor")


def test_dry_run_writes_nothing_and_matches_the_scores_cypher_writes(
    cli_app: typer.Typer, neo4j_driver: Any, neo4j_env: dict[str, str], model_id: str, trained: Any
) -> None:
    from cnngraph.queries.scoring import compute_scores, preview_scores

    checkpoint, mapping = trained
    load_network(neo4j_driver, MultilayerNetwork.load(mapping), model_id)
    args = ["prune", "--model", model_id, "--checkpoint", str(checkpoint), "--dry-run", "--json"]
    result = runner.invoke(cli_app, args, env=neo4j_env)
    assert result.exit_code == 0, result.output
    assert "computing them in memory" in result.output
    assert written(neo4j_driver, model_id) == (0, 0, None)
    preview = preview_scores(neo4j_driver, model_id)
    assert written(neo4j_driver, model_id) == (0, 0, None)
    stored = compute_scores(neo4j_driver, model_id)
    assert written(neo4j_driver, model_id)[0] > 0  # the real scoring does write: the check can fail
    np.testing.assert_array_equal(preview.layer, stored.layer)
    np.testing.assert_array_equal(preview.i, stored.i)
    for name in ("entropy", "mean", "participation"):
        np.testing.assert_allclose(preview.get(name), stored.get(name), rtol=1e-9, atol=1e-12)
    assert preview.layer_names == stored.layer_names and preview.descriptor == stored.descriptor


def test_another_models_checkpoint_is_refused_before_scoring(
    cli_app: typer.Typer, neo4j_driver: Any, neo4j_env: dict[str, str], model_id: str, trained: Any
) -> None:
    checkpoint, _ = trained
    load_network(neo4j_driver, synthetic_network([(6, 6), (3, 3)], classes=2), model_id)
    for extra in (["--dry-run"], []):
        args = ["prune", "--model", model_id, "--checkpoint", str(checkpoint), *extra]
        result = runner.invoke(cli_app, args, env=neo4j_env)
        assert result.exit_code == 2
        assert "has 2 layers but the checkpoint's model has 5 convolutions" in result.stderr
        assert "computing them" not in result.output and "Traceback" not in result.output
        assert written(neo4j_driver, model_id) == (0, 0, None)


def test_partly_loaded_model_is_refused_before_computing(
    cli_app: typer.Typer, neo4j_driver: Any, neo4j_env: dict[str, str], model_id: str, trained: Any
) -> None:
    checkpoint, mapping = trained
    with pytest.raises(Interrupt):
        load_network(
            neo4j_driver,
            MultilayerNetwork.load(mapping),
            model_id,
            batch_size=20,
            progress=interrupt_after(1),
        )
    commands = [
        ["prune", "--model", model_id, "--checkpoint", str(checkpoint)],
        ["prune", "--model", model_id, "--checkpoint", str(checkpoint), "--dry-run"],
        ["sweep", "--model", model_id],
    ]
    for args in commands:
        result = runner.invoke(cli_app, args, env=neo4j_env)
        assert result.exit_code == 2, result.output
        assert "only partly loaded" in result.stderr
        assert "computing them" not in result.output
    assert written(neo4j_driver, model_id) == (0, 0, None)
