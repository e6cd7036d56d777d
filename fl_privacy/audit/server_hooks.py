"""What the evaluator runs on the server during a federation: attacks on recorded victims, IGSA, probes.

The recorder (``fl_privacy.federation.recording``) calls the victim hook with each
round's recorded updates; the per-round record calls ``igsa_metrics`` and
``probe_metrics`` on the global model.
"""

from __future__ import annotations

from logging import INFO, getLogger
from typing import Any

import numpy as np
import torch

from fl_privacy.config import ExperimentConfig
from fl_privacy.data import ImageData
from fl_privacy.federation.recording import AttackHook, RecordedUpdate, RoundAttackHook
from fl_privacy.federation.run_setup import RunSetup, load_split, victim_steps
from fl_privacy.reporting import RunDirectory

log = getLogger("flwr")  # the ServerApp's log

ATTACK_MEAN_KEYS = ("psnr_mean", "ssim_mean", "mse_mean", "lpips_mean", "label_acc", "corr_mean")
"""Victim outcome keys averaged per round into ``attack_<key>``."""


def victim_hook(setup: RunSetup, test: ImageData, run: RunDirectory, device: torch.device) -> AttackHook | None:
    """Analyses of each recorded victim update: gradient inversion and/or gradient-similarity MIA.

    The evaluator side rebuilds the victim's ground truth from the config; the
    attacks themselves only get an Observation (inversion) or the recorded update
    and candidate samples (MIA).
    """
    config = setup.config
    if config.attack.name == "none" and not config.mia.gradient:
        return None
    from fl_privacy.audit.observe import VictimTruth
    from fl_privacy.audit.run_attacks import attack_updates
    from fl_privacy.metrics import try_lpips

    lpips = None
    if config.attack.name != "none":
        lpips = try_lpips(device=str(device))
        if lpips is None:
            log.log(INFO, "fl-privacy: LPIPS unavailable (no pretrained backbone weights here): reported as unavailable")

    def truth_of(rec: RecordedUpdate) -> VictimTruth:
        parts = rec.metadata.get("aggregated_partitions") or [rec.partition_id]  # an aggregate: all its clients
        steps = [s for p in parts for s in victim_steps(setup, rec.server_round, p)]
        return VictimTruth.from_steps(setup.train, steps, config.data.normalize)

    def hook_round(recorded: list[RecordedUpdate]) -> list[dict[str, Any]]:
        """The round's victims: one batched inversion (they share the global model), then MIA per victim."""
        truths = [truth_of(rec) for rec in recorded]
        outcomes: list[dict[str, Any]] = [{} for _ in recorded]
        if config.attack.name != "none":
            outcomes = attack_updates(recorded, truths, setup.new_model(), setup.train, config, run.root / "attacks",
                                      device, lpips)
            for rec, outcome in zip(recorded, outcomes):
                log.log(INFO, "fl-privacy: attack on client %d (round %d): PSNR %.2f dB, SSIM %.3f, label acc %s, "
                        "%.1f s", rec.partition_id, rec.server_round, outcome["psnr_mean"], outcome["ssim_mean"],
                        outcome["label_acc"], outcome["seconds"])
        if config.mia.gradient:
            from fl_privacy.audit.mia_round import gradient_mia

            for rec, truth, outcome in zip(recorded, truths, outcomes):
                outcome.update(gradient_mia(rec, setup.new_model(), setup.train, test, truth.indices, config, device))
        return outcomes

    return RoundAttackHook(hook_round)


def attack_means(victims: list[dict[str, Any]]) -> dict[str, float]:
    """Per-round means of the attack metrics over the round's victims (``attack_psnr_mean``, ...)."""
    out = {}
    for key in ATTACK_MEAN_KEYS:
        values = [v[key] for v in victims if isinstance(v.get(key), (int, float)) and np.isfinite(v[key])]
        if values:
            out[f"attack_{key}"] = float(np.mean(values))
    return out


def igsa_metrics(model: torch.nn.Module, test: Any, config: ExperimentConfig, device: Any) -> dict[str, float]:
    """IGSA of the global model around a seeded draw of test images (the same images every round)."""
    from fl_privacy.metrics.igsa import igsa

    e = config.evaluation
    rng = np.random.default_rng(config.seed)
    idx = np.sort(rng.choice(len(test), min(e.igsa_images, len(test)), replace=False))
    x, y = test.batch(idx, normalize=config.data.normalize, device=device)
    result = igsa(model.to(device), x, y, radius=e.igsa_radius, samples=e.igsa_samples, probes=e.igsa_probes,
                  seed=config.seed)
    return {"igsa": result.igsa, "igsa_roughness": result.roughness}


def probe_metrics(model: torch.nn.Module, config: ExperimentConfig, run: RunDirectory,
                  server_round: int) -> dict[str, Any]:
    """SoK sec. 5.1: attack a one-step FedSGD gradient of ``attack.probe_images`` test images on the current global
    model (the model clients receive in round ``server_round + 1``); the same images every round."""
    from fl_privacy.audit.oneshot import attack_once

    count = config.attack.probe_images
    test_size = len(load_split(config, "test"))
    rng = np.random.default_rng(config.seed + 1)
    indices = sorted(rng.choice(test_size, min(count, test_size), replace=False).tolist())
    probe = config.model_copy(update={
        # eval mode: BatchNorm uses the global model's running statistics (Inverting Gradients' setting)
        "training": config.training.model_copy(update={"algorithm": "fedsgd", "batch_size": len(indices),
                                                        "local_steps": 0, "model_mode": "eval"}),
        "attack": config.attack.model_copy(update={"progress": False}),
        "name": f"{config.name}-probe-round{server_round}",
    })
    state = {name: v.detach().clone() for name, v in model.state_dict().items()}
    _, entry = attack_once(probe, str(run.root / "probes" / f"round{server_round:03d}"), None, "test", indices,
                           None, global_state=state, round_number=server_round + 1)
    return {f"probe_{key}": entry[key] for key in ("psnr_mean", "ssim_mean", "mse_mean", "lpips_mean", "label_acc")
            if isinstance(entry.get(key), (int, float))}
