"""Model zoo for gradient-leakage experiments, built by name from the config.

A new model is one module with an ``nn.Module`` and its option defaults, plus one line:
``register_model("name", MyModel, DEFAULTS)``.

Every model is a plain ``nn.Module`` with two children, ``features`` and
``classifier`` (the last module of ``classifier`` is the output ``nn.Linear``), uses
non-inplace activations so attacks can differentiate through gradients, and works
with ``torch.func.functional_call``.

    model = build_model("convnet", num_classes=10, in_channels=3, image_size=32,
                        width=64, dropout=0.5)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

from torch import nn

from . import convnet, densenet, fedavg_cnn, googlenet, lenet, mlp, resnet, small_cnn
from ._common import check_int

__all__ = ["MODEL_NAMES", "ModelSpec", "build_model", "count_parameters", "model_names", "model_options", "register_model",
           "unregister_model"]


@dataclass(frozen=True)
class ModelSpec:
    """One registered model: how it is built and the options it accepts, with their defaults."""

    factory: Callable[..., nn.Module]
    """``factory(num_classes=, in_channels=, image_size=, **options)``."""
    defaults: Mapping[str, object]


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, factory: Callable[..., nn.Module], defaults: Mapping[str, object]) -> ModelSpec:
    """Make ``factory`` available as ``model.name: <name>``; a name already taken is a ``ValueError``."""
    if name in _REGISTRY:
        raise ValueError(f"model '{name}' is already registered: choose another name")
    _REGISTRY[name] = ModelSpec(factory, defaults)
    return _REGISTRY[name]


def unregister_model(name: str) -> None:
    """Remove a registered model (tests that register toy models clean up with this)."""
    _REGISTRY.pop(name, None)


def model_names() -> tuple[str, ...]:
    """Registered model names, in registration order (the built-in ones first)."""
    return tuple(_REGISTRY)


register_model("lenet", lenet.LeNet, lenet.DEFAULTS)
register_model("convnet", convnet.ConvNet, convnet.DEFAULTS)
register_model("resnet18", partial(resnet.ResNet, blocks_per_stage=resnet.BLOCKS_PER_STAGE["resnet18"]),
               resnet.DEFAULTS)
register_model("resnet34", partial(resnet.ResNet, blocks_per_stage=resnet.BLOCKS_PER_STAGE["resnet34"]),
               resnet.DEFAULTS)
register_model("small_cnn", small_cnn.SmallCNN, small_cnn.DEFAULTS)
register_model("googlenet", googlenet.GoogLeNet, googlenet.DEFAULTS)
register_model("densenet43", partial(densenet.DenseNet, depth=43), densenet.DEFAULTS)
register_model("densenet53", partial(densenet.DenseNet, depth=53), densenet.DEFAULTS)
register_model("mlp", mlp.MLP, mlp.DEFAULTS)
register_model("fedavg_cnn", fedavg_cnn.FedAvgCNN, fedavg_cnn.DEFAULTS)

MODEL_NAMES: tuple[str, ...] = model_names()
"""The built-in models (``model_names()`` also lists models registered later)."""


def _entry(name: str) -> ModelSpec:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; allowed models: {list(model_names())}")
    return _REGISTRY[name]


def model_options(name: str) -> dict[str, object]:
    """The options model ``name`` accepts, with their default values (a fresh copy)."""
    return dict(_entry(name).defaults)


def build_model(
    name: str, *, num_classes: int, in_channels: int, image_size: int, **options: object
) -> nn.Module:
    """Build model ``name`` for square inputs of ``in_channels`` x ``image_size``^2.

    Options set to ``None`` are ignored (the config passes every field, None when
    unset). Unknown options and invalid values raise ``ValueError``. Parameters are
    drawn from torch's global RNG, so ``torch.manual_seed`` beforehand makes the
    result reproducible.
    """
    entry = _entry(name)
    num_classes = check_int("num_classes", num_classes, minimum=1)
    in_channels = check_int("in_channels", in_channels, minimum=1)
    image_size = check_int("image_size", image_size, minimum=1)

    given = {key: value for key, value in options.items() if value is not None}
    unknown = sorted(set(given) - set(entry.defaults))
    if unknown:
        raise ValueError(
            f"model {name!r} does not accept option(s) {unknown}; "
            f"accepted options: {sorted(entry.defaults)}"
        )
    kwargs = {**entry.defaults, **given}
    return entry.factory(
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        **kwargs,
    )


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters (optionally only those with ``requires_grad``)."""
    return sum(
        p.numel() for p in model.parameters() if p.requires_grad or not trainable_only
    )
