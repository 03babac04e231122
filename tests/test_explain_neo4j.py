"""``explain --load`` against the real Neo4j: the explanation's node and highlights, replace, race, drop."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from cnngraph.datasets import load_dataset
from cnngraph.explain.api import explain
from cnngraph.loader.catalog import drop_model
from cnngraph.loader.explanations import count_explanations, explanation_rows, write_explanations
from cnngraph.loader.writer import load_network
from cnngraph.mapping.api import map_model
from cnngraph.models import ModelSpec, build_model, save_checkpoint

SIZE = 12
runner = CliRunner()


def highlight_counts(driver: Any, model: str) -> list[tuple[str, int]]:
    records, _, _ = driver.execute_query(
        "MATCH (e:Explanation {model: $model}) "
        "OPTIONAL MATCH (e)-[h:HIGHLIGHTS]->(p:Position {model: $model}) "
        "RETURN e.image AS image, count(h) AS n ORDER BY image",
        model=model,
    )
    return [(r["image"], r["n"]) for r in records]


@pytest.mark.neo4j
def test_explain_load_replace_race_and_drop(
    cli_app: typer.Typer, driver: Any, model_id: str, neo4j_env: dict[str, str], tmp_path: Path
) -> None:
    spec = ModelSpec("resnet20", num_classes=3, in_channels=3, input_size=SIZE, width=0.25)
    torch.manual_seed(0)
    net = build_model(spec).eval()
    checkpoint = save_checkpoint(tmp_path / "r.pt", net, {"spec": spec.to_dict()})
    rng = np.random.default_rng(0)
    data = tmp_path / "data.npz"
    pixels = rng.integers(0, 256, (6, SIZE, SIZE, 3), dtype=np.uint8)
    np.savez(data, images=pixels, labels=np.array([0, 1, 2, 0, 1, 2]), classes=np.array(["a", "b", "c"]))
    dataset = load_dataset(data)
    load_network(driver, map_model(net, dataset, images_per_class=2, spec=spec), model_id)
    image = tmp_path / "x.png"
    Image.fromarray(pixels[0]).save(image)

    def cli(*extra: str | Path) -> Any:
        args = [
            "explain",
            image,
            "--checkpoint",
            checkpoint,
            "--load",
            "--model",
            model_id,
            "--out",
            tmp_path / "o",
        ]
        return runner.invoke(cli_app, [str(a) for a in [*args, *extra]], env=neo4j_env)

    result = cli()
    assert result.exit_code == 0, result.output
    assert "MATCH (e:Explanation" in result.stdout
    (expected,) = explain(net, dataset.images[0], class_names=dataset.class_names)
    rows = explanation_rows(
        image=str(image.resolve()), label=expected.explained_name, label_index=expected.explained,
        predicted=expected.predicted_name, predicted_index=expected.predicted,
        probability=expected.probability, options=expected.options, scores=expected.scores,
        node_offsets=_offsets(net),
    )  # fmt: skip
    assert highlight_counts(driver, model_id) == [(str(image.resolve()), len(rows.nid))]
    assert 0 < len(rows.nid) < expected.scores.size
    records, _, _ = driver.execute_query(
        "MATCH (e:Explanation {model: $model})-[h:HIGHLIGHTS]->(p:Position) RETURN e {.*} AS e, "
        "collect([p.nid, h.score]) AS pairs",
        model=model_id,
    )
    (record,) = records
    assert (
        record["e"]["label"] == expected.explained_name
        and record["e"]["predicted"] == expected.predicted_name
    )
    assert record["e"]["probability"] == pytest.approx(expected.probability)
    assert '"max_per_node": 9' in record["e"]["options"]
    got = dict(sorted(record["pairs"]))
    assert list(got) == rows.nid and np.allclose(list(got.values()), rows.score)

    # the printed Browser query runs as printed and draws positions layer by layer
    query = result.stdout[result.stdout.index("MATCH (e:Explanation") :]
    shown, _, _ = driver.execute_query(query)
    layers = [r["layer"] for r in shown]
    assert layers == sorted(layers) and len(set(layers)) > 1

    # again, with other options: replaced, not added
    assert cli("--quantile", "0.5").exit_code == 0
    ((_, n),) = highlight_counts(driver, model_id)
    assert n < len(rows.nid)

    # two copies at once: still one explanation, its highlights once
    props = driver.execute_query("MATCH (m:Model {id: $m}) RETURN m.checksum AS c", m=model_id)[0][0]
    errors: list[BaseException] = []

    def write() -> None:
        try:
            write_explanations(driver, model_id, props["c"], [rows])
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=write) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert highlight_counts(driver, model_id) == [(str(image.resolve()), len(rows.nid))]

    # a model that is not this checkpoint's mapping is refused, nothing written
    other = f"test-{uuid.uuid4().hex[:10]}"
    small = build_model(ModelSpec("small_cnn", 3, 3, SIZE, 0.25)).eval()
    try:
        load_network(driver, map_model(small, dataset, images_per_class=2), other)
        result = runner.invoke(
            cli_app,
            [str(a) for a in ["explain", image, "--checkpoint", checkpoint, "--load", "--model", other,
                              "--out", tmp_path / "o2"]],
            env=neo4j_env,
        )  # fmt: skip
        assert result.exit_code == 2 and "is not the mapping of this checkpoint" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert count_explanations(driver, other) == 0 and not (tmp_path / "o2").exists()
    finally:
        drop_model(driver, other)

    # drop removes the model's explanations
    assert drop_model(driver, model_id)
    assert count_explanations(driver, model_id) == 0


def _offsets(net: torch.nn.Module) -> np.ndarray:
    from cnngraph.mapping.topology import topology_for_model

    return topology_for_model(net, (3, SIZE, SIZE)).node_offsets
