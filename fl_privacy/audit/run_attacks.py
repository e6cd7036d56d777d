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

import numpy as np
import torch

from fl_privacy.attacks import AttackSpec, get_attack
from fl_privacy.attacks.cocktail_party import CocktailPartyConfig, matched_correlation
from fl_privacy.audit.observe import VictimTruth, observe
from fl_privacy.config import ConfigError, ExperimentConfig
from fl_privacy.data import ImageData
from fl_privacy.federation.recording import RecordedUpdate
from fl_privacy.reporting.images import save_comparison_grid, save_trace

ATTACK_METRICS = ("psnr_mean", "ssim_mean", "mse_mean", "lpips_mean", "label_acc", "ssim_uniform7_mean")
"""Scored for every attack; ``corr_mean`` (sign/scale-free) is added next to them."""


def gia_config(config: ExperimentConfig, pending_generators: Collection[str] = ()):
    """The registered attack's options: its preset with ``attack.gia.*`` overrides and the run's seed.

    When the threat level grants the labels, a preset that would infer them uses
    them instead. Knowledge a preset needs but the threat level does not grant
    (labels forced to "known", BN statistics for the BN prior) is a config error.
    ``pending_generators``: generator files an experiment trains before its first
    run (their absence is not an error yet).
    """
    spec = _spec(config)
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
        _check_generator(config, pending_generators)
    if "fedsgd" not in spec.updates:
        _check_fedavg_attack(config)
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


def _check_fedavg_attack(config: ExperimentConfig) -> None:
    """Dimitrov's attack simulates local epochs: it needs FedAvg updates (probes are FedSGD gradients)."""
    if config.training.algorithm != "fedavg":
        raise ConfigError(f"attack '{config.attack.name}' attacks FedAvg updates but training.algorithm is "
                          f"'{config.training.algorithm}': set training.algorithm=fedavg or use inverting_gradients")
    if config.attack.probe_images:
        raise ConfigError(f"attack '{config.attack.name}' attacks FedAvg updates; attack.probe_images are one-step "
                          "FedSGD gradients: set attack.probe_images=0 or use inverting_gradients")


def _check_generator(config: ExperimentConfig, pending: Collection[str] = ()) -> None:
    path = config.attack.generator
    if not path:
        raise ConfigError(f"attack '{config.attack.name}' searches a generator's latent space: set attack.generator "
                          "to a checkpoint (train one with `fl-privacy train-generator --out gen.pt ...`)")
    if path not in pending and not Path(path).expanduser().is_file():
        raise ConfigError(f"attack.generator '{path}' does not exist (train one with `fl-privacy train-generator`)")
    if path not in pending:
        generator_info(path)  # format, keys, settings and tensor shapes, read without running code


def generator_info(path: str, image_shape: tuple[int, ...] | None = None) -> dict:
    """The fully checked info of a generator checkpoint (cached while the file is unchanged)."""
    p = Path(path).expanduser()
    stat = p.stat() if p.is_file() else None
    return _checked(str(p), stat.st_mtime_ns if stat else 0, stat.st_size if stat else 0, image_shape)


@lru_cache(maxsize=8)
def _checked(path: str, mtime_ns: int, size: int, image_shape: tuple[int, ...] | None) -> dict:
    from fl_privacy.attacks.generators.checkpoint import check_checkpoint

    return check_checkpoint(path, image_shape)


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
    out_dir: Path,
    device: torch.device | str = "cpu",
    lpips_metric: Any = None,
) -> list[dict[str, Any]]:
    """``attack_update`` for several victims; GIA-O victims of one global model run as one batched problem.

    Victims whose problems have the same shape (update kind, number of images, schedule) are
    optimised together by ``reconstruct_victims`` (each gets the result it would get alone); the
    others (GIA-L, Dimitrov's attack, the Cocktail Party Attack, L-BFGS attacks) run one at a time.
    """
    for rec, truth in zip(recorded, truths):
        if len(truth.indices) > config.attack.max_images:
            raise ConfigError(
                f"the update of client {rec.partition_id} was computed on {len(truth.indices)} samples, more than "
                f"attack.max_images={config.attack.max_images}: cap data.samples_per_client or "
                "training.local_steps"
            )
    observations = [observe(rec, model, data, config, truth) for rec, truth in zip(recorded, truths)]
    cfg = gia_config(config)
    spec = _spec(config)
    batched = spec.reconstruct_batch is not None and getattr(cfg, "optimizer", None) == "adam"
    groups = _batch_groups(observations) if batched else [[i] for i in range(len(observations))]
    outcomes: dict[int, dict[str, Any]] = {}
    for group in groups:
        started = time.time()
        if batched:
            results = spec.reconstruct_batch([observations[i] for i in group], cfg, device=device,
                                             progress=config.attack.progress)
        else:
            results = [_reconstruct(observations[group[0]], cfg, config, device)]
        seconds = time.time() - started
        for i, result in zip(group, results):
            outcomes[i] = _score_and_save(result, observations[i], truths[i], recorded[i], config, out_dir,
                                          lpips_metric)
            outcomes[i].update(seconds=seconds, victims_batched=len(group))
    return [outcomes[i] for i in range(len(observations))]


def _batch_groups(observations: Sequence[Any]) -> list[list[int]]:
    """Indices of observations that can share one batched problem (same kind, size, schedule, shape)."""
    groups: dict[tuple, list[int]] = {}
    for i, obs in enumerate(observations):
        key = (obs.kind, obs.batch_size or obs.num_examples, obs.num_examples, obs.schedule,
               tuple(obs.image_shape), obs.bn_statistics is None, tuple(obs.update))
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def _score_and_save(result: Any, obs: Any, truth: VictimTruth, recorded: RecordedUpdate, config: ExperimentConfig,
                    out_dir: Path, lpips_metric: Any) -> dict[str, Any]:
    """Score one reconstruction against ground truth; save its picture and trace; the victim's record."""
    from fl_privacy.metrics import label_accuracy, score_reconstruction

    recon = obs.to_pixels(result.images.detach().cpu())
    originals = obs.to_pixels(truth.images.cpu())
    scores = score_reconstruction(recon, originals, lpips=lpips_metric)
    # labels come out as a multiset (inferred counts, or given): compare without the pixel matching
    scores["label_acc"] = (label_accuracy(result.labels.cpu(), truth.labels.cpu(), ordered=False)
                           if result.labels.numel() else None)
    perm = np.asarray(scores["perm"])
    corr = _matched_correlation(recon, originals)
    who = "aggregate" if recorded.partition_id < 0 else f"client_{recorded.partition_id:04d}"
    stem = f"round_{recorded.server_round:03d}_{who}"
    captions = [f"{p:.1f} dB" for p in scores["psnr"]]
    grid = save_comparison_grid(originals, recon[perm], out_dir / f"{stem}.png", captions)
    trace = save_trace(result.trace, out_dir / f"{stem}_trace.png") if len(result.trace) else None
    return {
        "attack": config.attack.name,
        "images": len(truth.indices),
        **{k: scores.get(k) for k in ATTACK_METRICS},
        "lpips": "unavailable" if lpips_metric is None else "alex",
        "psnr": scores["psnr"], "ssim": scores["ssim"], "ssim_window": scores["ssim_window"],
        "labels_true": truth.labels.tolist(), "labels_used": result.labels.cpu().tolist(),
        "objective": result.objective, "iterations": result.iterations,
        "iterations_used": getattr(result, "iterations_used", 0) or result.iterations,
        "seconds_per_iteration": result.seconds_per_iteration,
        "restarts": len(result.restart_objectives),
        "notes": list(getattr(result, "notes", []) or []),
        "corr_mean": corr, "aggregated_clients": obs.aggregated_clients,
        "grid": str(grid.relative_to(out_dir.parent)),
        "trace": None if trace is None else str(trace.relative_to(out_dir.parent)),
    }


def _matched_correlation(recon: torch.Tensor, originals: torch.Tensor) -> float:
    """Mean |Pearson correlation| after optimal matching: blind to sign, scale and offset (the Cocktail Party
    Attack's evaluation; for other attacks a second, scale-free view of the same reconstructions)."""
    return float(np.mean(matched_correlation(recon, originals)[0]))
