"""Can this run be attacked as configured? Every such check, written once, run before any long work.

An attack on thousands of images would run for days, a generator of the wrong
shape or a FedAvg attack on FedSGD gradients fails only after the federation
has trained: these checks refuse such configs before round 1 (or, for one-shot
attacks, before any output is written), with a message naming the fix. They
read the config and sizes only; the attack settings (``gia``) are resolved by
the caller.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from fl_privacy.config import ConfigError, ExperimentConfig


def check_image_budget(config: ExperimentConfig, images: int, what: str, fix: str = "") -> None:
    """``attack.max_images`` caps how many images one attack reconstructs; ``what`` says whose images."""
    limit = config.attack.max_images
    if images > limit:
        raise ConfigError(f"{what}, more than attack.max_images={limit}" + (f": {fix}" if fix else ""))


def check_label_inference(gia: Any, images: int, what: str) -> None:
    """iDLG's analytic label works for one image only; it would fail after the update is built."""
    if gia.labels == "infer" and gia.label_method == "idlg" and images > 1:
        raise ConfigError(f"{what} uses {images} images but iDLG label inference handles one image: use "
                          f"attack.gia.label_method=llg+ (or yin, llg), grant attack.threat.labels, or attack "
                          f"updates of one image (FedSGD with batch_size 1, or probe_images 1)")


def check_attack_size(config: ExperimentConfig, update_sizes: Sequence[int], gia: Any) -> None:
    """Probes, victims (or the secure aggregate) fit the image budget and the label method.

    ``update_sizes[p]``: how many distinct images client ``p``'s update is computed on;
    ``gia``: the resolved attack settings (unused when ``attack.name`` is none).
    """
    attack = config.attack
    if attack.name == "none":
        return
    if attack.probe_images:
        check_label_inference(gia, attack.probe_images, f"attack.probe_images={attack.probe_images}")
        check_image_budget(config, attack.probe_images, f"attack.probe_images={attack.probe_images}")
    if attack.threat.observes == "aggregate":
        check_aggregate_size(config, update_sizes)
        return
    victims = attack.victim_ids if attack.victim_ids is not None else \
        range(len(update_sizes)) if attack.victims else []
    if not victims:
        return  # only probes (or nothing) are attacked
    images, client = max((update_sizes[v], v) for v in victims)
    check_label_inference(gia, images, f"attack '{attack.name}' on client {client}'s update")
    check_image_budget(
        config, images, f"attack '{attack.name}' would reconstruct {images} images from client {client}'s update",
        "use FedSGD with a small training.batch_size, set data.samples_per_client or training.local_steps, "
        "or raise attack.max_images")


def check_aggregate_size(config: ExperimentConfig, update_sizes: Sequence[int]) -> None:
    """Secure aggregation: the attack faces every participant's images at once (K clients x B images)."""
    fed = config.federation
    count = fed.clients_per_round()
    if fed.sampling == "poisson":  # a Poisson round may draw every client
        count = fed.num_clients
    total = sum(sorted(update_sizes, reverse=True)[:count])
    check_image_budget(
        config, total, f"under secure aggregation the attack faces all {count} clients' images at once ({total})",
        "lower federation.num_clients, training.batch_size or data.samples_per_client, or raise attack.max_images")
    from fl_privacy.attacks import family_of

    if family_of(config.attack.name) == "aggregate":
        from fl_privacy.models import model_options

        units = config.model.width or model_options(config.model.name).get("width", 0)
        if total > units:
            raise ConfigError(f"the Cocktail Party Attack unmixes at most model.width={units} images from the first "
                              f"layer, the aggregate holds {total}: raise model.width or lower the clients/batch")


def check_fedavg_attack(config: ExperimentConfig) -> None:
    """Dimitrov's attack simulates local epochs: it needs FedAvg updates (probes are FedSGD gradients)."""
    if config.training.algorithm != "fedavg":
        raise ConfigError(f"attack '{config.attack.name}' attacks FedAvg updates but training.algorithm is "
                          f"'{config.training.algorithm}': set training.algorithm=fedavg or use inverting_gradients")
    if config.attack.probe_images:
        raise ConfigError(f"attack '{config.attack.name}' attacks FedAvg updates; attack.probe_images are one-step "
                          "FedSGD gradients: set attack.probe_images=0 or use inverting_gradients")


def check_attack_fits(config: ExperimentConfig, spec: Any) -> None:
    """The registered attack (``AttackSpec``) declares which updates and threat observations it can attack."""
    algorithm, observes = config.training.algorithm, config.attack.threat.observes
    if algorithm not in spec.updates:
        raise ConfigError(f"attack '{spec.name}' attacks {' or '.join(sorted(spec.updates))} updates but "
                          f"training.algorithm is '{algorithm}': change training.algorithm or the attack")
    if observes not in spec.observes:
        raise ConfigError(f"attack '{spec.name}' works on {' or '.join(sorted(spec.observes))} observations but "
                          f"attack.threat.observes is '{observes}': change attack.threat.observes or the attack")


def check_generator(config: ExperimentConfig, pending: Collection[str] = ()) -> None:
    """GIA-L: ``attack.generator`` names a valid checkpoint (or one the experiment trains first: ``pending``)."""
    path = config.attack.generator
    if not path:
        raise ConfigError(f"attack '{config.attack.name}' searches a generator's latent space: set attack.generator "
                          "to a checkpoint (train one with `fl-privacy train-generator --out gen.pt ...`)")
    if path not in pending and not Path(path).expanduser().is_file():
        raise ConfigError(f"attack.generator '{path}' does not exist (train one with `fl-privacy train-generator`)")
    if path not in pending:
        generator_info(path)  # format, keys, settings and tensor shapes, read without running code


def check_generator_fits(config: ExperimentConfig, image_shape: tuple[int, ...]) -> None:
    """GIA-L: the generator checkpoint is valid and makes images of the victim's shape."""
    from fl_privacy.attacks import needs_generator

    path = config.attack.generator
    if needs_generator(config.attack.name) and path and Path(path).expanduser().is_file():
        generator_info(path, tuple(image_shape))


def generator_info(path: str, image_shape: tuple[int, ...] | None = None) -> dict:
    """The fully checked info of a generator checkpoint (cached while the file is unchanged)."""
    p = Path(path).expanduser()
    stat = p.stat() if p.is_file() else None
    return _checked(str(p), stat.st_mtime_ns if stat else 0, stat.st_size if stat else 0, image_shape)


@lru_cache(maxsize=8)
def _checked(path: str, mtime_ns: int, size: int, image_shape: tuple[int, ...] | None) -> dict:
    from fl_privacy.attacks.generators.checkpoint import check_checkpoint

    return check_checkpoint(path, image_shape)
