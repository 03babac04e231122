"""``cnngraph map``, ``inspect`` and ``export`` through the CLI, good and bad inputs."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from cnngraph.mapping.network import MultilayerNetwork
from cnngraph.models import ModelSpec, build_model, save_checkpoint

MODELS = textwrap.dedent(
    """
    import torch
    from torch import nn

    def make():
        first = nn.Conv2d(1, 3, 1)
        second = nn.Conv2d(3, 1, 3, padding=1)
        with torch.no_grad():
            first.weight.copy_(torch.tensor([1.0, 2.0, 6.0]).view(3, 1, 1, 1))
            first.bias.zero_()
            second.weight.zero_()
            second.weight[0, :, 1, 1] = 1.0
            second.bias.zero_()
        return nn.Sequential(first, nn.ReLU(), second, nn.ReLU())

    def no_conv():
        return nn.Sequential(nn.Flatten(), nn.Linear(4, 2))

    def upsample():
        return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Upsample(scale_factor=2), nn.Conv2d(2, 2, 3))
    """
)
runner = CliRunner()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    models = tmp_path / "models.py"
    models.write_text(MODELS)
    images = np.array([[[1, 0], [0, 0]], [[3, 0], [0, 2]], [[1, 1], [1, 0]]], dtype=np.float32)
    data = tmp_path / "data.npz"
    np.savez(data, images=images, labels=np.array([0, 0, 1]), classes=np.array(["a", "b"]))
    three = tmp_path / "three.npz"
    np.savez(three, images=images, labels=np.array([0, 0, 1]), classes=np.array(["a", "b", "c"]))
    return {"models": models, "data": data, "three": three, "out": tmp_path / "out" / "map.npz"}


def run(app: typer.Typer, *args: str | Path) -> object:
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result: object, *needles: str) -> None:
    assert result.exit_code != 0  # type: ignore[attr-defined]
    err = result.stderr.strip()  # type: ignore[attr-defined]
    assert "Traceback" not in result.output  # type: ignore[attr-defined]
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def test_map_inspect_export(cli_app: typer.Typer, files: dict[str, Path], tmp_path: Path) -> None:
    model = f"{files['models']}:make"
    result = run(
        cli_app,
        "map",
        model,
        files["data"],
        "--out",
        files["out"],
        "--images-per-class",
        "5",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    out = result.stdout  # type: ignore[attr-defined]
    assert "class 'a' has only 2 images" in out and "class 'b' has only 1 image;" in out
    assert "8 nodes, 16 arcs per class" in out
    assert f"wrote {files['out']}" in out.replace("\n", "")
    net = MultilayerNetwork.load(files["out"])
    np.testing.assert_allclose(net.node_values["mean"], [[6, 0, 0, 3, 18, 0, 0, 9], [3, 3, 3, 0, 9, 9, 9, 0]])
    assert net.options["images_per_class"] == 5 and net.options["split"] is None
    assert net.model["spec"]["source"] == model

    result = run(cli_app, "inspect", files["out"], "--json")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    summary = json.loads(result.stdout)  # type: ignore[attr-defined]
    assert [r["arcs_to_next"] for r in summary["layers"]] == [16, 0]
    assert [(r["arcs_out"], r["arcs_in"]) for r in summary["layers"]] == [(16, 0), (0, 16)]
    assert summary["edges"] == [{"src": 0, "dst": 1, "via": "direct", "arcs": 16}]
    assert [r["max_value"] for r in summary["layers"]] == [6.0, 18.0]
    assert summary["classes"] == [{"name": "a", "images": 2}, {"name": "b", "images": 1}]
    result = run(cli_app, "inspect", files["out"])
    assert result.exit_code == 0 and "arcs out" in result.stdout  # type: ignore[attr-defined]

    gexf = tmp_path / "a.gexf"
    result = run(cli_app, "export", files["out"], "--format", "gexf", "--class", "a", "--out", gexf)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert gexf.read_text().count("<edge ") == 16
    graphml = tmp_path / "all.graphml"
    result = run(cli_app, "export", files["out"], "--format", "graphml", "--out", graphml)
    assert result.exit_code == 0 and graphml.read_text().count("<edge ") == 32  # type: ignore[attr-defined]


def test_reference_architecture_with_every_option(cli_app: typer.Typer, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = tmp_path / "rgb.npz"
    np.savez(data, images=rng.integers(0, 255, (12, 8, 8, 3), dtype=np.uint8), labels=np.arange(12) % 3)
    out = tmp_path / "small.npz"
    result = run(
        cli_app, "map", "small_cnn", data, "--out", out, "--width", "0.25", "--images-per-class", "all",
        "--shuffle-seed", "1", "--response", "conv", "--descriptor", "median", "--mean", "0.5",
        "--std", "0.25,0.25,0.25", "--batch-size", "5", "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    net = MultilayerNetwork.load(out)
    assert net.class_names == ["0", "1", "2"]
    assert [la.height for la in net.layers] == [8, 8, 4, 4, 2]
    assert [la.filters for la in net.layers] == [4, 4, 8, 8, 16]
    o = net.options
    assert (o["images_per_class"], o["selection"], o["seed"], o["response"], o["descriptor"]) == (
        "all", "shuffle", 1, "conv", "median",
    )  # fmt: skip
    assert o["normalization"] == {"mean": [0.5], "std": [0.25, 0.25, 0.25]} and o["batch_size"] == 5
    assert net.model["spec"]["num_classes"] == 3 and net.model["spec"]["width"] == 0.25


def test_model_from_checkpoint_spec(cli_app: typer.Typer, files: dict[str, Path], tmp_path: Path) -> None:
    spec = ModelSpec(f"{files['models']}:make", num_classes=2, in_channels=1, input_size=2)
    ckpt = save_checkpoint(tmp_path / "ck.pt", build_model(spec), {"spec": spec.to_dict()})
    result = run(
        cli_app, "map", files["data"], "--checkpoint", ckpt, "--out", files["out"], "--device", "cpu"
    )
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    net = MultilayerNetwork.load(files["out"])
    assert net.options["checkpoint"] == str(ckpt)
    assert net.node_values["mean"][0, 4] == pytest.approx(18.0)


def test_no_conv_model(cli_app: typer.Typer, files: dict[str, Path]) -> None:
    result = run(cli_app, "map", f"{files['models']}:no_conv", files["data"], "--out", files["out"])
    assert_one_line_error(result, "no Conv2d")
    assert not files["out"].exists()


def test_unsupported_op_names_the_module(cli_app: typer.Typer, files: dict[str, Path]) -> None:
    result = run(cli_app, "map", f"{files['models']}:upsample", files["data"], "--out", files["out"])
    assert_one_line_error(result, "module '1' (Upsample)")


def test_class_with_no_images(cli_app: typer.Typer, files: dict[str, Path]) -> None:
    result = run(cli_app, "map", f"{files['models']}:make", files["three"], "--out", files["out"])
    assert_one_line_error(result, "class 'c'", "has no images")


def test_bad_data_file(cli_app: typer.Typer, files: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip at all")
    result = run(cli_app, "map", f"{files['models']}:make", bad, "--out", files["out"])
    assert_one_line_error(result, "cannot read", "bad.npz")


def test_bad_checkpoint(cli_app: typer.Typer, files: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    result = run(
        cli_app, "map", f"{files['models']}:make", files["data"], "--checkpoint", bad, "--out", files["out"]
    )
    assert_one_line_error(result, "cannot read checkpoint")


def test_bad_options_and_files(cli_app: typer.Typer, files: dict[str, Path], tmp_path: Path) -> None:
    model = f"{files['models']}:make"
    out = files["out"]
    assert_one_line_error(
        run(cli_app, "map", model, files["data"], "--out", out, "--images-per-class", "x"), "--images"
    )
    assert_one_line_error(
        run(cli_app, "map", model, files["data"], "--out", files["out"], "--mean", "a,b"), "--mean"
    )
    assert_one_line_error(run(cli_app, "map", files["data"], "--out", files["out"]), "name the model")
    assert_one_line_error(run(cli_app, "inspect", tmp_path / "missing.npz"), "does not exist")
    assert_one_line_error(run(cli_app, "inspect", files["data"]), "not a cnngraph mapping file")
