"""Everything a run needs before round 1, checked up front.

Bad input (missing dataset, batch larger than a client's data, a model that
does not fit the images) fails here with a message naming the fix, before any
long work starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from fl_privacy.config import ConfigError, ExperimentConfig
from fl_privacy.data import ImageData, client_partitions, load_dataset


@dataclass(frozen=True)
class RunSetup:
    config: ExperimentConfig
    train: ImageData
    partitions: tuple[np.ndarray, ...]

    def new_model(self, seed: int | None = None) -> torch.nn.Module:
        return build_model_for(self.config, self.train, seed)


def build_model_for(config: ExperimentConfig, data: ImageData, seed: int | None = None) -> torch.nn.Module:
    """The configured architecture for this data; parameters seeded by ``seed`` (default: the run seed;
    negative: not reseeded, the caller's random state decides, as reference models need)."""
    from fl_privacy.models import build_model

    seed = config.seed if seed is None else seed
    if seed >= 0:
        torch.manual_seed(seed)
    channels, height, _ = data.shape
    try:
        return build_model(
            config.model.name, num_classes=data.num_classes, in_channels=channels, image_size=height,
            **config.model.options(),
        )
    except ValueError as err:
        raise ConfigError(f"model: {err}") from None


def load_split(config: ExperimentConfig, split: str) -> ImageData:
    d = config.data
    return load_dataset(d.dataset, split, data_dir=d.data_dir, download=d.download, path=d.path)  # type: ignore[arg-type]


def prepare(config: ExperimentConfig) -> RunSetup:
    """Load the training split, partition it and check every client can train as configured.

    Whether the run can also be *attacked* as configured is the evaluator's check:
    ``fl_privacy.audit.ready.prepare_checked``."""
    train = load_split(config, "train")
    try:
        partitions = client_partitions(train.labels, config.data, config.federation.num_clients, config.seed)
    except ValueError as err:  # the partitioner names the key (e.g. data.classes_per_client exceeds the classes)
        raise ConfigError(f"data: {err}") from None
    smallest = int(np.argmin([len(p) for p in partitions]))
    if len(partitions[smallest]) < config.training.batch_size:
        raise ConfigError(
            f"training.batch_size={config.training.batch_size} is larger than client {smallest}'s data "
            f"({len(partitions[smallest])} samples): lower training.batch_size, use fewer clients, or "
            f"change data.partition / data.alpha / data.samples_per_client"
        )
    build_model_for(config, train)  # fails fast when the model does not fit the images
    return RunSetup(config, train, partitions)


def images_per_update(config: ExperimentConfig, partition_size: int) -> int:
    """How many distinct samples one client update is computed on."""
    t = config.training
    if t.algorithm == "fedsgd":
        return t.batch_size
    if t.local_steps:
        return min(partition_size, t.local_steps * t.batch_size)
    return partition_size


def victim_steps(setup: RunSetup, server_round: int, partition_id: int) -> list[np.ndarray]:
    """The dataset indices of each local step of a client in a round (evaluator side)."""
    from fl_privacy.federation.training import batch_schedule

    c = setup.config
    return batch_schedule(setup.partitions[partition_id], c.training, c.seed, server_round, partition_id)


@lru_cache(maxsize=2)
def cached_setup(config_json: str) -> RunSetup:
    """Per-process cache: a worker that simulates many clients loads data and partitions once."""
    return prepare(ExperimentConfig.from_json(config_json))


def resolve_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA device is visible: use 'auto' or 'cpu'")
    return torch.device(choice)
