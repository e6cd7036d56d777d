"""Everything a run needs before round 1, checked up front.

Bad input (missing dataset, batch larger than a client's data, a model that
does not fit the images) fails here with a message naming the fix, before any
long work starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

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
    """Load the training split, partition it and check every client can train as configured."""
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
    _check_attack_size(config, partitions)
    check_generator_fits(config, train.shape)
    return RunSetup(config, train, partitions)


def check_generator_fits(config: ExperimentConfig, image_shape: tuple[int, ...]) -> None:
    """GIA-L: the generator checkpoint is valid and makes images of the victim's shape (checked before round 1)."""
    from fl_privacy.attacks import needs_generator

    path = config.attack.generator
    if needs_generator(config.attack.name) and path and Path(path).expanduser().is_file():
        from fl_privacy.audit.run_attacks import generator_info

        generator_info(path, tuple(image_shape))


def images_per_update(config: ExperimentConfig, partition_size: int) -> int:
    """How many distinct samples one client update is computed on."""
    t = config.training
    if t.algorithm == "fedsgd":
        return t.batch_size
    if t.local_steps:
        return min(partition_size, t.local_steps * t.batch_size)
    return partition_size


def _check_aggregate_size(config: ExperimentConfig, partitions: tuple[np.ndarray, ...]) -> None:
    """Secure aggregation: the attack faces every participant's images at once (K clients x B images)."""
    fed = config.federation
    count = max(int(fed.num_clients * fed.fraction_train), fed.min_train_clients)
    if fed.sampling == "poisson":  # a Poisson round may draw every client
        count = fed.num_clients
    total = sum(sorted((images_per_update(config, len(p)) for p in partitions), reverse=True)[:count])
    if total > config.attack.max_images:
        raise ConfigError(f"under secure aggregation the attack faces all {count} clients' images at once ({total}), "
                          f"more than attack.max_images={config.attack.max_images}: lower federation.num_clients, "
                          f"training.batch_size or data.samples_per_client, or raise attack.max_images")
    from fl_privacy.attacks import family_of

    if family_of(config.attack.name) == "aggregate":
        from fl_privacy.models import model_options

        units = config.model.width or model_options(config.model.name).get("width", 0)
        if total > units:
            raise ConfigError(f"the Cocktail Party Attack unmixes at most model.width={units} images from the first "
                              f"layer, the aggregate holds {total}: raise model.width or lower the clients/batch")


def _check_attack_size(config: ExperimentConfig, partitions: tuple[np.ndarray, ...]) -> None:
    """An attack on thousands of images would run for days: refuse before round 1."""
    if config.attack.name == "none":
        return
    from fl_privacy.audit.run_attacks import gia_config

    gia = gia_config(config)  # preset, overrides and the knowledge they need
    probe = config.attack.probe_images
    if probe and gia.labels == "infer" and gia.label_method == "idlg" and probe > 1:
        raise ConfigError(f"attack.probe_images={probe} but iDLG label inference handles one image: use "
                          f"attack.gia.label_method=llg+ or probe_images 1")
    if probe > config.attack.max_images:
        raise ConfigError(f"attack.probe_images={probe} is more than attack.max_images={config.attack.max_images}")
    if config.attack.threat.observes == "aggregate":
        _check_aggregate_size(config, partitions)
        return
    victims = config.attack.victim_ids if config.attack.victim_ids is not None else \
        range(len(partitions)) if config.attack.victims else []
    if not victims:
        return  # only probes (or nothing) are attacked
    worst = max((images_per_update(config, len(partitions[v])), v) for v in victims)
    if gia.labels == "infer" and gia.label_method == "idlg" and worst[0] > 1:
        raise ConfigError(
            f"attack '{config.attack.name}' infers labels with iDLG, which needs updates of one image, but client "
            f"{worst[1]}'s update uses {worst[0]}: use attack.gia.label_method=llg+ or FedSGD with batch_size 1"
        )
    if worst[0] > config.attack.max_images:
        raise ConfigError(
            f"attack '{config.attack.name}' would reconstruct {worst[0]} images from client {worst[1]}'s update, "
            f"more than attack.max_images={config.attack.max_images}: use FedSGD with a small training.batch_size, "
            f"set data.samples_per_client or training.local_steps, or raise attack.max_images"
        )


def victim_steps(setup: "RunSetup", server_round: int, partition_id: int) -> list[np.ndarray]:
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
