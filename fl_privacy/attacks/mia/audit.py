"""Membership audit of a (global) model: balanced audit set, threshold attacks, LiRA and RMIA offline.

Protocol (Carlini et al. 2022, "Membership inference attacks from first principles",
§III; LeakPro and ML Privacy Meter follow it): the audit set holds as many members as
non-members, drawn from one distribution; each attack gives a per-example score;
results are ROC curves with TPR at 1% and 0.1% FPR (``evaluation.roc_metrics``).
Everything an attack calibrates on (thresholds, reference models, RMIA's population
samples) comes from a REFERENCE POOL disjoint from the audit set.

Estimators (``p_θ(x)`` = softmax probability of the true class under model θ,
``φ_θ(x) = log(p / (1 - p))``, ``R`` = reference models, all OUT for audited x):

* Threshold attacks (seed paper §2.3; ``threshold.py``): ``member ⟺ s(x) ≥ τ``, τ
  fitted on a shadow model (the first reference model) on its IN and OUT reference
  examples. ROC metrics use the raw scores; ``balanced_accuracy_at_threshold`` is the
  fitted τ's balanced accuracy on the audit set (comparable to the seed's Table 2).
* LiRA offline (Carlini et al. 2022, §IV-C): ``μ(x) = mean_{r∈R} φ_r(x)``; σ² either
  per example or GLOBAL (default; the pooled within-example variance
  ``Σ_x Σ_r (φ_r(x) - μ(x))² / (|X|(|R| - 1))``; with a single reference model the
  variance of all its φ values, as Carlini et al.'s ``fix_variance`` code). One-sided
  test: ``Λ(x) = Pr[Z ≤ φ_target(x)], Z ~ N(μ(x), σ²)``, reported as
  ``log Φ((φ_target(x) - μ(x)) / σ)`` (same ranking, no saturation at 1).
* RMIA offline (Zarifzadeh et al. 2024, "Low-Cost High-Power Membership Inference
  Attacks", §3 and App. on offline RMIA): ``Pr(x) = ½[(1 + a)·mean_{r∈R} p_r(x) + (1 - a)]``
  with a = 0.3, ``ratio(x) = p_target(x) / Pr(x)``, and the score is the fraction of
  population samples z (reference data seen by neither the target nor any reference
  model) with ``ratio(x) / ratio(z) ≥ γ`` (γ = 1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from fl_privacy.attacks.mia.evaluation import roc_metrics
from fl_privacy.attacks.mia.offline import lira_offline_scores, rmia_offline_scores
from fl_privacy.attacks.mia.reference import train_reference_models
from fl_privacy.attacks.mia.samples import LabelledSamples
from fl_privacy.attacks.mia.scores import confidence, logit_scaled_confidence, model_outputs
from fl_privacy.attacks.mia.threshold import THRESHOLD_SCORES, ThresholdAttack, check_disjoint

ATTACKS: tuple[str, ...] = (*THRESHOLD_SCORES, "lira_offline", "rmia_offline")


# ----------------------------------------------------------------------------- audit set
def audit_split(
    member_pool: Sequence[int] | np.ndarray,
    nonmember_pool: Sequence[int] | np.ndarray,
    size: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """A balanced audit set: ``size // 2`` members and as many non-members, shuffled.

    ``member_pool``: examples the target trained on; ``nonmember_pool``: examples from
    the SAME distribution it did not see (e.g. held-out training-split examples).
    Returns ``(indices, is_member)``.
    """
    members = np.unique(np.asarray(member_pool, dtype=np.int64))
    nonmembers = np.unique(np.asarray(nonmember_pool, dtype=np.int64))
    if size < 2 or size % 2:
        raise ValueError(f"size must be an even number ≥ 2, got {size}")
    common = np.intersect1d(members, nonmembers)
    if common.size:
        raise ValueError(f"{common.size} example(s) are in both the member and the non-member pool")
    half = size // 2
    if half > len(members) or half > len(nonmembers):
        raise ValueError(f"size {size} needs {half} of each, pools hold {len(members)} and {len(nonmembers)}")
    rng = np.random.default_rng(seed)
    chosen = np.concatenate([rng.choice(members, half, replace=False), rng.choice(nonmembers, half, replace=False)])
    is_member = np.r_[np.ones(half, bool), np.zeros(half, bool)]
    order = rng.permutation(size)
    return chosen[order], is_member[order]


# ----------------------------------------------------------------------------- the audit
@dataclass
class MIAConfig:
    """Reference-model training (should mirror the target's) and attack settings."""

    n_reference_models: int = 4
    epochs: int = 20
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0
    attacks: tuple[str, ...] = ATTACKS
    lira_global_variance: bool = True
    rmia_a: float = 0.3
    rmia_gamma: float = 1.0
    rmia_population: int = 500
    """Population samples z for RMIA, held out of the reference pool (capped at a quarter of it)."""
    eval_batch_size: int = 256
    normalize: bool = True


def run_global_mia(
    model: torch.nn.Module,
    data: LabelledSamples,
    members: Sequence[int] | np.ndarray,
    nonmembers: Sequence[int] | np.ndarray,
    reference_pool: Sequence[int] | np.ndarray,
    model_factory: Callable[[], torch.nn.Module] | None = None,
    config: MIAConfig | None = None,
    device: str | torch.device = "cpu",
    reference_models: list[tuple[torch.nn.Module, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """Audit ``model``: which of ``members`` ∪ ``nonmembers`` (indices of ``data``) did it train on?

    ``reference_pool``: indices of ``data`` from the same distribution, disjoint from
    the audit set (and, for RMIA's population samples, from the target's training
    set); reference models are trained on halves of it with ``model_factory`` (or
    passed as ``reference_models``, ``[(model, in_indices)]``, to reuse them across
    audits). Returns ``{"attacks": {name: roc_metrics(...)}, "scores": {name: array},
    "indices", "is_member", "reference": {...}, "config": {...}}``; threshold attacks
    add ``threshold``, ``reference_balanced_accuracy`` and
    ``balanced_accuracy_at_threshold`` (the fitted τ on the audit set).
    """
    cfg = config or MIAConfig()
    unknown = sorted(set(cfg.attacks) - set(ATTACKS))
    if unknown:
        raise ValueError(f"unknown attack(s) {unknown}; choices: {list(ATTACKS)}")
    audit, is_member = _audit_set(members, nonmembers)
    pool = np.unique(np.asarray(reference_pool, dtype=np.int64))
    check_disjoint(audit, reference_pool=pool)
    rng = np.random.default_rng(cfg.seed)  # draws the training pool, then RMIA's population: keep that order
    if reference_models is None:
        reference_models = _train_references(model_factory, data, pool, cfg, rng, device)
    trained_on, population = _population(audit, pool, reference_models, cfg, rng)

    def logits(m: torch.nn.Module, idx: np.ndarray) -> torch.Tensor:
        return model_outputs(m, data, idx, device, cfg.eval_batch_size, cfg.normalize)

    target_logits = logits(model, audit)
    shadow, shadow_in = reference_models[0]
    shadow_out = np.setdiff1d(pool, shadow_in)
    results, scores = _threshold_attacks(target_logits, data, audit, is_member, (shadow, shadow_in, shadow_out),
                                         cfg, device)
    if "lira_offline" in cfg.attacks or "rmia_offline" in cfg.attacks:
        _offline_attacks(model, target_logits, logits, data, audit, is_member, population, reference_models, cfg,
                         results, scores)
    return {
        "attacks": results,
        "scores": scores,
        "indices": audit,
        "is_member": is_member,
        "reference": {
            "n_models": len(reference_models), "pool_size": len(pool),
            "trained_on": len(trained_on), "population_size": len(population),
            "shadow_in": len(shadow_in), "shadow_out": len(shadow_out),
        },
        "config": asdict(cfg),
    }


def _audit_set(members: Sequence[int] | np.ndarray, nonmembers: Sequence[int] | np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Audited indices (members first) and their membership; the two sets must not overlap."""
    members = np.asarray(members, dtype=np.int64)
    nonmembers = np.asarray(nonmembers, dtype=np.int64)
    if np.intersect1d(members, nonmembers).size:
        raise ValueError("members and nonmembers overlap")
    audit = np.concatenate([members, nonmembers])
    return audit, np.r_[np.ones(len(members), bool), np.zeros(len(nonmembers), bool)]


def _train_references(model_factory: Callable[[], torch.nn.Module] | None, data: LabelledSamples, pool: np.ndarray,
                      cfg: MIAConfig, rng: np.random.Generator, device: str | torch.device
                      ) -> list[tuple[torch.nn.Module, np.ndarray]]:
    """Reference models on the pool less RMIA's population (a quarter at most, kept unseen)."""
    if model_factory is None:
        raise ValueError("give model_factory (to train reference models) or reference_models")
    n_z = min(cfg.rmia_population, len(pool) // 4) if "rmia_offline" in cfg.attacks else 0
    shuffled = rng.permutation(pool)
    train_pool = np.sort(shuffled[n_z:])
    return train_reference_models(
        model_factory, data, train_pool, cfg.n_reference_models, cfg.epochs, cfg.batch_size, cfg.lr, cfg.seed,
        device, momentum=cfg.momentum, weight_decay=cfg.weight_decay, normalize=cfg.normalize,
    )


def _population(audit: np.ndarray, pool: np.ndarray, reference_models: list[tuple[torch.nn.Module, np.ndarray]],
                cfg: MIAConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Check the reference models stay in the pool and off the audit set; pool examples any trained on, and
    RMIA's population z (pool examples none trained on; empty without RMIA)."""
    if not reference_models:
        raise ValueError("no reference models")
    for _, in_idx in reference_models:
        check_disjoint(audit, reference_training=in_idx)
        if np.setdiff1d(in_idx, pool).size:
            raise ValueError("a reference model trained on examples outside reference_pool")
    trained_on = np.unique(np.concatenate([in_idx for _, in_idx in reference_models]))
    population = np.setdiff1d(pool, trained_on)  # seen by no reference model
    if "rmia_offline" not in cfg.attacks:
        return trained_on, population[:0]
    if len(population) == 0:
        raise ValueError("RMIA needs reference-pool examples that no reference model trained on")
    return trained_on, np.sort(rng.permutation(population)[: cfg.rmia_population])


def _threshold_attacks(target_logits: torch.Tensor, data: LabelledSamples, audit: np.ndarray, is_member: np.ndarray,
                       shadow: tuple[torch.nn.Module, np.ndarray, np.ndarray], cfg: MIAConfig,
                       device: str | torch.device) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """Global-threshold attacks, τ from the shadow (first reference) model's IN/OUT reference data."""
    shadow_model, shadow_in, shadow_out = shadow
    labels_audit = data.labels[audit]
    results: dict[str, dict[str, Any]] = {}
    scores: dict[str, np.ndarray] = {}
    for name in (a for a in cfg.attacks if a in THRESHOLD_SCORES):
        attack = ThresholdAttack(name).fit_shadow(
            shadow_model, data, shadow_in, shadow_out, audit_indices=audit, device=device,
            batch_size=cfg.eval_batch_size,
        )
        s = attack.signal(target_logits, labels_audit)
        scores[name] = s
        results[name] = roc_metrics(s, is_member)
        results[name].update(
            threshold=attack.threshold_, reference_balanced_accuracy=attack.reference_balanced_accuracy_,
            balanced_accuracy_at_threshold=attack.score(s, is_member),
        )
    return results, scores


def _offline_attacks(model: torch.nn.Module, target_logits: torch.Tensor, logits: Callable[[torch.nn.Module, np.ndarray], torch.Tensor],
                     data: LabelledSamples, audit: np.ndarray, is_member: np.ndarray, population: np.ndarray,
                     reference_models: list[tuple[torch.nn.Module, np.ndarray]], cfg: MIAConfig,
                     results: dict[str, dict[str, Any]], scores: dict[str, np.ndarray]) -> None:
    """LiRA / RMIA offline (every reference model is OUT for every audited example); adds to ``results``/``scores``."""
    labels_audit = data.labels[audit]
    both = np.concatenate([audit, population])
    ref_logits = [logits(m, both) for m, _ in reference_models]
    labels_both = data.labels[both]
    n = len(audit)
    if "lira_offline" in cfg.attacks:
        out_phi = np.stack([logit_scaled_confidence(z[:n], labels_audit) for z in ref_logits])
        s = lira_offline_scores(logit_scaled_confidence(target_logits, labels_audit), out_phi,
                                cfg.lira_global_variance)
        scores["lira_offline"] = s
        results["lira_offline"] = roc_metrics(s, is_member)
    if "rmia_offline" in cfg.attacks:
        ref_p = np.stack([confidence(z, labels_both) for z in ref_logits])
        s = rmia_offline_scores(
            confidence(target_logits, labels_audit), ref_p[:, :n],
            confidence(logits(model, population), data.labels[population]),
            ref_p[:, n:], cfg.rmia_a, cfg.rmia_gamma,
        )
        scores["rmia_offline"] = s
        results["rmia_offline"] = roc_metrics(s, is_member)
