"""Training, evaluation metrics and cost measurement, on tiny models and hand examples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from cnngraph.datasets import ImageDataset
from cnngraph.errors import ConfigError, DataError
from cnngraph.models import ModelSpec, build_model
from cnngraph.pruner import training
from cnngraph.pruner.metrics import (
    Cost,
    Metrics,
    Summary,
    compare,
    confusion_matrix,
    count_macs,
    evaluate,
    measure,
    scores_from_confusion,
)
from cnngraph.pruner.surgery import remove_convolutions
from cnngraph.pruner.training import native_bf16, precision_warning, train


def tiny_data(n: int = 40, classes: int = 2, seed: int = 0) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    images = torch.rand(n, 1, 8, 8, generator=g) * 0.2
    images[labels == 1, :, :4] += 0.8  # class 1 is bright on top: learnable
    return ImageDataset(images, labels, [str(c) for c in range(classes)], "tiny")


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelSpec("small_cnn", num_classes=2, in_channels=1, input_size=8, width=0.25))


def test_pruned_model_trains_a_step() -> None:
    model = tiny_model().eval()
    pruned = remove_convolutions(model, torch.zeros(1, 1, 8, 8), [1, 4]).module
    before = {k: v.clone() for k, v in pruned.state_dict().items()}
    history = train(pruned, tiny_data(16), epochs=1, batch_size=16, lr=0.05, seed=0)
    (epoch,) = history.epochs
    assert np.isfinite(epoch.loss) and epoch.seconds > 0
    after = pruned.state_dict()
    changed = [k for k in before if k.endswith("weight") and not torch.equal(before[k], after[k])]
    assert "classifier.0.weight" in changed  # the re-initialised Linear learns
    assert "features.0.weight" in changed  # and the kept trained convolution too


def test_training_is_seeded_and_leaves_global_rng_alone() -> None:
    data = tiny_data()
    a, b = tiny_model(), tiny_model()
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    ha = train(a, data, 2, 8, 0.05, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    hb = train(b, data, 2, 8, 0.05, seed=7)
    assert [e.loss for e in ha.epochs] == [e.loss for e in hb.epochs]
    for (ka, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(va, vb), ka
    assert len(ha.epochs) == 2 and ha.mean_epoch_seconds > 0


def test_training_learns_the_tiny_task() -> None:
    data = tiny_data(40)
    model = tiny_model()
    train(model, data, 4, 8, 0.05, seed=0, optimizer="adam")
    assert evaluate(model, data).accuracy >= 0.9


def test_bad_training_options() -> None:
    with pytest.raises(ConfigError, match="batch size"):
        train(tiny_model(), tiny_data(), 1, batch_size=0)
    with pytest.raises(ConfigError, match="optimizer"):
        train(tiny_model(), tiny_data(), 1, optimizer="lbfgs")
    with pytest.raises(DataError, match="empty"):
        train(tiny_model(), tiny_data().subset(np.array([], dtype=np.int64)), 1)


def test_metrics_on_a_hand_confusion() -> None:
    y = np.array([0, 0, 0, 1, 1, 2])
    p = np.array([0, 0, 1, 1, 1, 1])  # class 2 never predicted
    c = confusion_matrix(y, p, 3)
    assert c.tolist() == [[2, 1, 0], [0, 2, 0], [0, 1, 0]]
    acc, prec, rec = scores_from_confusion(c)
    assert acc == pytest.approx(4 / 6)
    # precision: class 0 2/2, class 1 2/4, class 2 never predicted -> 0
    assert prec == pytest.approx((1 + 0.5 + 0) / 3)
    # recall: 2/3, 2/2, 0/1
    assert rec == pytest.approx((2 / 3 + 1 + 0) / 3)
    from sklearn.metrics import precision_score, recall_score

    assert prec == pytest.approx(precision_score(y, p, average="macro", zero_division=0))
    assert rec == pytest.approx(recall_score(y, p, average="macro", zero_division=0))


def test_evaluate_uses_the_model() -> None:
    class Fixed(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # predicts class 1 when the top half is bright
            score = x[:, 0, :4].mean(dim=(1, 2)) - 0.5
            return torch.stack([-score, score], dim=1)

    m = evaluate(Fixed(), tiny_data())
    assert (m.accuracy, m.precision, m.recall) == (1.0, 1.0, 1.0)
    assert m.confusion.tolist() == [[20, 0], [0, 20]]


def test_measure_counts_parameters_and_macs() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    # conv: 2 filters x 16 positions x 9 taps; linear: 32 x 3
    assert count_macs(model, (1, 4, 4)) == 2 * 16 * 9 + 32 * 3
    cost = measure(model, (1, 4, 4), repeats=3)
    assert cost.parameters == (2 * 9 + 2) + (32 * 3 + 3)
    assert cost.latency_ms > 0 and cost.repeats == 3


def test_compare_relative_change() -> None:
    conf = np.eye(2, dtype=np.int64)
    a = Summary(Metrics(0.8, 0.8, 0.8, conf), Cost(1000, 500, 2.0, 3), 4.0)
    b = Summary(Metrics(0.9, 0.8, 0.4, conf), Cost(250, 500, 1.0, 3), 1.0)
    rows = {r.key: r for r in compare(a, b)}
    assert rows["accuracy"].change_pct == pytest.approx(12.5)
    assert rows["recall"].change_pct == pytest.approx(-50.0)
    assert rows["parameters"].change_pct == pytest.approx(-75.0)
    assert rows["macs"].change_pct == 0.0
    assert rows["epoch_seconds"].change_pct == pytest.approx(-75.0)


# ---------------------------------------------------------------- options for longer runs
def test_augment_batch_is_a_padded_crop_maybe_flipped() -> None:
    from cnngraph.pruner.training import augment_batch

    g = torch.Generator().manual_seed(0)
    images = torch.rand(64, 2, 6, 5, generator=g) + 0.1  # no zeros inside, so padding shows
    copy = images.clone()
    out = augment_batch(images, torch.Generator().manual_seed(5), padding=2)
    assert torch.equal(images, copy) and out.shape == images.shape
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    flips, offsets = 0, set()
    for b in range(64):
        matches = [
            (dy, dx, flip)
            for dy in range(5)
            for dx in range(5)
            for flip in (False, True)
            if torch.equal(
                out[b], (lambda c: c.flip(-1) if flip else c)(padded[b, :, dy : dy + 6, dx : dx + 5])
            )
        ]
        assert matches, b  # every output is one crop of its own padded image, flipped or not
        flips += matches[0][2]
        offsets.add(matches[0][:2])
    assert 16 <= flips <= 48 and len(offsets) > 10
    again = augment_batch(images, torch.Generator().manual_seed(5), padding=2)
    assert torch.equal(out, again)


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_schedules_per_batch(schedule: str) -> None:
    from cnngraph.pruner.training import _optimizer, _scheduler

    opt = _optimizer(nn.Linear(2, 2), "sgd", 0.1)
    scheduler = _scheduler(opt, schedule, 0.1, 100)
    assert scheduler is not None
    rates = []
    for _ in range(100):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    assert max(rates) == pytest.approx(0.1, rel=1e-3) and rates[-1] < 0.005
    peak = int(np.argmax(rates))
    assert (peak == 0) if schedule == "cosine" else (20 <= peak <= 40)  # onecycle warms up for 30%
    assert _scheduler(opt, "constant", 0.1, 100) is None


def test_weight_decay_defaults_and_refusals() -> None:
    from cnngraph.pruner.training import _optimizer, check_device

    model = nn.Linear(2, 2)
    assert _optimizer(model, "sgd", 0.1).param_groups[0]["weight_decay"] == 5e-4
    assert _optimizer(model, "sgd", 0.1, 0.0).param_groups[0]["weight_decay"] == 0.0
    assert _optimizer(model, "adam", 0.1).param_groups[0]["weight_decay"] == 0.0
    assert _optimizer(model, "adam", 0.1, 1e-4).param_groups[0]["weight_decay"] == 1e-4
    data = tiny_data(8)
    with pytest.raises(ConfigError, match="weight decay"):
        train(tiny_model(), data, 1, weight_decay=-1.0)
    with pytest.raises(ConfigError, match="schedule"):
        train(tiny_model(), data, 1, schedule="step")
    with pytest.raises(ConfigError, match="unknown device 'gpu'"):
        check_device("gpu")
    assert check_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            check_device("cuda")


def test_training_with_every_option_is_seeded() -> None:
    data = tiny_data(24)
    a, b, plain = tiny_model(), tiny_model(), tiny_model()
    for model in (a, b):
        train(
            model,
            data,
            2,
            8,
            0.05,
            3,
            augment=True,
            schedule="onecycle",
            weight_decay=1e-3,
            channels_last=True,
        )
    train(plain, data, 2, 8, 0.05, seed=3)
    sa, sb, sp = a.state_dict(), b.state_dict(), plain.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sp[k]) for k in sa)


def test_bf16_mixed_precision_learns_keeps_fp32_weights_and_is_seeded() -> None:
    data = tiny_data(40)
    a, b, full = tiny_model(), tiny_model(), tiny_model()
    ha = train(a, data, 4, 8, 0.05, seed=0, optimizer="adam", precision="bf16")
    hb = train(b, data, 4, 8, 0.05, seed=0, optimizer="adam", precision="bf16")
    train(full, data, 4, 8, 0.05, seed=0, optimizer="adam")
    assert [e.loss for e in ha.epochs] == [e.loss for e in hb.epochs]
    assert all(p.dtype == torch.float32 for p in a.parameters())  # autocast, not a bf16 model
    assert any(not torch.equal(pa, pf) for pa, pf in zip(a.parameters(), full.parameters(), strict=True))
    assert ha.epochs[-1].loss < ha.epochs[0].loss
    assert evaluate(a, data).accuracy >= 0.9
    with pytest.raises(ConfigError, match="unknown precision 'fp16'; use fp32 or bf16"):
        train(tiny_model(), data, 1, precision="fp16")


def test_bf16_is_flagged_where_the_cpu_only_emulates_it(monkeypatch: pytest.MonkeyPatch) -> None:
    flags: set[str] = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        line = next((x for x in cpuinfo.read_text().splitlines() if x.startswith("flags")), "")
        flags = set(line.split())
    if flags and not flags & {"avx512f", "amx_bf16"}:  # AVX2 at most: oneDNN emulates bf16
        assert native_bf16("cpu") is False
        assert "emulated" in (precision_warning("bf16", "cpu") or "")
    if flags & {"avx512_bf16", "amx_bf16"}:
        assert native_bf16("cpu") is True and precision_warning("bf16", "cpu") is None
    assert precision_warning("fp32", "cpu") is None
    monkeypatch.setattr(training, "native_bf16", lambda device: False)
    warning = precision_warning("bf16", "cpu")
    assert warning is not None and "\n" not in warning and "--precision fp32" in warning
    assert precision_warning("fp32", "cpu") is None
    monkeypatch.setattr(training, "native_bf16", lambda device: True)
    assert precision_warning("bf16", "cpu") is None


def test_resuming_from_an_epoch_snapshot_gives_the_uninterrupted_run(tmp_path: Path) -> None:
    data = tiny_data(24)
    options = {"augment": True, "schedule": "onecycle", "weight_decay": 1e-3, "channels_last": True}
    whole, part, resumed = tiny_model(), tiny_model(), tiny_model()
    snapshots: list[dict[str, Any]] = []
    full = train(whole, data, 3, 8, 0.05, 3, **options)
    train(part, data, 3, 8, 0.05, 3, **options, on_epoch=snapshots.append)
    assert [s["epoch"] for s in snapshots] == [1, 2, 3]
    # through a file loaded the way every checkpoint is, as an interrupted command would
    torch.save(snapshots[0], tmp_path / "snap.pt")
    snap = torch.load(tmp_path / "snap.pt", weights_only=True)
    history = train(resumed, data, 3, 8, 0.05, 3, **options, resume=snap)
    assert [e.epoch for e in history.epochs] == [1, 2, 3]
    assert [e.loss for e in history.epochs] == [e.loss for e in full.epochs]
    sw, sr = whole.state_dict(), resumed.state_dict()
    assert all(torch.equal(sw[k], sr[k]) for k in sw)
    # a snapshot of another model or schedule is refused in words
    with pytest.raises(ConfigError, match="does not fit"):
        train(nn.Sequential(nn.Flatten(), nn.Linear(64, 2)), data, 3, 8, 0.05, 3, resume=snap)
    with pytest.raises(ConfigError, match="does not fit"):
        train(tiny_model(), data, 3, 8, 0.05, 3, resume=snap)  # constant schedule: no scheduler state
    with pytest.raises(ConfigError, match=r"epoch 1, outside 1\.\.0"):
        train(tiny_model(), data, 0, 8, 0.05, 3, **options, resume=snap)


def test_weight_averaging_ends_with_the_mean_of_the_epochs_and_fresh_batch_norm_statistics() -> None:
    data = tiny_data(24)
    averaged, plain = tiny_model(), tiny_model()
    snapshots: list[dict[str, Any]] = []
    train(averaged, data, 4, 8, 0.05, 3, average_from=2, on_epoch=snapshots.append)
    train(plain, data, 4, 8, 0.05, 3)
    # the same trajectory as without averaging: every epoch's weights are those of the plain run
    last = snapshots[-1]["model"]
    assert all(torch.equal(last[k], v) for k, v in plain.state_dict().items())
    assert snapshots[-1]["average"]["count"] == 3 and "average" in snapshots[0]
    for name, p in averaged.named_parameters():
        mean = sum(s["model"][name] for s in snapshots[1:]) / 3  # epochs 2, 3 and 4
        torch.testing.assert_close(p.detach(), mean, rtol=0, atol=1e-6)
    # batch norm's running statistics belong to the averaged weights: with 24 images in batches
    # of 8 and no augmentation, the first one's mean is the mean of conv0's output over all images
    conv, norm = averaged.features[0], averaged.features[1]
    with torch.no_grad():
        out = conv(data.images)
    torch.testing.assert_close(norm.running_mean, out.mean(dim=(0, 2, 3)), rtol=0, atol=1e-5)
    assert norm.momentum == 0.1 and not averaged.training
    assert not torch.allclose(norm.running_mean, plain.features[1].running_mean, atol=1e-4)


def test_weight_averaging_resumes_exactly_and_is_checked(tmp_path: Path) -> None:
    data = tiny_data(24)
    options: dict[str, Any] = {"augment": True, "schedule": "cosine", "average_from": 1}
    whole, resumed = tiny_model(), tiny_model()
    snapshots: list[dict[str, Any]] = []
    train(whole, data, 3, 8, 0.05, 3, **options, on_epoch=snapshots.append)
    torch.save(snapshots[1], tmp_path / "snap.pt")  # cut after epoch 2, mid-average
    snap = torch.load(tmp_path / "snap.pt", weights_only=True)
    train(resumed, data, 3, 8, 0.05, 3, **options, resume=snap)
    sw, sr = whole.state_dict(), resumed.state_dict()
    assert all(torch.equal(sw[k], sr[k]) for k in sw)  # weights and recomputed statistics alike
    plain = {"augment": True, "schedule": "cosine"}
    with pytest.raises(ConfigError, match=r"does not fit.*weight averaging differs"):
        train(tiny_model(), data, 3, 8, 0.05, 3, **plain, resume=snap)
    without: list[dict[str, Any]] = []
    train(tiny_model(), data, 2, 8, 0.05, 3, **plain, on_epoch=without.append)
    with pytest.raises(ConfigError, match=r"does not fit.*weight averaging differs"):
        train(tiny_model(), data, 2, 8, 0.05, 3, **options, resume=without[0])
    for bad in (0, 4):
        with pytest.raises(
            ConfigError, match=rf"weight averaging must start at an epoch in 1\.\.3, got {bad}"
        ):
            train(tiny_model(), data, 3, 8, 0.05, 3, average_from=bad)
