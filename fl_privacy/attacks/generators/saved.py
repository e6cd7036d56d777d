"""Generator checkpoints: the saved layout, loading without running code, and the map into the attack space.

Checkpoints are plain dicts of Python scalars, strings, lists, tuples, dicts and
tensors, loadable with ``torch.load(path, weights_only=True)``; ``checkpoint.py``
validates one before anything is built from it.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fl_privacy.attacks.generators.dcgan import Discriminator, Generator

CHECKPOINT_FORMAT = "fl-privacy-dcgan/1"
"""``format`` key of a saved checkpoint (bumped when the layout changes)."""


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def to_attack_space(images_tanh: torch.Tensor, mean: tuple[float, ...] | list[float] | torch.Tensor,
                    std: tuple[float, ...] | list[float] | torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Generator output in [-1, 1] -> [0, 1] pixels -> the victim model's input space.

    ``(x + 1) / 2``, then ``(p - mean) / std`` per channel when ``normalize`` (the
    Observation's ``normalized`` flag). ``images_tanh`` is (..., C, H, W); ``mean`` and
    ``std`` are per channel and come from the *victim's* data domain (the Observation),
    which need not be the generator's training set. Differentiable; no host syncs.
    """
    pixels = (images_tanh + 1) * 0.5
    if not normalize:
        return pixels
    m = torch.as_tensor(mean, dtype=pixels.dtype, device=pixels.device).reshape(-1, 1, 1)
    s = torch.as_tensor(std, dtype=pixels.dtype, device=pixels.device).reshape(-1, 1, 1)
    if m.shape[0] != pixels.shape[-3] or s.shape[0] != pixels.shape[-3]:
        raise ValueError(f"mean/std have {m.shape[0]}/{s.shape[0]} channels, images {pixels.shape[-3]}")
    return (pixels - m) / s


@dataclass
class GeneratorCheckpoint:
    """A trained generator and what is needed to use and report it."""

    generator: Generator
    """In eval mode (BatchNorm uses its running statistics), on the training device."""
    config: dict[str, Any]
    """Training settings and the generator's constructor arguments (``config["generator"]``)."""
    classes: list[int]
    """Class ids of the auxiliary data the generator was trained on."""
    mean: tuple[float, ...]
    std: tuple[float, ...]
    """Normalization of the training dataset (the attack uses the Observation's own)."""
    image_shape: tuple[int, int, int]
    num_samples: int
    seconds: float
    """Wall-clock training time (excluding data loading)."""
    epochs: float
    """Epochs completed (fractional when ``max_steps`` stopped training inside an epoch)."""
    steps: int
    history: dict[str, list[float]] = field(default_factory=dict)
    """Per epoch means: ``d_loss``, ``g_loss``, ``d_real`` (D(x) as a probability), ``d_fake`` (D(G(z)))."""
    discriminator: Discriminator | None = None
    """Kept in memory for inspection; not saved."""

    @property
    def seconds_per_epoch(self) -> float:
        return self.seconds / self.epochs if self.epochs > 0 else math.nan

    def info(self) -> dict[str, Any]:
        """Everything but the weights, as plain types."""
        return {
            "format": CHECKPOINT_FORMAT,
            "config": copy.deepcopy(self.config),
            "classes": [int(c) for c in self.classes],
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "image_shape": [int(v) for v in self.image_shape],
            "num_samples": int(self.num_samples),
            "seconds": float(self.seconds),
            "epochs": float(self.epochs),
            "steps": int(self.steps),
            "seconds_per_epoch": float(self.seconds_per_epoch),
            "history": {k: [float(v) for v in vals] for k, vals in self.history.items()},
        }

    def to_dict(self) -> dict[str, Any]:
        state = {k: v.detach().cpu().clone() for k, v in self.generator.state_dict().items()}
        return {**self.info(), "state_dict": state}

    def save_checkpoint(self, path: str | os.PathLike) -> Path:
        """Write the checkpoint (atomically: temp file, then rename); return the path."""
        target = Path(path).expanduser()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        torch.save(self.to_dict(), tmp)
        os.replace(tmp, target)
        return target


def generator_from_checkpoint(data: dict[str, Any], device: torch.device | str | None = None
                              ) -> tuple[Generator, dict[str, Any]]:
    """Rebuild the generator from a checkpoint dict (as ``to_dict`` / ``torch.load`` give it)."""
    if data.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"not a generator checkpoint of format {CHECKPOINT_FORMAT!r} (got {data.get('format')!r})")
    kwargs = dict(data["config"]["generator"])
    generator = Generator(**kwargs)
    generator.load_state_dict(data["state_dict"])
    generator.to(torch.device(device) if device is not None else default_device()).eval()
    info = {k: v for k, v in data.items() if k != "state_dict"}
    info["image_shape"] = tuple(info["image_shape"])
    info["mean"], info["std"] = tuple(info["mean"]), tuple(info["std"])
    return generator, info


def load_generator(path: str | os.PathLike, device: torch.device | str | None = None
                   ) -> tuple[Generator, dict[str, Any]]:
    """Load a saved checkpoint: (generator in eval mode on ``device``, info dict without the weights).

    Uses ``torch.load(weights_only=True)``: no code is executed from the file.
    """
    data = torch.load(Path(path).expanduser(), map_location="cpu", weights_only=True)
    return generator_from_checkpoint(data, device)
