"""The errors and outputs that misled a user following the README (issue 34) now say what is wrong
and what to do: another mapping under a loaded name, an ImageFolder of splits without --split, a
checkpoint whose dataset path is not here, drop without a terminal, --max-classes above the
dataset's classes, the prune table's change column, ``cnngraph.load_pruned``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from PIL import Image
from test_loader import synthetic_network
from typer.testing import CliRunner

import cnngraph
from cnngraph.datasets import absolute_source, check_recorded_source, load_dataset
from cnngraph.errors import DataError, Neo4jError
from cnngraph.loader.writer import load_network
from cnngraph.models import ModelSpec, build_model, read_checkpoint, save_checkpoint
from cnngraph.pruner.metrics import ComparisonRow, Cost, Summary, compare

runner = CliRunner()


def invoke(app: typer.Typer, *args: str, env: dict[str, str] | None = None, **kw: Any) -> Any:
    return runner.invoke(app, list(args), env={"CNNGRAPH_PROGRESS": "0", **(env or {})}, **kw)


def one_line_error(result: Any) -> str:
    lines = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


# ------------------------------------------------------------------ another mapping under a loaded name
@pytest.mark.neo4j
def test_another_mapping_in_the_other_layout_is_named_as_another_mapping(driver: Any, model_id: str) -> None:
    load_network(driver, synthetic_network([(6, 6), (3, 3)], classes=2, seed=1), model_id, layout="compact")
    other = synthetic_network([(5, 5), (5, 5)], classes=3, seed=2)
    with pytest.raises(Neo4jError) as caught:
        load_network(driver, other, model_id)  # per-class, and another mapping
    message = str(caught.value)
    assert "already loaded from a different mapping (in the compact layout)" in message
    assert "--replace" in message and "--name" in message
    assert load_network(driver, other, model_id, replace=True).status == "replaced"


# ------------------------------------------------------------------ an ImageFolder of splits
def _image_folder(root: Path) -> None:
    for split in ("train", "test"):
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for n in range(2):
                Image.fromarray(np.full((8, 8), 40 * n, dtype=np.uint8)).save(folder / f"{n}.png")


def test_a_folder_of_splits_without_split_names_split(tmp_path: Path) -> None:
    root = tmp_path / "subset"
    _image_folder(root)
    with pytest.raises(DataError) as caught:
        load_dataset(root)
    message = str(caught.value)
    assert "split folders (test, train)" in message and "--split train" in message, message
    assert "--test-split" in message and "\n" not in message
    assert len(load_dataset(root, "train")) == 4


def test_train_on_a_folder_of_splits_without_split_says_split(cli_app: typer.Typer, tmp_path: Path) -> None:
    root = tmp_path / "subset"
    _image_folder(root)
    result = invoke(cli_app, "train", "--data", str(root), "--epochs", "1", "--out", str(tmp_path / "m.pt"))
    assert result.exit_code == 2 and "--split" in one_line_error(result)
    assert not (tmp_path / "m.pt").exists()


# ------------------------------------------------------------------ dataset paths in checkpoints
def test_train_records_the_dataset_as_an_absolute_path(
    cli_app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / "tiny.npz", images=rng.uniform(size=(20, 8, 8)).astype(np.float32),
             labels=np.arange(20) % 2)  # fmt: skip
    monkeypatch.chdir(tmp_path)
    result = invoke(cli_app, "train", "--data", "data/tiny.npz", "--epochs", "1", "--out", "m.pt")
    assert result.exit_code == 0, result.output
    _, info = read_checkpoint(tmp_path / "m.pt")
    assert info["data"]["source"] == str((tmp_path / "data" / "tiny.npz").resolve())
    assert absolute_source("builtin:digits") == "builtin:digits"
    assert absolute_source("nowhere/x.npz") == "nowhere/x.npz"
    cifar = tmp_path / "cifar-100-python"
    cifar.mkdir()
    assert absolute_source("cifar-100-python?labels=coarse") == f"{cifar.resolve()}?labels=coarse"


def test_a_recorded_dataset_that_is_not_here_names_the_checkpoint_and_data(
    cli_app: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = ModelSpec("small_cnn", 2, 1, 8)
    checkpoint = tmp_path / "old.pt"  # as 'cnngraph train' wrote it before paths were made absolute
    save_checkpoint(checkpoint, build_model(spec), {"spec": spec.to_dict(), "data": {"source": "imagenet"}})
    monkeypatch.chdir(tmp_path)
    env = {"NEO4J_URI": "bolt://127.0.0.1:9", "NEO4J_PASSWORD": "x"}  # refused before any connection
    for args in (["prune", "--model", "m", "--checkpoint", str(checkpoint)],
                 ["explain", "--checkpoint", str(checkpoint), "--index", "0"]):  # fmt: skip
        result = invoke(cli_app, *args, env=env)
        line = one_line_error(result)
        assert result.exit_code == 2
        assert f"checkpoint '{checkpoint}' records the dataset 'imagenet'" in line, line
        assert "relative to the folder where 'cnngraph train' ran" in line and "--data" in line
    with pytest.raises(DataError, match="--data"):
        check_recorded_source(str(tmp_path / "gone"), checkpoint)
    check_recorded_source("builtin:digits", checkpoint)


# ------------------------------------------------------------------ drop in a script
def test_drop_without_an_answer_says_to_pass_yes(cli_app: typer.Typer) -> None:
    env = {"NEO4J_URI": "bolt://127.0.0.1:9", "NEO4J_PASSWORD": "x"}
    result = invoke(cli_app, "drop", "--model", "my model", env=env)  # no input: end of file at once
    assert result.exit_code == 2
    line = one_line_error(result)
    assert "got no answer" in line and "cnngraph drop --model 'my model' --yes" in line
    assert "Aborted" not in result.output
    assert invoke(cli_app, "drop", "--model", "x", env=env, input="n\n").exit_code == 1  # an answer: no


# ------------------------------------------------------------------ --max-classes above the classes
def test_max_classes_above_the_datasets_caps_with_a_note(cli_app: typer.Typer, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    data = tmp_path / "three.npz"
    np.savez(data, images=rng.uniform(size=(12, 8, 8)).astype(np.float32), labels=np.arange(12) % 3)
    out = tmp_path / "m.npz"
    result = invoke(cli_app, "map", "small_cnn", str(data), "--max-classes", "100", "--images-per-class", "2",
                    "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (
        "note: --max-classes 100 is more than the dataset's 3 classes; mapping all of them" in result.output
    )
    assert cnngraph.MultilayerNetwork.load(out).num_classes == 3


# ------------------------------------------------------------------ the prune table
def _summary(accuracy: float, parameters: int) -> Summary:
    from cnngraph.pruner.metrics import Metrics

    metrics = Metrics(accuracy=accuracy, precision=accuracy, recall=accuracy, confusion=np.eye(2))
    return Summary(metrics, Cost(parameters, 100, 1.0, 3), 2.0)


def test_the_change_of_a_rate_is_in_percentage_points() -> None:
    from cnngraph.cli.prune_cmd import comparison_table

    rows = {r.key: r for r in compare(_summary(0.10, 1000), _summary(0.105, 750))}
    accuracy = rows["accuracy"]
    assert accuracy.change_pp == pytest.approx(0.5) and accuracy.change_pct == pytest.approx(5.0)
    assert accuracy.change_text() == "+0.50 pp"
    assert rows["parameters"].change_pp is None and rows["parameters"].change_text() == "-25.00%"
    assert accuracy.to_dict()["change_pp"] == pytest.approx(0.5)
    assert ComparisonRow("accuracy", "a", 0.0, float("nan"), None, "pct").change_text() == "-"
    from rich.console import Console

    console = Console(width=120, record=True)
    console.print(comparison_table(list(rows.values())))
    text = console.export_text()
    assert "+0.50 pp" in text and "-25.00%" in text and "+5.00%" not in text
    assert "percentage points (pp)" in text


def test_load_pruned_is_part_of_the_api(tmp_path: Path) -> None:
    from cnngraph.pruner import surgery

    assert cnngraph.load_pruned is surgery.load_pruned and "load_pruned" in cnngraph.__all__
    with pytest.raises(Exception, match=r"does not exist|No such file|cannot"):
        cnngraph.load_pruned(tmp_path / "missing.pt")


def test_demo_uses_the_running_servers_own_uri() -> None:
    """scripts/demo.sh takes the Bolt URI of a local server it reuses from that server's state (a
    non-default port works); tests/test_readme_figures.py runs the demo that way."""
    text = (Path(__file__).resolve().parents[1] / "scripts" / "demo.sh").read_text()
    assert '["bolt_uri"]' in text and "export NEO4J_URI" in text
