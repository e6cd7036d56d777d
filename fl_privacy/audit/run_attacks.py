"""Attack one recorded update and score it: the piece the curious server and ``fl-privacy attack`` share.

The attack sees only the ``Observation``; the evaluator scores its output
against ground truth (optimal assignment of reconstructions to originals), and
writes a picture and the objective trace next to the run's other records.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from fl_privacy.attacks import AttackSpec, get_attack
from fl_privacy.attacks.cocktail_party import CocktailPartyConfig
from fl_privacy.audit import preflight
from fl_privacy.audit.observe import VictimTruth, observe
from fl_privacy.audit.scoring import score_and_save
from fl_privacy.config import ConfigError, ExperimentConfig
from fl_privacy.data import ImageData
from fl_privacy.federation.recording import RecordedUpdate
from fl_privacy.reporting.records import AttackOutcome


def gia_config(config: ExperimentConfig, pending_generators: Collection[str] = ()):
    """The registered attack's options: its preset with ``attack.gia.*`` overrides and the run's seed.

    When the threat level grants the labels, a preset that would infer them uses
    them instead. Knowledge a preset needs but the threat level does not grant
    (labels forced to "known", BN statistics for the BN prior) is a config error.
    ``pending_generators``: generator files an experiment trains before its first
    run (their absence is not an error yet).
    """
    spec = _spec(config)
    if "fedsgd" not in spec.updates:
        preflight.check_fedavg_attack(config)
    preflight.check_attack_fits(config, spec)
    if spec.family == "aggregate":
        return cocktail_party_config(config)
    overrides = {"model_mode": config.training.model_mode, **config.attack.gia.overrides()}  # the announced procedure
    threat = config.attack.threat
    try:
        cfg = spec.options(seed=config.seed, **overrides)
        if threat.labels and "labels" not in overrides and getattr(cfg, "labels", None) == "infer":
            cfg = spec.options(seed=config.seed, **{**overrides, "labels": "known"})
    except ValueError as err:
        raise ConfigError(f"attack: {err}") from None
    if spec.needs_generator:
        preflight.check_generator(config, pending_generators)
    if getattr(cfg, "labels", None) == "known" and not threat.labels:
        raise ConfigError("attack.gia.labels is 'known' but the threat level does not grant labels: "
                          "set attack.threat.labels=true or use labels 'infer'")
    if getattr(cfg, "bn", 0) > 0 and not threat.bn_statistics:
        raise ConfigError(f"attack '{config.attack.name}' matches BatchNorm statistics (bn={cfg.bn}) but the threat "
                          "level does not grant them: set attack.threat.bn_statistics=true or attack.gia.bn=0")
    return cfg


def _spec(config: ExperimentConfig) -> AttackSpec:
    """The registered attack ``attack.name`` (``none`` and unknown names are config errors here)."""
    try:
        return get_attack(config.attack.name)
    except ValueError as err:
        raise ConfigError(f"attack.name: {err}") from None


def cocktail_party_config(config: ExperimentConfig) -> CocktailPartyConfig:
    """The Cocktail Party Attack's settings; it needs a first fully connected layer (model.name mlp)."""
    if config.model.name != "mlp":
        raise ConfigError(f"attack 'cocktail_party' unmixes the gradient of a first fully connected layer; "
                          f"model '{config.model.name}' starts with a convolution: use model.name mlp")
    iterations = config.attack.gia.iterations
    return _spec(config).options(seed=config.seed, **({"iterations": iterations} if iterations else {}))


@lru_cache(maxsize=2)
def _generator(path: str, device: str):
    from fl_privacy.attacks.generators import load_generator

    return load_generator(Path(path).expanduser(), device)


def _reconstruct(obs, cfg, config: ExperimentConfig, device):
    """Run the registered attack ``attack.name`` on one observation, with what it declares it needs."""
    spec = _spec(config)
    needs = {"generator": _generator(str(config.attack.generator), str(device))} if spec.needs_generator else {}
    try:
        return spec.reconstruct(obs, cfg, device, config.attack.progress, **needs)
    except ValueError as err:
        if spec.family != "aggregate":
            raise
        raise ConfigError(f"attack {config.attack.name}: {err}") from None


def attack_update(
    recorded: RecordedUpdate,
    truth: VictimTruth,
    model: torch.nn.Module,
    data: ImageData,
    config: ExperimentConfig,
    out_dir: Path,
    device: torch.device | str = "cpu",
    lpips_metric: Any = None,
) -> dict[str, Any]:
    """Reconstruct, score, and save ``<out_dir>/round_RRR_client_PPPP.png`` and its trace."""
    return attack_updates([recorded], [truth], model, data, config, out_dir, device, lpips_metric)[0]


def attack_updates(
    recorded: Sequence[RecordedUpdate],
    truths: Sequence[VictimTruth],
    model: torch.nn.Module,
    data: ImageData,
    config: ExperimentConfig,
    out_dir: Path | Sequence[Path],
    device: torch.device | str = "cpu",
    lpips_metric: Any = None,
) -> list[dict[str, Any]]:
    """``attack_victims``' outcomes as the JSON the victim entries carry."""
    outcomes = attack_victims(recorded, truths, model, data, config, out_dir, device, lpips_metric)
    return [outcome.to_json() for outcome in outcomes]


def attack_victims(
    recorded: Sequence[RecordedUpdate],
    truths: Sequence[VictimTruth],
    model: torch.nn.Module,
    data: ImageData,
    config: ExperimentConfig,
    out_dir: Path | Sequence[Path],
    device: torch.device | str = "cpu",
    lpips_metric: Any = None,
) -> list[AttackOutcome]:
    """Attack several victims; GIA-O victims of one global model run as one batched problem.

    Victims whose problems have the same shape (update kind, number of images, schedule) are
    optimised together by ``reconstruct_victims`` (each gets the result it would get alone); the
    others (GIA-L, Dimitrov's attack, the Cocktail Party Attack, L-BFGS attacks) run one at a time.
    ``out_dir``: one folder for every victim's picture and trace, or one folder per victim.
    """
    for rec, truth in zip(recorded, truths):
        preflight.check_image_budget(
            config, len(truth.indices),
            f"the update of client {rec.partition_id} was computed on {len(truth.indices)} samples",
            "cap data.samples_per_client or training.local_steps")
    observations = [observe(rec, model, data, config, truth) for rec, truth in zip(recorded, truths)]
    out_dirs = [Path(out_dir)] * len(recorded) if isinstance(out_dir, (str, Path)) else [Path(d) for d in out_dir]
    cfg = gia_config(config)
    spec = _spec(config)
    batched = batches_victims(config, cfg)
    groups = _batch_groups(observations) if batched else [[i] for i in range(len(observations))]
    outcomes: dict[int, AttackOutcome] = {}
    for group in groups:
        started = time.time()
        if batched:
            results = spec.reconstruct_batch([observations[i] for i in group], cfg, device=device,
                                             progress=config.attack.progress)
        else:
            results = [_reconstruct(observations[group[0]], cfg, config, device)]
        seconds = time.time() - started
        for i, result in zip(group, results):
            outcome = score_and_save(result, observations[i], truths[i], recorded[i], config.attack.name,
                                     out_dirs[i], lpips_metric)
            outcome.seconds, outcome.victims_batched = seconds, len(group)
            outcomes[i] = outcome
    return [outcomes[i] for i in range(len(observations))]


def batches_victims(config: ExperimentConfig, cfg: Any = None) -> bool:
    """Whether ``attack_victims`` optimises victims of one global model as one problem (GIA-O with Adam)."""
    cfg = gia_config(config) if cfg is None else cfg
    return _spec(config).reconstruct_batch is not None and getattr(cfg, "optimizer", None) == "adam"


def _batch_groups(observations: Sequence[Any]) -> list[list[int]]:
    """Indices of observations that can share one batched problem (same kind, size, schedule, shape)."""
    groups: dict[tuple, list[int]] = {}
    for i, obs in enumerate(observations):
        key = (obs.kind, obs.batch_size or obs.num_examples, obs.num_examples, obs.schedule,
               tuple(obs.image_shape), obs.bn_statistics is None, tuple(obs.update))
        groups.setdefault(key, []).append(i)
    return list(groups.values())
