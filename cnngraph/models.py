"""Models: the project's reference architectures and loading any user model by spec.

A *spec* names where a model comes from:

- a reference architecture: ``vgg11``, ``vgg13``, ``vgg16`` (batch norm, for 32x32 or 28x28
  inputs, any width multiplier), ``small_cnn``, or the CIFAR-style ``resnet20`` and ``resnet56``;
- a torchvision architecture: ``torchvision:NAME`` (architecture only; weights from a checkpoint);
- user code: ``package.module:factory`` or ``path/to/file.py:factory`` (called with no arguments);
- an ONNX file: ``path/to/model.onnx`` (architecture and weights; converted by
  :mod:`cnngraph.onnx_models`, its input shape from the ONNX graph).

Constructor arguments follow a ``?``, as in a URL: ``torchvision:googlenet?aux_logits=false``,
``torchvision:resnet18?zero_init_residual=true&width_per_group=32`` or
``my_models.py:make?depth=3``; values are ``true``/``false``, ``none``, integers, decimals or
text. They are part of the spec (its ``source``), so a mapping, a checkpoint and a pruned model
record them and rebuild the same model.

Checkpoints are state dicts loaded with ``weights_only=True``; a checkpoint written by
``cnngraph train`` also carries the spec, so the model can be rebuilt from it alone. An ``.onnx``
file given as a checkpoint reads as its converted state dict and spec.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnngraph.errors import ModelError, counted
from cnngraph.files import atomic_path
from cnngraph.onnx_models import is_onnx_source

VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}
SMALL_CNN_CONFIG: list[int | str] = [16, 16, "M", 32, 32, "M", 64]
RESNET_DEPTHS = {"resnet20": 3, "resnet56": 9}  # basic blocks per stage: depth = 6n + 2
REFERENCE_ARCHITECTURES = (*VGG_CONFIGS, "small_cnn", *RESNET_DEPTHS)


class VGG(nn.Module):
    """VGG with batch norm for small inputs: ``features``, flatten, ``classifier``.

    Pooling uses ``ceil_mode`` so that 28x28 inputs (MNIST) pass all five pools (28, 14, 7, 4,
    2, 1) as 32x32 ones do (32, 16, 8, 4, 2, 1).
    """

    def __init__(
        self,
        config: list[int | str],
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        width: float = 1.0,
        hidden: int | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        size = input_size
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
                size = (size + 1) // 2
            else:
                out = max(1, round(int(item) * width))
                layers += [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                channels = out
        self.features = nn.Sequential(*layers)
        hidden = hidden or max(32, round(512 * width))
        self.classifier = nn.Sequential(
            nn.Linear(channels * size * size, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm plus a shortcut: the input itself, or a 1x1
    projection convolution with batch norm where the block changes the stride or the width.

    Written so that torch.fx sees each convolution called once and the addition's operands are
    the branch and the shortcut themselves (docs/METHOD.md section 8: a removable residual branch).
    """

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut: nn.Sequential | None = None
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.shortcut is None else self.shortcut(x)
        return torch.relu(out + identity)


class CifarResNet(nn.Module):
    """ResNet for small images (He et al. 2016, section 4.2): a 3x3 stem of 16 filters, three
    stages of ``n`` basic blocks with 16/32/64 filters (stride 2 and a projection shortcut at the
    first block of stages 2 and 3), global average pooling and one linear layer; 6n + 2 layers.
    Any input size works (the pooling is global); ``width`` scales every filter count.
    """

    def __init__(self, blocks: int, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        widths = [max(1, round(c * width)) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages = []
        channels = widths[0]
        for s, out in enumerate(widths):
            layers = []
            for b in range(blocks):
                layers.append(BasicBlock(channels, out, 2 if s > 0 and b == 0 else 1))
                channels = out
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from and how it was built; stored with every mapping and pruning."""

    source: str
    num_classes: int = 10
    in_channels: int = 3
    input_size: int = 32
    width: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        return cls(
            source=str(d["source"]),
            num_classes=int(d.get("num_classes", 10)),
            in_channels=int(d.get("in_channels", 3)),
            input_size=int(d.get("input_size", 32)),
            width=float(d.get("width", 1.0)),
            extra=dict(d.get("extra", {})),
        )


def spec_on_graph(props: dict[str, Any]) -> dict[str, Any] | None:
    """The spec 'cnngraph map' recorded in a ``:Model`` node's ``description`` (JSON), or None."""
    try:
        description = json.loads(str(props.get("description") or "{}"))
    except ValueError:
        return None
    spec = description.get("spec") if isinstance(description, dict) else None
    return spec if isinstance(spec, dict) and isinstance(spec.get("source"), str) else None


def spec_for_arch(
    arch: str | None, recorded: dict[str, Any] | None, defaults: Callable[[], dict[str, Any]]
) -> ModelSpec | None:
    """The spec of a checkpoint being loaded again: ``--arch`` as its source, over the recorded
    spec's fields, over ``defaults()`` (asked for only then: the data's shape and classes); else the
    recorded spec; None when neither says which model it is (the caller says what to give)."""
    if arch is not None:
        return ModelSpec.from_dict({**defaults(), **(recorded or {}), "source": arch})
    return ModelSpec.from_dict(recorded) if recorded is not None else None


RESERVED_ARGUMENTS = {
    "num_classes": "it comes from --num-classes (default: the dataset's classes)",
    "weights": "cnngraph downloads nothing; give trained weights with --checkpoint",
}


def split_source(source: str) -> tuple[str, dict[str, Any]]:
    """``'torchvision:googlenet?aux_logits=false'`` -> ``('torchvision:googlenet', {'aux_logits': False})``.

    Arguments are ``key=value`` pairs joined by ``&``; keys are Python identifiers, each given once.
    """
    base, mark, query = source.partition("?")
    if not mark:
        return source, {}
    if not query.strip():
        raise ModelError(f"model '{source}' has a '?' but no arguments after it; write NAME?key=value")
    args: dict[str, Any] = {}
    for item in query.split("&"):
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key.isidentifier():
            raise ModelError(
                f"model argument '{item}' of '{source}' is not key=value with a Python name as key "
                "(e.g. torchvision:googlenet?aux_logits=false)"
            )
        if key in args:
            raise ModelError(f"model argument '{key}' is given twice in '{source}'")
        if key in RESERVED_ARGUMENTS:
            raise ModelError(f"model argument '{key}' cannot be set in '{source}': {RESERVED_ARGUMENTS[key]}")
        args[key] = _argument_value(text.strip())
    return base, args


def _argument_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def build_model(spec: ModelSpec) -> nn.Module:
    """A fresh (untrained) model for ``spec``; a :class:`ModelError` naming what is wrong.

    An ONNX file is converted with its own weights (and must be the file the spec recorded).
    """
    if is_onnx_source(spec.source):
        return _onnx_model(spec)
    source, args = split_source(spec.source)
    if args and not (source.startswith("torchvision:") or ":" in source):
        raise ModelError(
            f"'{source}' takes no constructor arguments ('?...'); use --width, --input-size, --in-channels "
            "and --num-classes"
        )
    if source in VGG_CONFIGS:
        return VGG(VGG_CONFIGS[source], spec.num_classes, spec.in_channels, spec.input_size, spec.width)
    if source == "small_cnn":
        return VGG(
            SMALL_CNN_CONFIG, spec.num_classes, spec.in_channels, spec.input_size, spec.width, hidden=64
        )
    if source in RESNET_DEPTHS:
        return CifarResNet(RESNET_DEPTHS[source], spec.num_classes, spec.in_channels, spec.width)
    if source.startswith("torchvision:"):
        return _torchvision_model(source.split(":", 1)[1], spec.num_classes, args)
    if ":" in source:
        return _factory_model(source, args)
    raise ModelError(
        f"unknown model '{source}'; use one of {', '.join(REFERENCE_ARCHITECTURES)}, "
        "'torchvision:NAME', 'package.module:factory', 'path/to/file.py:factory' or 'path/to/model.onnx'"
    )


def _onnx_model(spec: ModelSpec) -> nn.Module:
    from cnngraph.onnx_models import load_onnx

    converted = load_onnx(spec.source)
    recorded = spec.extra.get("sha256")
    if recorded and recorded != converted.sha256:
        raise ModelError(
            f"ONNX model '{spec.source}' changed since it was mapped (its SHA-256 differs); map it again"
        )
    return converted.module


def onnx_spec(source: str | Path) -> ModelSpec:
    """The spec of an ONNX file: its absolute path, input shape, outputs and digest (``extra``)."""
    from cnngraph.onnx_models import load_onnx

    path = Path(source).resolve()
    converted = load_onnx(path)
    c, h, _ = converted.input_shape
    return ModelSpec(
        source=str(path),
        num_classes=converted.num_outputs or 0,
        in_channels=c,
        input_size=h,
        extra=converted.describe(),
    )


TORCHVISION_DEFAULTS = {
    # Auxiliary classifiers run only in training and are not part of the network that is mapped;
    # init_weights=False keeps PyTorch's default initialisation (and torchvision quiet about it).
    "googlenet": {"aux_logits": False, "init_weights": False},
    "inception_v3": {"aux_logits": False, "init_weights": False},
}


def _torchvision_model(name: str, num_classes: int, args: dict[str, Any] | None = None) -> nn.Module:
    import torchvision

    if name not in torchvision.models.list_models():
        raise ModelError(f"torchvision has no architecture '{name}'; see torchvision.models.list_models()")
    kwargs = {**TORCHVISION_DEFAULTS.get(name, {}), **(args or {})}
    try:
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    except (ValueError, KeyError, TypeError, AssertionError) as e:
        given = ", ".join(f"{k}={v!r}" for k, v in (args or {}).items()) or "no arguments"
        raise ModelError(
            f"torchvision:{name} cannot be built with {given} ({type(e).__name__}: {_first_line(e)}); "
            "check the argument names and values of its constructor"
        ) from e


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _factory_model(source: str, args: dict[str, Any] | None = None) -> nn.Module:
    target, _, attr = source.rpartition(":")
    if not attr:
        raise ModelError(f"model spec '{source}' names no factory after ':'")
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise ModelError(f"model file '{path}' does not exist")
            mod_name = f"cnngraph_user_{path.stem}"
            spec = importlib.util.spec_from_file_location(mod_name, path)
            if spec is None or spec.loader is None:
                raise ModelError(f"cannot import '{path}' as a Python module")
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except ModelError:
        raise
    except Exception as e:  # user code: any failure is the user's to fix
        raise ModelError(f"importing '{target}' failed: {type(e).__name__}: {e}") from e
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise ModelError(f"'{target}' has no callable '{attr}'")
    try:
        model = factory(**(args or {}))
    except Exception as e:
        raise ModelError(f"calling '{source}' failed: {type(e).__name__}: {_first_line(e)}") from e
    if not isinstance(model, nn.Module):
        raise ModelError(f"'{source}' returned {type(model).__name__}, not a torch.nn.Module")
    return model


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, info)`` from a checkpoint, loaded with ``weights_only=True``.

    Accepts a bare state dict, or a dict with ``state_dict`` (and, from ``cnngraph train``, a
    ``cnngraph`` entry holding the spec and training facts).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint '{path}' does not exist")
    if is_onnx_source(str(path)):
        spec = onnx_spec(path)
        return build_model(spec).state_dict(), {"spec": spec.to_dict()}
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(
            f"cannot read checkpoint '{path}' with weights_only=True ({type(e).__name__}); "
            "save a state dict (model.state_dict()) instead of a pickled model"
        ) from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        return obj["state_dict"], dict(obj.get("cnngraph", {}))
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, {}
    raise ModelError(f"checkpoint '{path}' holds no state dict")


def check_finite_weights(state_dict: dict[str, torch.Tensor], origin: str) -> None:
    """Refuse a checkpoint with NaN or infinite values, naming the first such tensor."""
    for name, tensor in state_dict.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ModelError(
                f"checkpoint '{origin}': tensor '{name}' has {bad} NaN or infinite values; "
                "the model diverged or the file is damaged, use another checkpoint"
            )


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], origin: str) -> None:
    """Load ``state_dict`` strictly; a mismatch (keys or shapes) is one line naming the first ones."""
    own = model.state_dict()
    wrong = [
        (k, tuple(v.shape), tuple(own[k].shape))
        for k, v in state_dict.items()
        if k in own and isinstance(v, torch.Tensor) and tuple(v.shape) != tuple(own[k].shape)
    ]
    if wrong:
        key, theirs, ours = wrong[0]
        more = f" (and {counted(len(wrong) - 1, 'more tensor')} of another shape)" if len(wrong) > 1 else ""
        raise ModelError(
            f"checkpoint '{origin}' does not fit the model: '{key}' is {list(theirs)} in the checkpoint but "
            f"{list(ours)} in the model{more}; build the model it was trained as (its architecture, "
            "--width, --in-channels, --num-classes, --input-size)"
        )
    result = model.load_state_dict(state_dict, strict=False)
    problems = []
    if result.missing_keys:
        problems.append(f"missing {', '.join(result.missing_keys[:3])}")
    if result.unexpected_keys:
        problems.append(f"unexpected {', '.join(result.unexpected_keys[:3])}")
    if problems:
        raise ModelError(f"checkpoint '{origin}' does not fit the model: {'; '.join(problems)}")


def save_checkpoint(path: str | Path, model: nn.Module, info: dict[str, Any]) -> Path:
    """Write a state dict plus JSON-able ``info`` atomically; loadable with ``weights_only=True``."""
    return save_atomically(path, {"state_dict": model.state_dict(), "cnngraph": info})


def save_atomically(path: str | Path, obj: Any) -> Path:
    """``torch.save`` into a temporary file of this process beside ``path``, then rename it over
    ``path``: a reader, a ``kill -9`` or a second writer never sees a half-written file."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path


def load_model(spec: ModelSpec | None, checkpoint: str | Path | None = None) -> tuple[nn.Module, ModelSpec]:
    """Build the model of ``spec`` (or the spec stored in ``checkpoint``) and load its weights."""
    state: dict[str, torch.Tensor] | None = None
    if checkpoint is not None:
        state, info = read_checkpoint(checkpoint)
        check_finite_weights(state, str(checkpoint))
        if spec is None:
            if not isinstance(info.get("spec"), dict):
                raise ModelError(
                    f"checkpoint '{checkpoint}' does not say which model it is (only 'cnngraph train' "
                    "records that); name it: 'cnngraph map MODEL DATA', or --arch for prune and sweep"
                )
            spec = ModelSpec.from_dict(info["spec"])
    if spec is None:
        raise ModelError("no model given; name the architecture (and give --checkpoint for trained weights)")
    if is_onnx_source(spec.source) and not spec.extra.get("sha256"):
        spec = onnx_spec(spec.source)  # architecture, weights and input shape come from the file
    model = build_model(spec)
    if state is not None:
        try:
            load_weights(model, state, str(checkpoint))
        except RuntimeError as e:
            reason = " ".join(str(e).split())  # PyTorch's message spans lines: one line
            raise ModelError(f"checkpoint '{checkpoint}' does not fit '{spec.source}': {reason}") from e
    model.eval()
    return model, spec


def untrained_warning(spec: ModelSpec, checkpoint: str | Path | None) -> str | None:
    """What to tell a user who maps a built-in or torchvision architecture without trained weights."""
    if checkpoint is not None:
        return None
    source, _ = split_source(spec.source)
    if source in REFERENCE_ARCHITECTURES or source.startswith("torchvision:"):
        return (
            f"{source} has no --checkpoint: its weights are random (untrained), so the mapping describes "
            "an untrained network; give --checkpoint with trained weights"
        )
    return None


def check_input_shape(spec: ModelSpec, shape: tuple[int, int, int]) -> None:
    """An ONNX model's graph fixes its input shape: refuse images of another shape before tracing."""
    expected = spec.extra.get("input_shape") if is_onnx_source(spec.source) else None
    if expected is not None and tuple(int(x) for x in expected) != tuple(shape):
        want, got = "x".join(map(str, expected)), "x".join(map(str, shape))
        raise ModelError(
            f"ONNX model '{spec.source}' takes {want} inputs (channels x height x width, from its graph), "
            f"the images are {got}; resize the images or export the model for {got}"
        )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
