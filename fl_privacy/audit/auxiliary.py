"""The attacker's public auxiliary data for GIA-L: a dataset split, restricted to some classes, and the
generator trained on it.

The SoK (Du et al. 2024, §4.2) counts the generator as auxiliary knowledge
trained on public data; the attack itself only gets the trained generator.
Loading and selecting that data is done here so the DCGAN training in
``fl_privacy.attacks.generators`` takes plain tensors.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from fl_privacy.attacks.generators.saved import GeneratorCheckpoint
from fl_privacy.attacks.generators.train import DCGANSettings, train_dcgan

CONFIG_KEYS = ("dataset", "split", "epochs", "batch_size", "nz", "ngf", "ndf", "lr", "beta1", "conditional",
               "max_samples", "max_steps", "seed", "device", "generator", "generator_parameters")
"""The checkpoint's ``config`` keys, in the order saved checkpoints and their ``.json`` files show them."""


def select_classes(labels: np.ndarray, classes: list[int] | None, num_classes: int, max_samples: int | None,
                   seed: int) -> tuple[np.ndarray, list[int]]:
    """Indices of the samples of ``classes`` (all present classes when None), a seeded subset of
    ``max_samples`` of them when set; and the sorted class ids chosen."""
    present = sorted(int(c) for c in np.unique(labels))
    if classes is None:
        chosen = present
    else:
        chosen = sorted({int(c) for c in classes})
        bad = [c for c in chosen if not 0 <= c < num_classes]
        if bad:
            raise ValueError(f"classes {bad} are not class ids of the dataset (0..{num_classes - 1})")
        if not chosen:
            raise ValueError("classes is empty")
    idx = np.flatnonzero(np.isin(labels, chosen))
    if idx.size == 0:
        raise ValueError(f"the split has no samples of classes {chosen}")
    if max_samples is not None:
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
            raise ValueError(f"max_samples must be a positive integer or None, got {max_samples!r}")
        if max_samples < idx.size:
            rng = np.random.default_rng(seed)
            idx = np.sort(rng.choice(idx, size=max_samples, replace=False))
    return idx, chosen


def train_generator(
    dataset: str = "cifar10",
    classes: list[int] | None = None,
    split: str = "train",
    epochs: int = 25,
    batch_size: int = 128,
    nz: int = 100,
    ngf: int = 64,
    ndf: int = 64,
    lr: float = 2e-4,
    beta1: float = 0.5,
    conditional: bool = True,
    max_samples: int | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    progress: bool = True,
    data_dir: str | os.PathLike | None = None,
    max_steps: int | None = None,
) -> GeneratorCheckpoint:
    """Train a (conditional) DCGAN on ``classes`` of ``dataset``/``split``; return the checkpoint.

    ``epochs``: passes over the selected samples (default 25: a CPU-friendly budget; GIAS
    trained its CIFAR-10 DCGAN for 200 epochs, DCGAN reports LSUN after 1-5). ``max_steps``
    stops earlier, after that many batches in total. ``max_samples``: a seeded random subset
    of the selected samples. The last incomplete batch of each epoch is dropped (BatchNorm on
    tiny batches is unstable). A conditional generator keeps the dataset's full label space.
    """
    from fl_privacy.data.datasets import load_dataset

    settings = DCGANSettings(epochs=epochs, batch_size=batch_size, nz=nz, ngf=ngf, ndf=ndf, lr=lr, beta1=beta1,
                             conditional=conditional, max_steps=max_steps, seed=seed)
    settings.check()  # before the data loads
    data = load_dataset(dataset, split, data_dir=data_dir)
    labels_all = np.asarray(data.labels, dtype=np.int64)
    idx, chosen = select_classes(labels_all, classes, data.num_classes, max_samples, seed)
    images = torch.from_numpy(np.ascontiguousarray(data.images[idx]))
    try:
        generator, discriminator, trained = train_dcgan(
            images, torch.from_numpy(labels_all[idx]), data.num_classes, settings, device, progress,
            description=f"DCGAN {dataset} classes {chosen}")
    except ValueError as err:
        raise ValueError(f"{dataset}: {err}") from None
    return _checkpoint(generator, discriminator, trained, settings, {
        "dataset": dataset, "split": split, "max_samples": max_samples, "classes": chosen, "mean": data.mean,
        "std": data.std, "image_shape": data.shape, "num_samples": int(idx.size)})


def _checkpoint(generator: Any, discriminator: Any, trained: dict[str, Any], settings: DCGANSettings,
                source: dict[str, Any]) -> GeneratorCheckpoint:
    """The checkpoint of a trained DCGAN: its settings and where its data came from."""
    values = {**vars(settings), **trained, **source, "lr": float(settings.lr), "beta1": float(settings.beta1),
              "conditional": bool(settings.conditional),
              "generator_parameters": sum(p.numel() for p in generator.parameters())}
    return GeneratorCheckpoint(
        generator=generator, config={k: values[k] for k in CONFIG_KEYS}, classes=source["classes"],
        mean=tuple(source["mean"]), std=tuple(source["std"]), image_shape=tuple(source["image_shape"]),
        num_samples=source["num_samples"], seconds=trained["seconds"], epochs=trained["epochs_completed"],
        steps=trained["steps"], history=trained["history"], discriminator=discriminator,
    )
