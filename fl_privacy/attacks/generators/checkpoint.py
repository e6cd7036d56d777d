"""Check a generator checkpoint completely before any attack uses it.

A checkpoint is read with ``torch.load(weights_only=True)`` (no code in the file
ever runs) and checked for its format, its keys, the generator's constructor
arguments, every tensor's name and shape, and (when given) the victim's image
shape. Each problem is one ``ConfigError`` that says what is wrong and how to get
a good checkpoint (``fl-privacy train-generator``).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from fl_privacy.errors import ConfigError

REQUIRED_KEYS = ("format", "config", "state_dict", "classes", "mean", "std", "image_shape")
_RETRAIN = "train a new one with `fl-privacy train-generator --out PATH ...`"


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint dict, read without running code from the file; every failure is a ``ConfigError``."""
    p = Path(path).expanduser()
    where = f"attack.generator '{p}'"
    if p.is_dir():
        raise ConfigError(f"{where} is a directory: give the checkpoint file (.pt)")
    if not p.is_file():
        raise ConfigError(f"{where} does not exist ({_RETRAIN})")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" in str(err):  # a class or function that would be called when unpickled
            raise ConfigError(f"{where} holds objects other than tensors and plain values (loading them could run "
                              f"code), so it is refused: use a checkpoint written by fl-privacy, or {_RETRAIN}") from None
        raise ConfigError(f"{where} is not a readable checkpoint (corrupt or not a torch file): {_RETRAIN}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise ConfigError(f"{where} is not a readable checkpoint ({reason}): {_RETRAIN}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where} holds a {type(data).__name__}, not a generator checkpoint: {_RETRAIN}")
    return data


def check_checkpoint(path: str | os.PathLike, image_shape: Sequence[int] | None = None) -> dict[str, Any]:
    """Read and fully check a checkpoint; return its info (everything but the weights).

    ``image_shape`` (C, H, W) of the victim's data: the generator must make images of that shape.
    """
    from fl_privacy.attacks.generators.saved import CHECKPOINT_FORMAT

    data = read_checkpoint(path)
    where = f"attack.generator '{Path(path).expanduser()}'"
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ConfigError(f"{where} lacks the keys {missing} of a generator checkpoint: {_RETRAIN}")
    if data["format"] != CHECKPOINT_FORMAT:
        raise ConfigError(f"{where} has format {data['format']!r}, this version reads {CHECKPOINT_FORMAT!r}: "
                          f"{_RETRAIN}")
    generator = _build(data, where)
    _check_tensors(generator.state_dict(), data["state_dict"], where)
    made = (generator.nc, generator.image_size, generator.image_size)
    if tuple(data["image_shape"]) != made:
        raise ConfigError(f"{where} says image_shape {tuple(data['image_shape'])} but its generator makes {made}: "
                          f"{_RETRAIN}")
    if image_shape is not None and tuple(image_shape) != made:
        raise ConfigError(f"{where} makes images of shape {made}, the victim's data has {tuple(image_shape)}: train "
                          f"a generator on data of the victim's image shape (fl-privacy train-generator --dataset ...)")
    return {k: v for k, v in data.items() if k != "state_dict"}


def _build(data: dict[str, Any], where: str):
    """The generator the checkpoint's config describes (its constructor arguments checked)."""
    from fl_privacy.attacks.generators.dcgan import Generator

    config = data["config"]
    kwargs = config.get("generator") if isinstance(config, dict) else None
    if not isinstance(kwargs, dict):
        raise ConfigError(f"{where} has no generator settings (config.generator): {_RETRAIN}")
    try:
        return Generator(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where} has invalid generator settings {kwargs} ({err}): {_RETRAIN}") from None


def _check_tensors(expected: dict[str, torch.Tensor], found: Any, where: str) -> None:
    if not isinstance(found, dict) or not all(isinstance(v, torch.Tensor) for v in found.values()):
        raise ConfigError(f"{where}: state_dict must map parameter names to tensors: {_RETRAIN}")
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    wrong = [f"{k} {tuple(found[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
             if k in found and found[k].shape != v.shape]
    problems = ([f"missing tensors {missing[:3]}"] if missing else []) + \
               ([f"unexpected tensors {extra[:3]}"] if extra else []) + ([f"shapes {', '.join(wrong[:3])}"] if wrong else [])
    if problems:
        raise ConfigError(f"{where} does not match the generator its settings describe: {'; '.join(problems)}: "
                          f"{_RETRAIN}")
