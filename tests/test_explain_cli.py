"""``cnngraph explain`` and ``cnngraph faithfulness`` through the CLI: every kind of model, bad input."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from cnngraph.explain.api import explain
from cnngraph.models import ModelSpec, build_model, load_model, save_checkpoint

MODELS = textwrap.dedent(
    """
    import torch
    from torch import nn

    def chain():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3),
        )

    class Concat(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.a = nn.Conv2d(4, 2, 1)
            self.b = nn.Conv2d(4, 2, 3, padding=1)
            self.pool = nn.MaxPool2d(3, stride=1, padding=1)
            self.c = nn.Conv2d(4, 2, 1)
            self.head = nn.Conv2d(6, 4, 3, stride=2, padding=1)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            x = torch.relu(self.stem(x))
            x = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x)), torch.relu(self.c(self.pool(x)))], 1)
            x = torch.relu(self.head(x))
            return self.fc(x.mean(dim=(2, 3)))

    def concat():
        return Concat()

    class Depthwise(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)
            self.pw = nn.Conv2d(8, 4, 1)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            x = torch.relu(self.stem(x))
            x = torch.relu(self.pw(torch.relu(self.dw(x))))
            return self.fc(x.mean(dim=(2, 3)))

    def depthwise():
        return Depthwise()

    def upsample():
        return nn.Sequential(
            nn.Conv2d(3, 2, 3, padding=1), nn.Upsample(scale_factor=2), nn.Conv2d(2, 2, 3), nn.Flatten(),
            nn.Linear(2 * 22 * 22, 3),
        )
    """
)
runner = CliRunner()
SIZE = 12


def run(app: typer.Typer, *args: str | Path, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, [str(a) for a in args], env=env)


def one_line_error(result: Any, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert "Traceback" not in result.output
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def png(path: Path, size: int = SIZE, mode: str = "RGB", seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    models = tmp_path / "models.py"
    models.write_text(MODELS)
    out: dict[str, Path] = {"models": models}
    import importlib.util

    spec = importlib.util.spec_from_file_location("explain_test_models", models)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in ("chain", "concat", "depthwise"):
        model = getattr(module, name)()
        torch.save(model.state_dict(), tmp_path / f"{name}.pt")
        out[name] = tmp_path / f"{name}.pt"
    residual = build_model(ModelSpec("resnet20", num_classes=3, in_channels=3, input_size=SIZE, width=0.25))
    out["residual"] = save_checkpoint(
        tmp_path / "residual.pt", residual, {"spec": ModelSpec("resnet20", 3, 3, SIZE, 0.25).to_dict()}
    )
    out["image"] = png(tmp_path / "cat.png")
    out["image2"] = png(tmp_path / "dog.png", seed=1)
    rng = np.random.default_rng(0)
    data = tmp_path / "data.npz"
    np.savez(
        data,
        images=rng.integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8),
        labels=np.array([0, 1, 2, 0, 1]),
        classes=np.array(["cat", "dog", "eel"]),
    )
    out["data"] = data
    out["out"] = tmp_path / "out"
    return out


def arch(files: dict[str, Path], name: str) -> list[str | Path]:
    return [] if name == "residual" else ["--arch", f"{files['models']}:{name}"]


@pytest.mark.parametrize("kind", ["chain", "residual", "concat", "depthwise"])
def test_explain_every_kind_of_model(cli_app: typer.Typer, files: dict[str, Path], kind: str) -> None:
    result = run(
        cli_app, "explain", files["image"], "--checkpoint", files[kind], *arch(files, kind),
        "--out", files["out"], "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert 0.0 < row["probability"] <= 1.0 and row["explained"] == row["predicted"]
    heat = np.load(row["files"]["npy"])
    assert heat.shape == (SIZE, SIZE) and heat.max() == pytest.approx(1.0) and heat.min() >= 0
    record = json.loads(Path(row["files"]["json"]).read_text())
    assert record["options"]["max_per_node"] == 9 and record["options"]["mode"] == "paths"
    assert record["options"]["sigma_pixels"] == pytest.approx(7.0 * SIZE / 224)
    assert sum(len(layer["scores"]) * len(layer["scores"][0]) for layer in record["layers"]) > 0
    assert Path(row["files"]["png"]).read_bytes()[:4] == b"\x89PNG"
    # the same heatmap through the Python API
    if kind == "residual":
        model, _ = load_model(None, files[kind])
    else:
        model, _ = load_model(ModelSpec(f"{files['models']}:{kind}", 3, 3, SIZE), files[kind])
    image = torch.from_numpy(np.asarray(Image.open(files["image"]), dtype=np.float32) / 255).permute(2, 0, 1)
    (api,) = explain(model, image)
    np.testing.assert_allclose(api.heatmap, heat)
    assert record["layers"][0]["name"] == api.layer_scores(_topology(model))[0]["name"]


def _topology(model: torch.nn.Module) -> Any:
    from cnngraph.mapping.topology import topology_for_model

    return topology_for_model(model, (3, SIZE, SIZE))


def test_a_batch_of_files_and_dataset_images(cli_app: typer.Typer, files: dict[str, Path]) -> None:
    result = run(
        cli_app, "explain", files["image"], files["image2"], "--checkpoint", files["residual"],
        "--data", files["data"], "--index", "0:3", "--index", "4", "--label", "dog", "--preset", "authors",
        "--sigma", "0", "--mode", "flow", "--out", files["out"], "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [Path(r["files"]["png"]).name for r in rows] == [
        "cat.png", "dog.png", "data-0.png", "data-1.png", "data-2.png", "data-4.png",
    ]  # fmt: skip
    assert [r["label"] for r in rows] == [None, None, "cat", "dog", "eel", "dog"]
    assert {r["explained"] for r in rows} == {"dog"}
    record = json.loads(Path(rows[2]["files"]["json"]).read_text())
    options = record["options"]
    assert (options["preset"], options["quantile"], options["sigma_pixels"], options["mode"]) == (
        "authors", 0.75, 0.0, "flow",
    )  # fmt: skip
    assert record["probability"] == pytest.approx(record["probabilities"][1])
    assert sorted(p.name for p in files["out"].iterdir() if p.name.startswith(".")) == []  # no temp files


def test_table_output(cli_app: typer.Typer, files: dict[str, Path]) -> None:
    result = run(cli_app, "explain", files["image"], "--checkpoint", files["residual"], "--out", files["out"])
    assert result.exit_code == 0, result.output
    assert "cat.png" in result.stdout and "probability" in result.stdout


@pytest.mark.parametrize(
    ("case", "needles"),
    [
        ("size", ("16x16 pixels", "12x12")),
        ("channels", ("1 channel", "takes 3")),
        ("refused", ("cannot follow",)),
        ("index", ("--index 7 is out of range", "5 images")),
        ("not-an-image", ("is not an image",)),
        ("missing", ("does not exist",)),
        ("label", ("--label 'whale'",)),
        ("mode", ("unknown mode 'walk'",)),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    cli_app: typer.Typer, files: dict[str, Path], tmp_path: Path, case: str, needles: tuple[str, ...]
) -> None:
    checkpoint: list[str | Path] = ["--checkpoint", files["residual"]]
    args: list[str | Path] = [files["image"]]
    if case == "size":
        args = [png(tmp_path / "big.png", size=16)]
    elif case == "channels":
        args = [png(tmp_path / "gray.png", mode="L")]
    elif case == "refused":
        model = tmp_path / "upsample.pt"
        spec = ModelSpec(f"{files['models']}:upsample", 3, 3, SIZE)
        torch.save(build_model(spec).state_dict(), model)
        checkpoint = ["--checkpoint", model, "--arch", f"{files['models']}:upsample"]
    elif case == "index":
        args = ["--data", files["data"], "--index", "1", "--index", "7"]
    elif case == "not-an-image":
        fake = tmp_path / "notes.png"
        fake.write_text("not a picture")
        args = [files["image"], fake]
    elif case == "missing":
        args = [tmp_path / "nowhere.png"]
    elif case == "label":
        args = [files["image"], "--label", "whale", "--data", files["data"], "--index", "0"]
    elif case == "mode":
        args = [files["image"], "--mode", "walk"]
    result = run(cli_app, "explain", *args, *checkpoint, "--out", files["out"])
    one_line_error(result, *needles)
    assert not files["out"].exists() or not any(files["out"].iterdir())


def test_faithfulness_command(cli_app: typer.Typer, files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "faith.json"
    result = run(
        cli_app, "faithfulness", "--checkpoint", files["residual"], "--data", files["data"], "--images", "3",
        "--steps", "4", "--ig-steps", "2", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for method in ("graph", "graph-authors", "gradcam", "ig", "random", "gaussian"):
        assert method in result.stdout
    record = json.loads(out.read_text())
    assert len(record["images"]) == 3 and record["steps"] == 4
    summary = record["summary"]
    for method, entry in summary.items():
        for metric in ("deletion_auc", "insertion_auc", "drop", "increase"):
            assert len(record["per_image"][method][metric]) == 3
            assert entry[metric]["mean"] == pytest.approx(np.mean(record["per_image"][method][metric]))
            if method != "graph":
                assert entry[metric]["vs_graph"]["low"] <= entry[metric]["vs_graph"]["mean"]
    result = run(
        cli_app, "faithfulness", "--checkpoint", files["residual"], "--data", files["data"], "--methods", "x"
    )
    one_line_error(result, "unknown method 'x'")
