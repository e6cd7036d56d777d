"""The dataset registry: ``data.dataset`` in a config is a name registered here.

Built-in datasets are read by ``fl_privacy.data.datasets``; a new one registers a
``loader(split, root, download, path) -> ImageData`` with ``register_dataset``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fl_privacy.errors import did_you_mean

Loader = Callable[[str, Path, bool, "str | None"], Any]
"""Returns an ``ImageData`` (not imported here: the datasets module asks this registry)."""


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: its name, whether it reads ``data.path``, and (for registered ones) how it is loaded."""

    name: str
    needs_path: bool = False
    """True when the dataset is read from ``data.path`` (an archive, folder or .npz file)."""
    loader: Loader | None = None
    """``loader(split, root, download, path)``; None for the built-in readers of ``fl_privacy.data.datasets``."""
    summary: str = ""


_DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Make ``spec`` available as ``data.dataset: <spec.name>``; a name already taken is a ``ValueError``."""
    if spec.name in _DATASETS:
        raise ValueError(f"dataset '{spec.name}' is already registered: choose another name")
    _DATASETS[spec.name] = spec
    return spec


def get_dataset(name: str) -> DatasetSpec:
    """The registered dataset ``name``; an unknown name is a ``ValueError`` with a suggestion and the choices."""
    if name not in _DATASETS:
        raise ValueError(f"unknown dataset '{name}'{did_you_mean(name, _DATASETS)} (choices: {', '.join(_DATASETS)})")
    return _DATASETS[name]


def dataset_names() -> tuple[str, ...]:
    """Registered dataset names, in registration order."""
    return tuple(_DATASETS)


for _name in ("cifar10", "cifar100", "mnist", "fashion_mnist"):
    register_dataset(DatasetSpec(_name, summary="torchvision (or an offline copy in data.data_dir)"))
for _name in ("imagefolder", "npz"):
    register_dataset(DatasetSpec(_name, needs_path=True, summary="read from data.path"))
for _name in ("skimage_photos_32", "skimage_photos_64", "skimage_photos_128", "skimage_photos_256", "lfw_faces"):
    register_dataset(DatasetSpec(_name, summary="bundled with scikit-image"))
