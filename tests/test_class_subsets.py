"""Mapping a subset of the classes: ``map --classes`` / ``--max-classes`` and ``map_model(classes=...)``.

The oracle is the full mapping: a subset's class networks must be exactly the full mapping's
networks of those classes, in the order asked for, over the same topology.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from torch import nn
from typer.testing import CliRunner

from cnngraph.datasets import ImageDataset, resolve_classes, restrict_classes
from cnngraph.errors import DataError
from cnngraph.mapping.api import map_model
from cnngraph.mapping.network import MultilayerNetwork

NAMES = ["cat", "dog", "7", "bird", "fox"]
runner = CliRunner()


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()
    ).eval()


def dataset(per_class: int = 3) -> ImageDataset:
    """Five classes whose images differ by class (class h is brighter with h), interleaved labels."""
    rng = np.random.default_rng(1)
    labels = np.tile(np.arange(len(NAMES)), per_class)
    images = (rng.random((labels.size, 1, 8, 8)) + labels[:, None, None, None]).astype(np.float32)
    return ImageDataset(torch.from_numpy(images), torch.from_numpy(labels), list(NAMES), "synthetic")


# ------------------------------------------------------------------ resolving names and indices
def test_names_indices_and_order() -> None:
    assert resolve_classes(NAMES) is None
    assert resolve_classes(NAMES, ["fox", "cat"]) == [4, 0]
    assert resolve_classes(NAMES, ["3", 1]) == [3, 1]
    assert resolve_classes(NAMES, [" dog "]) == [1]
    assert resolve_classes(NAMES, ["7"]) == [2]  # a name wins over the index 7 (which does not exist)
    assert resolve_classes(NAMES, max_classes=2) == [0, 1]
    assert resolve_classes(NAMES, max_classes=5) == [0, 1, 2, 3, 4]
    assert resolve_classes(NAMES, max_classes=100) == [0, 1, 2, 3, 4]  # capped at the dataset's 5


@pytest.mark.parametrize(
    ("wanted", "max_classes", "message"),
    [
        (
            ["cow"],
            None,
            "unknown class 'cow'; use a class name of the dataset ('cat', 'dog', '7', 'bird', 'fox')",
        ),
        (["5"], None, "class index 5 is out of range; the dataset has 5 classes (0..4)"),
        (["-1"], None, "class index -1 is out of range"),
        (["cat", "0"], None, "class 'cat' (index 0) is listed twice in --classes"),
        ([], None, "--classes is empty"),
        (None, 0, "--max-classes must be at least 1, got 0"),
        (["cat"], 2, "pass either --classes or --max-classes, not both"),
    ],
)
def test_bad_subsets_are_refused(wanted: list[str] | None, max_classes: int | None, message: str) -> None:
    with pytest.raises(DataError) as caught:
        resolve_classes(NAMES, wanted, max_classes)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_restrict_relabels_in_the_order_given() -> None:
    data = dataset()
    sub = restrict_classes(data, [4, 1])
    assert sub.class_names == ["fox", "dog"]
    assert sorted(sub.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    for h, original in enumerate([4, 1]):
        torch.testing.assert_close(sub.images[sub.labels == h], data.images[data.labels == original])


# ------------------------------------------------------------------ map_model
def test_subset_equals_the_full_mapping_of_those_classes() -> None:
    data, model = dataset(), tiny_model()
    full = map_model(model, data, images_per_class=2, device="cpu")
    sub = map_model(model, data, images_per_class=2, device="cpu", classes=["bird", 0])
    assert sub.class_names == ["bird", "cat"]
    np.testing.assert_array_equal(sub.topology.arc_src, full.topology.arc_src)
    np.testing.assert_array_equal(sub.topology.arc_dst, full.topology.arc_dst)
    for descriptor in ("mean", "median"):
        np.testing.assert_array_equal(sub.node_values[descriptor], full.node_values[descriptor][[3, 0]])
    assert sub.images_per_class.tolist() == [2, 2]
    assert sub.options["classes"] == ["bird", "cat"] and sub.options["class_indices"] == [3, 0]
    assert sub.options["dataset_classes"] == 5
    assert "classes" not in full.options and "class_indices" not in full.options


def test_max_classes_takes_the_first_n() -> None:
    data, model = dataset(), tiny_model()
    full = map_model(model, data, images_per_class=1, device="cpu")
    sub = map_model(model, data, images_per_class=1, device="cpu", max_classes=3)
    assert sub.class_names == ["cat", "dog", "7"] and sub.options["class_indices"] == [0, 1, 2]
    np.testing.assert_array_equal(sub.node_values["mean"], full.node_values["mean"][:3])


def test_only_the_chosen_classes_need_images() -> None:
    data = dataset()
    keep = data.labels != 2  # class '7' has no image at all
    data = ImageDataset(data.images[keep], data.labels[keep], data.class_names, data.source)
    with pytest.raises(DataError, match="'7'"):
        map_model(tiny_model(), data, device="cpu")
    sub = map_model(tiny_model(), data, device="cpu", classes=["cat", "fox"])
    assert sub.class_names == ["cat", "fox"]


# ------------------------------------------------------------------ the CLI
@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    data = dataset()
    path = tmp_path / "five.npz"
    np.savez(path, images=data.images.numpy(), labels=data.labels.numpy(), classes=np.array(NAMES))
    models = tmp_path / "models.py"
    models.write_text(
        "from torch import nn\n"
        "def make():\n"
        "    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),\n"
        "                         nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())\n"
    )
    return {"data": path, "model": models, "out": tmp_path / "sub.npz"}


def test_cli_classes_recorded_and_inspected(cli_app: typer.Typer, files: dict[str, Path]) -> None:
    model = f"{files['model']}:make"
    args = ["map", model, str(files["data"]), "--out", str(files["out"]), "--device", "cpu"]
    result = runner.invoke(cli_app, [*args, "--classes", "fox,1"])
    assert result.exit_code == 0, result.output
    net = MultilayerNetwork.load(files["out"])
    assert net.class_names == ["fox", "dog"] and net.options["class_indices"] == [4, 1]
    result = runner.invoke(cli_app, ["inspect", str(files["out"])], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "class subset: 2 of the dataset's 5 classes, dataset indices 4, 1" in result.stdout
    result = runner.invoke(cli_app, [*args, "--max-classes", "2"])
    assert result.exit_code == 0, result.output
    assert MultilayerNetwork.load(files["out"]).class_names == ["cat", "dog"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--classes", "cow"], "unknown class 'cow'"),
        (["--classes", "9"], "class index 9 is out of range; the dataset has 5 classes (0..4)"),
        (["--classes", "dog,dog"], "class 'dog' (index 1) is listed twice"),
        (["--max-classes", "0"], "--max-classes must be at least 1"),
        (["--classes", "cat", "--max-classes", "1"], "pass either --classes or --max-classes"),
    ],
)
def test_cli_bad_subset_is_one_line_and_writes_nothing(
    cli_app: typer.Typer, files: dict[str, Path], extra: list[str], message: str
) -> None:
    args = [
        "map",
        f"{files['model']}:make",
        str(files["data"]),
        "--out",
        str(files["out"]),
        "--device",
        "cpu",
    ]
    result = runner.invoke(cli_app, [*args, *extra])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr
    assert not files["out"].exists()
