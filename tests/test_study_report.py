"""The study report rebuilds the training commands of a baseline, every stage of an --init chain."""

from __future__ import annotations

from typing import Any

from bench_module import load_bench_script


def report_module() -> Any:
    return load_bench_script("bench/experiments/study_report.py")


def stage(
    epochs: int, lr: float, schedule: str, seed: int, init: dict[str, Any] | None = None
) -> dict[str, Any]:
    t: dict[str, Any] = {
        "epochs": epochs, "batch_size": 128, "lr": lr, "optimizer": "sgd", "seed": seed, "augment": True,
        "schedule": schedule, "weight_decay": 0.0005, "device": "cpu", "channels_last": True,
        "precision": "bf16",
    }  # fmt: skip
    if init is not None:
        t["init"] = init
    return t


def test_two_stage_baseline_gives_both_commands_in_order() -> None:
    report = report_module()
    first = stage(150, 0.2, "onecycle", 0)
    second = stage(30, 0.05, "cosine", 1, {"checkpoint": "/tmp/a.pt", "sha256": "ab", "accuracy": 0.8924,
                                           "training": first, "data": {}})  # fmt: skip
    result = {
        "spec": {"source": "resnet20", "width": 1.0},
        "checkpoint": {"path": "b.pt", "training": second,
                       "data": {"source": "cifar", "split": "train", "test_split": "test"}},
    }  # fmt: skip
    one, two = report.train_commands(result)
    assert "--epochs 150" in one and "--lr 0.2 " in one and "--schedule onecycle" in one
    assert one.endswith("--out /tmp/a.pt --json") and "--init" not in one
    assert "--epochs 30" in two and "--seed 1" in two and "--init /tmp/a.pt --out b.pt --json" in two
    summary = report.training_summary(second)
    assert summary.index("150 epochs") < summary.index("then from that checkpoint (89.24%): 30 epochs")
    # A weight-averaging stage says so, in the command and in the summary.
    second["average_from"] = 1
    assert report.train_commands(result)[1].endswith("--average-from 1 --init /tmp/a.pt --out b.pt --json")
    assert report.training_summary(second).endswith("seed 1, weights averaged from epoch 1 (SWA)")
    # A one-stage baseline is one command, as before.
    result["checkpoint"]["training"] = first
    (only,) = report.train_commands(result)
    assert only.endswith("--out b.pt --json") and "--init" not in only


def test_a_second_budget_of_the_same_baseline_is_told_apart() -> None:
    report = report_module()
    study: dict[str, Any] = {
        "spec": {"source": "resnet20", "width": 1.0},
        "original": {"accuracy": 0.9, "precision": 0.9, "recall": 0.9, "parameters": 10, "macs": 20},
        "checkpoint": {"path": "resnet20.pt", "sha256": "ab" * 32,
                        "training": stage(150, 0.2, "onecycle", 0)},
        "budget": {"ft_epochs": 1, "ft_lr": 0.02},
        "config": {"checkpoint": "b.pt", "ft_epochs": 1, "ft_lr": 0.02, "random_seeds": 5, "permutations": 20,
                   "images_per_class": 64, "out": "/elsewhere/docs/results/study"},
    }  # fmt: skip
    second = {**study, "budget": {"ft_epochs": 3, "ft_lr": 0.01}}
    out = "docs/results/study/budget-b"
    second["config"] = {**study["config"], "ft_epochs": 3, "ft_lr": 0.01, "out": out}
    rows = [line for line in report.baselines([study, second]) if line.startswith("| resnet20")]
    assert len(rows) == 1, rows
    assert report.budget_title(study) == "resnet20, fine-tune 1 epoch from lr 0.02"
    assert report.budget_title(second) == "resnet20, fine-tune 3 epochs from lr 0.01"
    assert "--out" not in report.study_command(study)
    assert "--ft-epochs 3 --ft-lr 0.01" in report.study_command(second)
    assert f" --out {out} " in report.study_command(second)


def test_a_second_baseline_of_the_same_model_is_named_by_its_checkpoint() -> None:
    report = report_module()
    spec = {"source": "resnet20", "width": 1.0}
    first = {"spec": spec, "checkpoint": {"path": "bench/experiments/baselines/resnet20.pt"}}
    second = {"spec": spec, "checkpoint": {"path": "bench/experiments/baselines/resnet20-200ep.pt"}}
    assert report.title(first) == "resnet20"
    assert report.title(second) == "resnet20, `resnet20-200ep.pt`"
    vgg = {"spec": {"source": "vgg16", "width": 0.5}, "checkpoint": {"path": "x/vgg16.pt"}}
    assert report.title(vgg) == "vgg16 (width x0.5)"
