"""``cnngraph train``, ``prune`` and ``sweep`` through the CLI; node scores stubbed (no Neo4j)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

import cnngraph
from cnngraph.models import read_checkpoint
from cnngraph.pruner.surgery import load_pruned
from cnngraph.pruner.training import native_bf16
from cnngraph.scores import NodeScores

runner = CliRunner()

# small_cnn on 8x8 images: convolutions at 8x8, 8x8, 4x4, 4x4, 2x2.
SIZES = (8, 8, 4, 4, 2)
LAYER_DELTA = (1.0, 0.0, 1.0, 0.0, 1.0)  # mean over all nodes < 1: layers 1 and 3 go at gamma 1


def stub_scores(layers: int = 5) -> NodeScores:
    parts = [np.indices((s, s)).reshape(2, -1) for s in SIZES[:layers]]
    layer = np.concatenate([np.full(p.shape[1], k) for k, p in enumerate(parts)]).astype(np.int64)
    i = np.concatenate([p[0] for p in parts]).astype(np.int64)
    j = np.concatenate([p[1] for p in parts]).astype(np.int64)
    delta = np.array(LAYER_DELTA, dtype=np.float64)[layer]
    return NodeScores(layer, i, j, {"entropy": delta, "mean": 1.0 - delta}, model="stub")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    labels = np.arange(48) % 2
    images = (rng.random((48, 8, 8)) * 60).astype(np.uint8)
    images[labels == 1, :4] += 180
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, images=images, labels=labels, classes=np.array(["dark", "bright"]))
    return path


@pytest.fixture(scope="module")
def checkpoint(cli_app: typer.Typer, dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model") / "model.pt"
    args = ["train", "--model", "small_cnn", "--data", str(dataset), "--width", "0.25", "--epochs", "1"]
    result = runner.invoke(cli_app, [*args, "--batch-size", "16", "--seed", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def scores(monkeypatch: pytest.MonkeyPatch) -> NodeScores:
    stub = stub_scores()
    monkeypatch.setattr("cnngraph.cli.prune_cmd.fetch_or_compute_scores", lambda ctx, model, *a, **k: stub)
    return stub


def test_train_writes_spec_split_and_metrics(checkpoint: Path, dataset: Path) -> None:
    state, info = read_checkpoint(checkpoint)
    assert info["cnngraph_version"] == cnngraph.__version__
    assert info["spec"]["source"] == "small_cnn" and info["spec"]["input_size"] == 8
    assert info["spec"]["num_classes"] == 2 and info["spec"]["width"] == 0.25
    assert info["data"] == {
        "source": str(dataset),
        "split": None,
        "test_split": None,
        "test_fraction": 0.2,
        "seed": 1,
    }
    assert info["split"] == {"train_images": 38, "test_images": 10}
    assert 0.0 <= info["metrics"]["accuracy"] <= 1.0 and info["metrics"]["parameters"] > 0
    assert "features.0.weight" in state


def test_train_json(cli_app: typer.Typer, dataset: Path, tmp_path: Path) -> None:
    args = ["train", "--data", str(dataset), "--width", "0.25", "--epochs", "1", "--json"]
    result = runner.invoke(cli_app, [*args, "--out", str(tmp_path / "m.pt")])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["metrics"]["macs"] > 0 and doc["checkpoint"].endswith("m.pt")


def test_dry_run_prints_selection(
    cli_app: typer.Typer, checkpoint: Path, scores: NodeScores, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["prune", "--model", "stub", "--checkpoint", str(checkpoint), "--dry-run", "--out", str(out)]
    result = runner.invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.count("removed") == 2 and result.stdout.count("kept") == 3
    assert not out.exists()
    result = runner.invoke(cli_app, [*args, "--json"])
    doc = json.loads(result.stdout)
    assert doc["removed"] == [1, 3]
    assert doc["threshold"] == pytest.approx(np.mean(stub_scores().values["entropy"]))
    # --remove N sets gamma so that N units go, the lowest-scoring first. Layers 1 and 3 score 0
    # (no gamma keeps them under rule any) and layers 0, 2, 4 tie at 1: tied units go together.
    for n, expected in ((0, [1, 3]), (1, [1, 3]), (2, [1, 3]), (3, [0, 1, 2, 3, 4]), (5, [0, 1, 2, 3, 4])):
        result = runner.invoke(cli_app, [*args, "--json", "--remove", str(n)])
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert doc["removed"] == expected
        assert doc["options"]["gamma"] * np.mean(stub_scores().values["entropy"]) == pytest.approx(
            doc["threshold"]
        )
    for n in ("6", "-1"):
        result = runner.invoke(cli_app, [*args, "--remove", n])
        assert result.exit_code != 0 and "Traceback" not in result.output
        assert "remove" in result.output and len(result.output.strip().splitlines()) == 1


def test_prune_writes_everything(
    cli_app: typer.Typer, checkpoint: Path, scores: NodeScores, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = [
        "prune",
        "--model",
        "stub",
        "--checkpoint",
        str(checkpoint),
        "--epochs",
        "1",
        "--batch-size",
        "16",
    ]
    more = ["--strategy", "bridge", "--augment", "--schedule", "cosine"]
    result = runner.invoke(cli_app, [*args, *more, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert names == {"pruned.pt", "pruned.json", "report.json", "delta_heatmap.png", "layers.png"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no staging left
    report = json.loads((out / "report.json").read_text())
    assert [r["layer"] for r in report["removed"]] == [1, 3]
    assert report["options"]["strategy"] == "bridge" and report["options"]["gamma"] == 1.0
    assert report["options"]["augment"] is True and report["options"]["schedule"] == "cosine"
    assert report["pruned"]["parameters"] < report["original"]["parameters"]
    assert report["cnngraph_version"] == cnngraph.__version__
    keys = [r["key"] for r in report["comparison"]]
    assert keys == ["accuracy", "precision", "recall", "parameters", "macs", "latency_ms", "epoch_seconds"]
    assert json.loads(result.stdout)["files"]["report.json"].endswith("report.json")
    model = load_pruned(out / "pruned.pt")
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 2)
    assert (out / "delta_heatmap.png").read_bytes()[:4] == b"\x89PNG"


def test_prune_table_and_baseline(
    cli_app: typer.Typer, checkpoint: Path, scores: NodeScores, tmp_path: Path
) -> None:
    args = [
        "prune",
        "--model",
        "stub",
        "--checkpoint",
        str(checkpoint),
        "--epochs",
        "0",
        "--latency-repeats",
        "3",
    ]
    result = runner.invoke(
        cli_app, [*args, "--select", "random", "--seed", "3", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output
    assert "Original vs pruned" in result.stdout and "MACs / image" in result.stdout
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["selection"]["method"] == "random" and len(report["removed"]) == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--rule", "most"], "layer rule"),
        (["--gamma", "-1"], "gamma"),
        (["--stat", "mode"], "statistic"),
        (["--aggregator", "max"], "aggregator"),
        (["--strategy", "glue"], "strategy"),
        (["--select", "magic"], "selection"),
        (["--gamma", "5"], "every convolution"),
        (["--schedule", "steps"], "schedule"),
        (["--remove", "-1"], "remove"),
        (["--precision", "fp8"], "unknown precision 'fp8'"),
    ],
)
def test_prune_bad_inputs(
    cli_app: typer.Typer, checkpoint: Path, scores: NodeScores, tmp_path: Path, extra: list[str], message: str
) -> None:
    out = tmp_path / "out"
    args = ["prune", "--model", "stub", "--checkpoint", str(checkpoint), "--out", str(out), *extra]
    result = runner.invoke(cli_app, args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert not out.exists()


def test_prune_missing_checkpoint_and_wrong_graph(
    cli_app: typer.Typer, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = runner.invoke(cli_app, ["prune", "--model", "x", "--checkpoint", str(tmp_path / "none.pt")])
    assert result.exit_code == 2 and "does not exist" in result.stderr
    monkeypatch.setattr(
        "cnngraph.cli.prune_cmd.fetch_or_compute_scores", lambda ctx, model, *a, **k: stub_scores(3)
    )
    result = runner.invoke(cli_app, ["prune", "--model", "x", "--checkpoint", str(checkpoint), "--dry-run"])
    assert result.exit_code == 2 and "has 3 layers" in result.stderr


def test_train_bad_inputs(cli_app: typer.Typer, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    base = ["train", "--data", str(dataset), "--out", str(out)]
    for extra, message in (
        (["--test-fraction", "1.5"], "test fraction"),
        (["--width", "0"], "--width"),
        (["--epochs", "0"], "--epochs"),
        (["--model", "resnet"], "unknown model"),
    ):
        result = runner.invoke(cli_app, [*base, *extra])
        assert result.exit_code == 2, extra
        assert message in result.stderr
        assert not out.exists()
    result = runner.invoke(cli_app, ["train", "--data", str(tmp_path / "nope.npz"), "--out", str(out)])
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_sweep(cli_app: typer.Typer, checkpoint: Path, scores: NodeScores, tmp_path: Path) -> None:
    args = ["sweep", "--model", "stub", "--gamma-start", "0", "--gamma-stop", "2", "--gamma-step", "0.5"]
    result = runner.invoke(cli_app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert [r["gamma"] for r in rows] == [0.0, 0.5, 1.0, 1.5, 2.0]
    # 84 of 164 nodes score 1, the rest 0: mean 0.512. Up to gamma 1.5 (th 0.768) the zero layers
    # 1 and 3 go; at gamma 2 (th 1.02) no node is selected and all five would go.
    assert [r["layers_removed"] for r in rows] == [2, 2, 2, 2, 5]
    assert rows[2]["removed"] == [1, 3]
    out = tmp_path / "sweep"
    more = ["--checkpoint", str(checkpoint), "--finetune-epochs", "1", "--out", str(out)]
    result = runner.invoke(cli_app, [*args, *more])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["cnngraph_version"] == cnngraph.__version__
    assert [r["accuracy"] is not None for r in doc["rows"]] == [True, True, True, True, False]
    assert len({r["accuracy"] for r in doc["rows"][:4]}) == 1  # one removal, fine-tuned once
    assert (out / "sweep.png").is_file()
    bad = runner.invoke(cli_app, ["sweep", "--model", "stub", "--gamma-step", "0"])
    assert bad.exit_code == 2 and "gamma-step" in bad.stderr


# ---------------------------------------------------------------- units of a residual network
def conv_output_sizes(checkpoint: Path) -> list[tuple[int, int]]:
    """``(H, W)`` of every convolution's output, in execution order, from a forward pass."""
    from cnngraph.models import load_model
    from cnngraph.pruner.units import conv_names

    model, spec = load_model(None, checkpoint)
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [
        model.get_submodule(name).register_forward_hook(
            lambda m, i, o, name=name: sizes.__setitem__(name, tuple(o.shape[2:]))
        )
        for name in conv_names(model)
    ]
    try:
        model(torch.zeros(1, spec.in_channels, spec.input_size, spec.input_size))
    finally:
        for hook in hooks:
            hook.remove()
    return [sizes[name] for name in conv_names(model)]


def layered_scores(sizes: list[tuple[int, int]], per_layer: list[float]) -> NodeScores:
    parts = [np.indices(s).reshape(2, -1) for s in sizes]
    layer = np.concatenate([np.full(p.shape[1], k) for k, p in enumerate(parts)]).astype(np.int64)
    i = np.concatenate([p[0] for p in parts]).astype(np.int64)
    j = np.concatenate([p[1] for p in parts]).astype(np.int64)
    delta = np.array(per_layer, dtype=np.float64)[layer]
    return NodeScores(layer, i, j, {"entropy": delta}, model="res")


@pytest.fixture(scope="module")
def resnet_checkpoint(cli_app: typer.Typer, dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("resnet") / "resnet20.pt"
    args = ["train", "--model", "resnet20", "--data", str(dataset), "--width", "0.25", "--epochs", "1"]
    more = ["--augment", "--schedule", "cosine", "--channels-last", "--weight-decay", "0.001"]
    result = runner.invoke(
        cli_app, [*args, *more, "--precision", "bf16", "--batch-size", "16", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert ("warning: bf16 is emulated here" in result.stderr) == (not native_bf16("cpu"))
    bad = runner.invoke(cli_app, [*args, "--device", "gpu", "--out", str(out.with_name("bad.pt"))])
    assert bad.exit_code == 2 and "unknown device 'gpu'" in bad.stderr
    bad = runner.invoke(cli_app, [*args, "--precision", "half", "--out", str(out.with_name("bad.pt"))])
    assert bad.exit_code == 2 and "unknown --precision 'half'; use fp32 or bf16" in bad.stderr
    assert not out.with_name("bad.pt").exists()
    return out


def test_resnet20_dry_run_lists_units(
    cli_app: typer.Typer, resnet_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, info = read_checkpoint(resnet_checkpoint)
    assert info["spec"]["source"] == "resnet20"
    training = info["training"]
    assert (training["augment"], training["schedule"], training["weight_decay"]) == (True, "cosine", 0.001)
    assert training["channels_last"] is True and training["device"] == "cpu"
    assert training["precision"] == "bf16"
    sizes = conv_output_sizes(resnet_checkpoint)
    assert len(sizes) == 21 and sizes[0] == (8, 8) and sizes[-1] == (2, 2)
    # branch layer1.0 (c1, c2) scores 0 in both convolutions, branch layer1.1 (c3, c4) only in c3,
    # the stem (c0) 0 too: it is not removable and stays whatever it scores
    per_layer = [1.0] * 21
    per_layer[0] = per_layer[1] = per_layer[2] = per_layer[3] = 0.0
    stub = layered_scores(sizes, per_layer)
    monkeypatch.setattr("cnngraph.cli.prune_cmd.fetch_or_compute_scores", lambda ctx, model, *a, **k: stub)
    args = ["prune", "--model", "res", "--checkpoint", str(resnet_checkpoint), "--dry-run"]
    result = runner.invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    row = next(line for line in lines if " u1 " in line)
    assert "residual branch" in row and "layer1.0" in row and "c1, c2" in row and "removed" in row
    assert "kept" in next(line for line in lines if " u2 " in line)  # c4 scores above
    stem = next(line for line in lines if " u0 " in line)
    assert "not removable" in stem and "stays: its output forks to 2 operations" in stem
    assert result.stdout.count("removed") == 1 and result.stdout.count("not removable") == 3
    # --precision only shapes the fine-tune, which a dry run never starts: no bf16 warning
    quiet = runner.invoke(cli_app, [*args, "--precision", "bf16"])
    assert quiet.exit_code == 0 and "warning" not in quiet.stderr and quiet.stdout == result.stdout
    doc = json.loads(runner.invoke(cli_app, [*args, "--json"]).stdout)
    assert doc["removed"] == [1, 2] and doc["removed_units"] == [1]
    assert [u["kind"] for u in doc["units"]].count("residual-branch") == 9
    doc = json.loads(runner.invoke(cli_app, [*args, "--json", "--select", "last"]).stdout)
    assert doc["method"] == "last" and doc["removed_units"] == [11] and doc["removed"] == [19, 20]


def test_resnet20_prune_and_reload(
    cli_app: typer.Typer, resnet_checkpoint: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    per_layer = [1.0] * 21
    per_layer[10] = per_layer[11] = 0.0  # layer2.1
    stub = layered_scores(conv_output_sizes(resnet_checkpoint), per_layer)
    monkeypatch.setattr("cnngraph.cli.prune_cmd.fetch_or_compute_scores", lambda ctx, model, *a, **k: stub)
    out = tmp_path / "out"
    args = ["prune", "--model", "res", "--checkpoint", str(resnet_checkpoint), "--epochs", "1"]
    result = runner.invoke(
        cli_app, [*args, "--batch-size", "16", "--latency-repeats", "2", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "removed 1 of 9 removable units (2 of 21 convolutions)" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert [(u["kind"], u["name"], u["convolutions"]) for u in report["units_removed"]] == [
        ("residual-branch", "layer2.1", [10, 11])
    ]
    assert report["rewired"] == []
    model = load_pruned(out / "pruned.pt")
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 2)
    sweep = runner.invoke(
        cli_app,
        ["sweep", "--model", "res", "--checkpoint", str(resnet_checkpoint), "--gamma-start", "0.5",
         "--gamma-stop", "1", "--gamma-step", "0.5", "--json"],
    )  # fmt: skip
    assert sweep.exit_code == 0, sweep.output
    rows = json.loads(sweep.stdout)["rows"]
    assert [(r["units_removed"], r["layers_removed"]) for r in rows] == [(1, 2), (1, 2)]


def test_train_resumes_after_an_interruption(
    cli_app: typer.Typer, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cnngraph.models

    base = ["train", "--data", str(dataset), "--width", "0.25", "--epochs", "3", "--batch-size", "8"]
    more = ["--augment", "--schedule", "onecycle", "--lr", "0.05"]
    whole = tmp_path / "whole.pt"
    assert runner.invoke(cli_app, [*base, *more, "--out", str(whole)]).exit_code == 0
    assert not (tmp_path / "whole.pt.resume").exists()  # removed once the checkpoint is written

    out, snapshot = tmp_path / "cut.pt", tmp_path / "cut.pt.resume"
    save = cnngraph.models.save_atomically

    def save_then_stop(path: Path, obj: dict) -> Path:  # Ctrl-C right after epoch 1's snapshot
        save(path, obj)
        raise KeyboardInterrupt

    monkeypatch.setattr(cnngraph.models, "save_atomically", save_then_stop)
    cut = runner.invoke(cli_app, [*base, *more, "--out", str(out)])
    monkeypatch.undo()
    assert cut.exit_code == 130
    assert "interrupted; run the same command with --resume" in cut.stderr and str(snapshot) in cut.stderr
    assert snapshot.is_file() and not out.exists()

    other = runner.invoke(cli_app, [*base, *more, "--lr", "0.1", "--out", str(out), "--resume"])
    assert other.exit_code == 2 and "other options (training.lr)" in other.stderr
    assert "Traceback" not in other.output and not out.exists()

    resumed = runner.invoke(cli_app, [*base, *more, "--out", str(out), "--resume", "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming after epoch 1 of 3" in resumed.stderr
    assert not snapshot.exists()
    a, info_a = read_checkpoint(whole)
    b, info_b = read_checkpoint(out)
    assert all(torch.equal(a[k], b[k]) for k in a)  # exactly the uninterrupted run
    losses = [[e["loss"] for e in i["history"]["epochs"]] for i in (info_a, info_b)]
    assert losses[0] == losses[1] and len(losses[0]) == 3

    snapshot.write_bytes(b"not a snapshot")
    broken = runner.invoke(cli_app, [*base, *more, "--out", str(out), "--resume"])
    assert broken.exit_code == 2 and "cannot read the snapshot" in broken.stderr


def test_train_init_goes_on_from_another_checkpoint(
    cli_app: typer.Typer, dataset: Path, tmp_path: Path
) -> None:
    base = ["train", "--data", str(dataset), "--width", "0.25", "--batch-size", "8"]
    first, fresh = tmp_path / "first.pt", tmp_path / "fresh.pt"
    for path, epochs, lr in ((first, "2", "0.05"), (fresh, "1", "1e-9")):
        made = runner.invoke(cli_app, [*base, "--epochs", epochs, "--lr", lr, "--out", str(path)])
        assert made.exit_code == 0, made.output
    second = tmp_path / "second.pt"
    result = runner.invoke(
        cli_app, [*base, "--epochs", "1", "--lr", "1e-9", "--init", str(first), "--out", str(second)]
    )
    assert result.exit_code == 0, result.output
    a, info_a = read_checkpoint(first)
    b, info_b = read_checkpoint(second)
    c, _ = read_checkpoint(fresh)
    convs = [k for k in a if k.endswith("weight") and a[k].dim() == 4]
    # A near-zero learning rate keeps the weights where they started: the first run's, not a fresh draw.
    assert convs and all(torch.allclose(a[k], b[k], atol=1e-6) for k in convs)
    assert not all(torch.allclose(c[k], b[k], atol=1e-3) for k in convs)
    init = info_b["training"]["init"]
    assert init["checkpoint"] == str(first) and init["accuracy"] == info_a["metrics"]["accuracy"]
    assert init["training"] == info_a["training"]
    import hashlib

    assert init["sha256"] == hashlib.sha256(first.read_bytes()).hexdigest()

    out = tmp_path / "bad.pt"
    for extra, message in (
        (["--init", str(tmp_path / "none.pt")], "does not exist"),
        (["--init", str(first), "--model", "vgg11"], "holds another model (source 'small_cnn' here 'vgg11'"),
        (["--init", str(first), "--width", "0.5"], "width 0.25 here 0.5"),
    ):
        result = runner.invoke(cli_app, [*base, "--epochs", "1", *extra, "--out", str(out)])
        assert result.exit_code == 2, (extra, result.output)
        assert message in result.stderr and "Traceback" not in result.output
        assert not out.exists()


def test_train_average_from_records_the_averaging_and_refuses_a_bad_epoch(
    cli_app: typer.Typer, dataset: Path, tmp_path: Path
) -> None:
    base = ["train", "--data", str(dataset), "--width", "0.25", "--batch-size", "8", "--epochs", "3"]
    out = tmp_path / "swa.pt"
    made = runner.invoke(cli_app, [*base, "--lr", "0.02", "--average-from", "2", "--out", str(out), "--json"])
    assert made.exit_code == 0, made.output
    _, info = read_checkpoint(out)
    assert info["training"]["average_from"] == 2 and len(info["history"]["epochs"]) == 3
    plain = tmp_path / "plain.pt"
    assert runner.invoke(cli_app, [*base, "--lr", "0.02", "--out", str(plain)]).exit_code == 0
    assert "average_from" not in read_checkpoint(plain)[1]["training"]
    a, b = read_checkpoint(out)[0], read_checkpoint(plain)[0]
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the average, not the last weights
    bad = tmp_path / "bad.pt"
    for epoch in ("0", "4"):
        result = runner.invoke(cli_app, [*base, "--average-from", epoch, "--out", str(bad)])
        assert result.exit_code == 2, result.output
        assert f"--average-from {epoch} is not an epoch of this run; give 1 to 3" in result.stderr
        assert "Traceback" not in result.output and not bad.exists()
