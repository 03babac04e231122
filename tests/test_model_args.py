"""Constructor arguments in a model spec, the random-weights warning, one-line checkpoint mismatches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from cnngraph.errors import ModelError, counted
from cnngraph.models import ModelSpec, build_model, load_model, split_source, untrained_warning

runner = CliRunner()


def test_arguments_are_parsed_and_typed() -> None:
    assert split_source("torchvision:googlenet") == ("torchvision:googlenet", {})
    base, args = split_source(
        "torchvision:resnet18?zero_init_residual=TRUE&width_per_group=32&x=0.5&y=none&z=abc"
    )
    assert base == "torchvision:resnet18"
    assert args == {"zero_init_residual": True, "width_per_group": 32, "x": 0.5, "y": None, "z": "abc"}
    assert split_source("m.py:make?name='7'")[1] == {"name": "7"}  # quoted: text, not a number


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("torchvision:googlenet?", "no arguments after it"),
        ("torchvision:googlenet?aux_logits", "is not key=value"),
        ("torchvision:googlenet?1x=2", "is not key=value"),
        ("torchvision:googlenet?a=1&a=2", "'a' is given twice"),
        ("torchvision:googlenet?num_classes=3", "comes from --num-classes"),
        ("torchvision:googlenet?weights=DEFAULT", "cnngraph downloads nothing"),
    ],
)
def test_bad_arguments_are_one_line_errors(source: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        split_source(source)


def test_torchvision_arguments_reach_the_constructor_and_are_validated_by_it() -> None:
    default = build_model(ModelSpec("torchvision:googlenet", num_classes=4))
    assert default.aux1 is None  # aux_logits=False by default: the mapped network has no aux heads
    aux = build_model(ModelSpec("torchvision:googlenet?aux_logits=true", num_classes=4))
    assert isinstance(aux.aux1, nn.Module)
    zero = build_model(ModelSpec("torchvision:resnet18?zero_init_residual=true", num_classes=4))
    assert not zero.layer1[0].bn2.weight.any()
    assert build_model(ModelSpec("torchvision:resnet18", num_classes=4)).layer1[0].bn2.weight.all()
    with pytest.raises(ModelError, match=r"torchvision:resnet18 cannot be built with colour=1 \(TypeError"):
        build_model(ModelSpec("torchvision:resnet18?colour=1"))
    with pytest.raises(ModelError, match="torchvision has no architecture 'resnet1'"):
        build_model(ModelSpec("torchvision:resnet1"))
    with pytest.raises(ModelError, match="'vgg16' takes no constructor arguments"):
        build_model(ModelSpec("vgg16?depth=3"))


def test_factory_arguments(tmp_path: Path) -> None:
    file = tmp_path / "zoo.py"
    file.write_text(
        "import torch.nn as nn\n"
        "def make(width=2, bias=True):\n"
        "    return nn.Sequential(nn.Conv2d(1, width, 3, bias=bias), nn.ReLU())\n"
    )
    model = build_model(ModelSpec(f"{file}:make?width=5&bias=false"))
    assert model[0].out_channels == 5 and model[0].bias is None
    with pytest.raises(ModelError, match=r"calling .* failed: TypeError"):
        build_model(ModelSpec(f"{file}:make?depth=5"))


def test_the_arguments_travel_with_the_checkpoint(tmp_path: Path) -> None:
    from cnngraph.models import save_checkpoint

    spec = ModelSpec("torchvision:googlenet?aux_logits=true", num_classes=3, input_size=32)
    model = build_model(spec)
    path = save_checkpoint(tmp_path / "g.pt", model, {"spec": spec.to_dict()})
    again, recorded = load_model(None, path)
    assert recorded.source == spec.source
    assert isinstance(again.aux1, nn.Module)  # rebuilt with the argument: its weights fit


def test_untrained_warning_only_without_weights() -> None:
    assert "random (untrained)" in str(untrained_warning(ModelSpec("torchvision:resnet18"), None))
    assert "random" in str(untrained_warning(ModelSpec("vgg16"), None))
    assert untrained_warning(ModelSpec("torchvision:resnet18"), "x.pt") is None
    assert untrained_warning(ModelSpec("my.module:factory"), None) is None  # a factory may load its own


def test_map_warns_once_on_stderr(cli_app: Any, tmp_path: Path) -> None:
    rgb = tmp_path / "rgb.npz"
    np.savez(rgb, images=np.random.default_rng(0).random((6, 3, 32, 32), dtype=np.float32), labels=[0, 1] * 3)
    result = runner.invoke(
        cli_app,
        [
            "map",
            "torchvision:resnet18?zero_init_residual=true",
            str(rgb),
            "--out",
            str(tmp_path / "m.npz"),
            "--images-per-class",
            "2",
            "--max-classes",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (
        result.stderr.count("warning:") == 1 and "torchvision:resnet18 has no --checkpoint" in result.stderr
    )
    assert "warning" not in result.stdout


def test_a_checkpoint_of_another_shape_is_one_line(tmp_path: Path, cli_app: Any) -> None:
    small = build_model(ModelSpec("small_cnn", in_channels=1, input_size=16, width=0.5))
    path = tmp_path / "small.pt"
    torch.save(small.state_dict(), path)
    with pytest.raises(ModelError) as info:
        load_model(ModelSpec("small_cnn", in_channels=1, input_size=16), path)
    message = str(info.value)
    assert "\n" not in message
    assert "'features.0.weight' is [8, 1, 3, 3] in the checkpoint but [16, 1, 3, 3] in the model" in message
    result = runner.invoke(
        cli_app,
        ["map", "small_cnn", "builtin:digits", "--checkpoint", str(path), "--out", str(tmp_path / "m.npz")],
    )
    assert result.exit_code == 2
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1, result.stderr


def test_counted() -> None:
    assert [counted(1, "image"), counted(2, "image"), counted(1, "class"), counted(0, "class")] == [
        "1 image", "2 images", "1 class", "0 classes",
    ]  # fmt: skip
