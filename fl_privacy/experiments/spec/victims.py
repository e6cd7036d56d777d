"""Victims selection: which client updates an attack-mode experiment attacks, per sweep point.

``experiment.victims`` (with the profile's changes merged over it) names either images of a split,
``group`` of them per update (listed, or ``{random: N, seed: S}``), or client partitions of the
train split. Each point checks that one update of its training settings uses exactly one group.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fl_privacy.config import ConfigError, ExperimentConfig
from fl_privacy.experiments.spec.model import Point, Victim
from fl_privacy.experiments.spec.schema import Victims


def victims_spec(file: Victims | None, change: Victims | None, mode: str) -> dict[str, Any]:
    """The merged ``experiment.victims`` as a plain mapping (part of the fingerprint and ``experiment.yaml``)."""
    spec = file.model_dump(exclude_unset=True) if file is not None else {}
    extra = change.model_dump(exclude_unset=True) if change is not None else {}
    if mode == "federation":
        if spec or extra:
            raise ConfigError("experiment.victims is for mode 'attack'; in a federation the server attacks "
                              "attack.victims / attack.victim_ids in attack.rounds (set them under base)")
        return {}
    spec.update(extra)
    if not spec:
        raise ConfigError("experiment.victims is required in mode 'attack', e.g. "
                          "{split: test, indices: [3, 10, 21, 30], group: 1}")
    if spec.get("clients") is not None:
        return _clients_spec(spec)
    indices = spec.get("indices")
    if isinstance(indices, Mapping):
        indices = {"random": indices["random"], "seed": indices.get("seed", 0)}
    elif indices is None:
        raise ConfigError("experiment.victims.indices is required: a non-empty list of sample indices or "
                          "{random: N, seed: S} (or victims.clients: a list of partition ids)")
    elif len(set(indices)) != len(indices):
        raise ConfigError(f"experiment.victims.indices repeats an index: {indices}")
    count = spec.get("count")
    return {"split": spec.get("split") or "test", "indices": indices if isinstance(indices, dict) else list(indices),
            "group": spec.get("group") or 1, **({"count": count} if count else {})}


def _clients_spec(spec: dict[str, Any]) -> dict[str, Any]:
    clients = spec["clients"]
    if spec.get("indices") is not None:
        raise ConfigError("experiment.victims: give either 'indices' (images of a split) or 'clients' "
                          "(partitions of the train split), not both")
    if (spec.get("split") or "train") != "train":
        raise ConfigError("experiment.victims.clients attacks client partitions of the train split: "
                          "drop victims.split or set it to train")
    count = spec.get("count")
    if count is not None and not 1 <= count <= len(clients):
        raise ConfigError(f"experiment.victims.count={count!r} must be 1..{len(clients)} (the clients listed)")
    return {"split": "train", "clients": list(clients), **({"count": count} if count is not None else {})}


def victims_for(point: Point, spec: dict[str, Any], mode: str, total: int) -> list[Victim]:
    """The victims of one sweep point: client partitions, or consecutive groups of the victim indices."""
    if mode != "attack":
        return []
    if "clients" in spec:
        clients = spec["clients"][: spec.get("count", len(spec["clients"]))]
        return [Victim(i, "train", client=c) for i, c in enumerate(clients)]
    where = f"sweep point {point.index + 1} of {total} ({point.label()})"
    config = next(iter(point.configs.values()))
    indices = _indices(spec, config, where)
    group = _group_size(spec["group"], config, len(indices), where)
    available = len(indices) // group
    count = spec.get("count", available)
    if available == 0 or count > available:
        need = max(count, 1) * group
        raise ConfigError(f"{where}: {max(count, 1)} victim(s) of {group} image(s) need {need} indices, "
                          f"victims.indices has {len(indices)}: add indices or lower victims.count / victims.group")
    return [Victim(v, spec["split"], indices=tuple(indices[v * group:(v + 1) * group])) for v in range(count)]


def _group_size(group: int | str, config: ExperimentConfig, available: int, where: str) -> int:
    """Images per victim: the given number, or (``auto``) what one update of this point uses."""
    from fl_privacy.federation.run_setup import images_per_update

    t = config.training
    if group == "auto":
        if t.algorithm == "fedavg" and not t.local_steps:
            raise ConfigError(f"{where}: victims.group 'auto' needs FedSGD or training.local_steps (FedAvg over whole "
                              f"epochs uses every image it is given): set victims.group to a number")
        group = images_per_update(config, available + 10**9)
    assert isinstance(group, int)
    if t.batch_size > group:
        raise ConfigError(f"{where}: training.batch_size={t.batch_size} is larger than victims.group={group} images "
                          f"per victim: lower the batch size or raise victims.group (or use victims.group: auto)")
    used = images_per_update(config, group)
    if used < group:
        raise ConfigError(f"{where}: one update would use only {used} of each victim's victims.group={group} images "
                          f"({t.algorithm}, batch {t.batch_size}, local_steps {t.local_steps}): make them match "
                          f"(victims.group: auto does)")
    return group


def _indices(spec: dict[str, Any], config: ExperimentConfig, where: str) -> list[int]:
    """The victims' sample indices: the listed ones, or ``{random: N, seed: S}``, N distinct indices of the split
    drawn with numpy's seeded generator (in draw order, so consecutive groups mix classes even when a dataset
    file is sorted by class, as the offline CIFAR-10 archive is)."""
    indices = spec["indices"]
    if not isinstance(indices, Mapping):
        return list(indices)
    import numpy as np

    from fl_privacy.federation.run_setup import load_split

    try:
        size = len(load_split(config, spec["split"]))
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from None
    if indices["random"] > size:
        raise ConfigError(f"{where}: victims.indices asks for {indices['random']} random images, the "
                          f"{spec['split']} split has {size}")
    return np.random.default_rng(indices["seed"]).choice(size, indices["random"], replace=False).tolist()

