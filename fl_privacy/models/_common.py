"""Shared helpers for the model zoo: option checks, activations, feature-size probing.

Every model validates its own option values here so that a bad config fails at
construction time with a message that names the allowed choices.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

# Activation factories by config name. ``None`` means "no activation layer at all"
# (the SoK "remove ReLU" micro-design switch).
_ACTIVATIONS: dict[str, type[nn.Module] | None] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
    "none": None,
}


def check_choice(option: str, value: object, choices: Iterable[str]) -> str:
    """Return ``value`` lower-cased if it is one of ``choices``, else ValueError."""
    allowed = tuple(choices)
    if isinstance(value, str) and value.strip().lower() in allowed:
        return value.strip().lower()
    raise ValueError(f"{option} must be one of {list(allowed)}, got {value!r}")


def check_int(option: str, value: object, *, minimum: int) -> int:
    """Return ``value`` if it is an int >= ``minimum`` (not a bool), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{option} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_bool(option: str, value: object) -> bool:
    """Return ``value`` if it is a bool, else ValueError (no silent truthiness)."""
    if not isinstance(value, bool):
        raise ValueError(f"{option} must be one of [True, False], got {value!r}")
    return value


def check_probability(option: str, value: object) -> float:
    """Return ``value`` as float if it lies in [0, 1), else raise ValueError."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 0.0 <= value < 1.0
    ):
        raise ValueError(f"{option} must be a number in [0, 1), got {value!r}")
    return float(value)


def make_activation(name: str, allowed: Iterable[str]) -> nn.Module | None:
    """Build a fresh activation module (never in-place, so double backward works).

    Returns ``None`` for ``"none"``; callers then simply skip the layer.
    """
    key = check_choice("activation", name, allowed)
    factory = _ACTIVATIONS[key]
    return None if factory is None else factory()


def flat_features(features: nn.Module, in_channels: int, image_size: int) -> int:
    """Number of features ``features`` produces per sample, found by a dummy forward.

    Runs in eval mode under ``torch.no_grad`` so BatchNorm running statistics are not
    touched and no random numbers are drawn (construction stays seed-deterministic).
    """
    was_training = features.training
    features.eval()
    try:
        with torch.no_grad():
            out = features(torch.zeros(1, in_channels, image_size, image_size))
    except RuntimeError as exc:
        raise ValueError(
            f"image_size={image_size} with in_channels={in_channels} is too small or "
            f"incompatible with this architecture: {exc}"
        ) from exc
    finally:
        features.train(was_training)
    if out.numel() == 0:
        raise ValueError(f"image_size={image_size} leaves an empty feature map")
    return int(out[0].numel())
