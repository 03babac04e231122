"""Bad input gives one clear line and exit 2, never a traceback or a silently wrong result.

Each test here is a case that once printed a traceback, mapped NaN or misread the data.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from test_loader import synthetic_network
from test_map_cli import assert_one_line_error, run

from cnngraph.datasets import load_dataset, select_per_class, split_indices
from cnngraph.errors import DataError
from cnngraph.mapping.network import MultilayerNetwork

MODELS = textwrap.dedent(
    """
    from torch import nn

    def rgb():
        return nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3), nn.ReLU(),
            nn.Flatten(), nn.Linear(2 * 6 * 6, 2),
        )

    def shrink():
        return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3))
    """
)


@pytest.fixture
def models(tmp_path: Path) -> Path:
    path = tmp_path / "models.py"
    path.write_text(MODELS)
    return path


def _npz(path: Path, images: np.ndarray, labels: np.ndarray | list[float]) -> Path:
    np.savez(path, images=images, labels=np.asarray(labels))
    return path


def _rgb(n: int = 6, size: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, size, size, 3)).astype(np.float32)


# ------------------------------------------------------------------ NaN and infinity
def test_nan_image_is_refused_naming_it(cli_app: typer.Typer, models: Path, tmp_path: Path) -> None:
    images = _rgb()
    images[4, 2, 3, 1] = np.inf
    images[5, 0, 0, 0] = np.nan
    data = _npz(tmp_path / "nan.npz", images, [0, 1, 0, 1, 0, 1])
    out = tmp_path / "map.npz"
    result = run(cli_app, "map", f"{models}:rgb", data, "--out", out, "--device", "cpu")
    assert_one_line_error(result, "image 4 ", "NaN or infinite", "2 such images")
    assert not out.exists()


def test_nan_checkpoint_is_refused_naming_the_tensor(
    cli_app: typer.Typer, models: Path, tmp_path: Path
) -> None:
    from cnngraph.models import ModelSpec, build_model

    net = build_model(ModelSpec(f"{models}:rgb"))
    state = net.state_dict()
    state["2.weight"][0, 0, 0, 0] = float("nan")
    ckpt = tmp_path / "plain.pt"
    torch.save(state, ckpt)
    data = _npz(tmp_path / "ok.npz", _rgb(), [0, 1, 0, 1, 0, 1])
    out = tmp_path / "map.npz"
    result = run(cli_app, "map", f"{models}:rgb", data, "--checkpoint", ckpt, "--out", out, "--device", "cpu")
    assert_one_line_error(result, "tensor '2.weight'", "1 NaN or infinite")
    assert not out.exists()


# ------------------------------------------------------------------ forward pass failures
def test_wrong_channel_count_names_only_the_cause(cli_app: typer.Typer, models: Path, tmp_path: Path) -> None:
    data = _npz(tmp_path / "gray.npz", _rgb()[..., 0], [0, 1, 0, 1, 0, 1])
    result = run(cli_app, "map", f"{models}:rgb", data, "--out", tmp_path / "m.npz", "--device", "cpu")
    assert_one_line_error(result, "model expects 3 input channels, the images have 1")
    assert "ShapeProp" not in result.output  # type: ignore[attr-defined]


def test_wrong_image_size_names_the_failing_module(
    cli_app: typer.Typer, models: Path, tmp_path: Path
) -> None:
    data = _npz(tmp_path / "six.npz", _rgb(size=6), [0, 1, 0, 1, 0, 1])
    result = run(cli_app, "map", f"{models}:rgb", data, "--out", tmp_path / "m.npz", "--device", "cpu")
    assert_one_line_error(result, "3x6x6 images", "fails at '5' (Linear)")
    assert "ShapeProp" not in result.output  # type: ignore[attr-defined]
    tiny = _npz(tmp_path / "tiny.npz", _rgb(size=3)[..., 0], [0, 1, 0, 1, 0, 1])
    result = run(cli_app, "map", f"{models}:shrink", tiny, "--out", tmp_path / "m.npz", "--device", "cpu")
    assert_one_line_error(result, "1x3x3 images", "fails at '2' (Conv2d)", "Kernel size")


# ------------------------------------------------------------------ .npz data
def test_npz_channel_first_reads_like_channel_last(tmp_path: Path) -> None:
    images = _rgb(size=5)
    last = load_dataset(_npz(tmp_path / "last.npz", images, [0, 1, 2, 0, 1, 2]))
    first = load_dataset(_npz(tmp_path / "first.npz", images.transpose(0, 3, 1, 2), [0, 1, 2, 0, 1, 2]))
    assert last.input_shape == first.input_shape == (3, 5, 5)
    assert torch.equal(last.images, first.images)
    assert torch.equal(last.images[2, 1], torch.from_numpy(images[2, :, :, 1]))


def test_npz_ambiguous_layout_and_float_labels_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot tell the channel axis"):
        load_dataset(_npz(tmp_path / "amb.npz", np.zeros((2, 3, 4, 4), np.float32), [0, 1]))
    with pytest.raises(DataError, match=r"label 1 is 1\.7"):
        load_dataset(_npz(tmp_path / "float.npz", _rgb(3), [0.0, 1.7, 1.0]))
    whole = load_dataset(_npz(tmp_path / "whole.npz", _rgb(3), [0.0, 2.0, 1.0]))
    assert whole.labels.tolist() == [0, 2, 1] and whole.labels.dtype == torch.int64
    with pytest.raises(DataError, match="integer class indices"):
        load_dataset(_npz(tmp_path / "text.npz", _rgb(2), np.array(["a", "b"])))
    with pytest.raises(DataError, match="images must be numbers"):
        load_dataset(_npz(tmp_path / "words.npz", np.array([["a", "b"], ["c", "d"]]), [0, 1]))


def test_split_is_refused_where_it_means_nothing(cli_app: typer.Typer, models: Path, tmp_path: Path) -> None:
    data = _npz(tmp_path / "d.npz", _rgb(), [0, 1, 0, 1, 0, 1])
    result = run(cli_app, "map", f"{models}:rgb", data, "--split", "train", "--out", tmp_path / "m.npz")
    assert_one_line_error(result, "split 'train'", "drop the split option")
    with pytest.raises(DataError, match="split 'test'"):
        load_dataset("builtin:digits", "test")


# ------------------------------------------------------------------ ImageFolder
def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_grayscale_folder_decodes_to_one_channel_and_skips_hidden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CNNGRAPH_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (4, 5, 6), dtype=np.uint8)
    for n in range(4):
        _png(tmp_path / "gray" / f"c{n % 2}" / f"{n}.png", pixels[n])
    _png(tmp_path / "gray" / ".ipynb_checkpoints" / "x.png", pixels[0])
    _png(tmp_path / "gray" / "c0" / ".hidden.png", np.zeros((9, 9), np.uint8))
    data = load_dataset(tmp_path / "gray")
    assert data.class_names == ["c0", "c1"]
    assert data.input_shape == (1, 5, 6)
    expected = torch.from_numpy(pixels[[0, 2, 1, 3]].astype(np.float32) / 255.0)
    torch.testing.assert_close(data.images[:, 0], expected)
    assert data.labels.tolist() == [0, 0, 1, 1]
    again = load_dataset(tmp_path / "gray")  # from the cache
    assert torch.equal(again.images, data.images)

    _png(tmp_path / "gray" / "c1" / "9.png", np.stack([pixels[0]] * 3, axis=-1) // 2)
    mixed = load_dataset(tmp_path / "gray")
    assert mixed.input_shape == (3, 5, 6)
    torch.testing.assert_close(mixed.images[0], expected[0].expand(3, 5, 6))


def test_corrupt_first_image_is_an_error(
    cli_app: typer.Typer, models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CNNGRAPH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "folder" / "a").mkdir(parents=True)
    (tmp_path / "folder" / "a" / "0.png").write_bytes(b"not a png")
    _png(tmp_path / "folder" / "b" / "1.png", np.zeros((8, 8, 3), np.uint8))
    result = run(cli_app, "map", f"{models}:rgb", tmp_path / "folder", "--out", tmp_path / "m.npz")
    assert_one_line_error(result, "cannot decode image", "0.png")


# ------------------------------------------------------------------ options and files
def test_negative_shuffle_seed(cli_app: typer.Typer, models: Path, tmp_path: Path) -> None:
    data = _npz(tmp_path / "d.npz", _rgb(), [0, 1, 0, 1, 0, 1])
    result = run(cli_app, "map", f"{models}:rgb", data, "--shuffle-seed", "-1", "--out", tmp_path / "m.npz")
    assert_one_line_error(result, "--shuffle-seed must be 0 or more")
    with pytest.raises(DataError, match="seed"):
        select_per_class(np.array([0, 1]), 2, 1, seed=-1)


def test_map_checks_out_before_any_work(cli_app: typer.Typer, models: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "plain-file"
    blocker.write_text("x")
    # The data does not even exist: the unwritable --out must be what is reported, first.
    missing = tmp_path / "missing.npz"
    result = run(cli_app, "map", f"{models}:rgb", missing, "--out", blocker / "sub" / "m.npz")
    assert_one_line_error(result, "--out", "is a file, not a folder")
    result = run(cli_app, "map", f"{models}:rgb", missing, "--out", tmp_path)
    assert_one_line_error(result, "is a folder")


def test_checkpoint_only_map_names_the_model_argument(
    cli_app: typer.Typer, models: Path, tmp_path: Path
) -> None:
    from cnngraph.models import ModelSpec, build_model

    ckpt = tmp_path / "plain.pt"
    torch.save(build_model(ModelSpec(f"{models}:rgb")).state_dict(), ckpt)
    data = _npz(tmp_path / "d.npz", _rgb(), [0, 1, 0, 1, 0, 1])
    result = run(cli_app, "map", data, "--checkpoint", ckpt, "--out", tmp_path / "m.npz")
    assert_one_line_error(result, "cnngraph map MODEL DATA")
    assert "--model" not in result.stderr  # type: ignore[attr-defined]


@pytest.fixture
def mapping(tmp_path: Path) -> Path:
    return synthetic_network([(4, 4), (2, 2)], classes=2, seed=1).save(tmp_path / "good.npz")


def test_npy_to_inspect_and_export(cli_app: typer.Typer, tmp_path: Path) -> None:
    array = tmp_path / "values.npy"
    np.save(array, np.arange(4))
    assert_one_line_error(run(cli_app, "inspect", array), "values.npy", "not a mapping file")
    result = run(cli_app, "export", array, "--out", tmp_path / "x.gexf")
    assert_one_line_error(result, "values.npy", "not a mapping file")
    renamed = tmp_path / "values-renamed.npz"
    renamed.write_bytes(array.read_bytes())
    assert_one_line_error(run(cli_app, "inspect", renamed), "values-renamed.npz")


def test_export_out_folder_or_unwritable(cli_app: typer.Typer, mapping: Path, tmp_path: Path) -> None:
    folder = tmp_path / "existing"
    folder.mkdir()
    assert_one_line_error(run(cli_app, "export", mapping, "--out", folder), "is a folder")
    assert list(folder.iterdir()) == []
    blocker = tmp_path / "plain-file"
    blocker.write_text("x")
    result = run(cli_app, "export", mapping, "--out", blocker / "x.gexf")
    assert_one_line_error(result, "cannot be written")
    assert blocker.read_text() == "x"


@pytest.mark.parametrize(
    "change",
    [
        {"class_names": 5},
        {"layers": "conv"},
        {"layers": [{"index": 0, "name": "c", "filters": "many"}]},
        {"model": ["not", "a", "dict"]},
        {"options": 3},
    ],
)
def test_ill_typed_metadata(
    cli_app: typer.Typer, mapping: Path, tmp_path: Path, change: dict[str, object]
) -> None:
    with np.load(mapping) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(bytes(arrays["meta"]).decode())
    meta.update(change)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    assert_one_line_error(run(cli_app, "inspect", bad), "bad.npz")
    assert_one_line_error(run(cli_app, "--uri", "bolt://127.0.0.1:9", "load", bad), "bad.npz")
    assert_one_line_error(run(cli_app, "export", bad, "--out", tmp_path / "x.gexf"), "bad.npz")
    assert not (tmp_path / "x.gexf").exists()
    assert MultilayerNetwork.load(mapping).num_classes == 2


def test_graph_commands_check_out_before_connecting(cli_app: typer.Typer, tmp_path: Path) -> None:
    blocker = tmp_path / "plain-file"
    blocker.write_text("x")
    for command in ("degrees", "score"):
        args = ("--uri", "bolt://127.0.0.1:9", command, "--model", "m", "--out", blocker / "x.csv")
        assert_one_line_error(run(cli_app, *args), "--out", "is a file, not a folder")


def test_train_checks_seed_and_out_first(cli_app: typer.Typer, tmp_path: Path) -> None:
    data = _npz(tmp_path / "d.npz", _rgb(), [0, 1, 0, 1, 0, 1])
    args = ("train", "--model", "small_cnn", "--data", data, "--epochs", "1")
    result = run(cli_app, *args, "--seed", "-1", "--out", tmp_path / "m.pt")
    assert_one_line_error(result, "--seed must be 0 or more")
    blocker = tmp_path / "plain-file"
    blocker.write_text("x")
    assert_one_line_error(run(cli_app, *args, "--out", blocker / "m.pt"), "is a file, not a folder")
    with pytest.raises(DataError, match="seed"):
        split_indices(10, 0.2, -1)
