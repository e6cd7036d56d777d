"""Offline LiRA and RMIA estimators: per-example membership scores from OUT reference models only.

``p_θ(x)`` = softmax probability of the true class under model θ, ``φ_θ(x) = log(p / (1 - p))``;
every reference model is OUT for every scored example (offline attacks). ``audit.run_global_mia``
applies them to an audit set; the formulas are stated there and on each function.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm


def lira_offline_scores(
    target_phi: np.ndarray, out_phi: np.ndarray, global_variance: bool = True, min_std: float = 1e-6
) -> np.ndarray:
    """Offline LiRA (Carlini et al. 2022): one-sided Gaussian test against the OUT distribution.

    ``target_phi``: (N,) logit-scaled confidences of the target; ``out_phi``:
    (n_models, N) those of OUT reference models. Returns ``log Φ((φ - μ) / σ)``
    (higher = more likely member).
    """
    target = np.asarray(target_phi, dtype=np.float64).reshape(-1)
    out = np.asarray(out_phi, dtype=np.float64)
    if out.ndim != 2 or out.shape[1] != len(target):
        raise ValueError(f"out_phi must be (n_models, {len(target)}), got {out.shape}")
    n_models = out.shape[0]
    mu = out.mean(0)
    if n_models == 1:
        std = np.full_like(mu, out.std())
    elif global_variance:
        std = np.full_like(mu, np.sqrt(((out - mu) ** 2).sum() / (out.shape[1] * (n_models - 1))))
    else:
        std = out.std(0, ddof=1)
    return norm.logcdf((target - mu) / np.maximum(std, min_std))


def rmia_offline_scores(
    target_p_x: np.ndarray,
    ref_p_x: np.ndarray,
    target_p_z: np.ndarray,
    ref_p_z: np.ndarray,
    a: float = 0.3,
    gamma: float = 1.0,
) -> np.ndarray:
    """Offline RMIA (Zarifzadeh et al. 2024): share of population z that x dominates by factor γ.

    ``*_p_*``: true-class probabilities; ``ref_*`` have shape (n_models, n) and come
    from OUT reference models. ``Pr(·) = ½[(1 + a)·mean_ref + (1 - a)]``,
    ``score(x) = |{z : (p(x)/Pr(x)) / (p(z)/Pr(z)) ≥ γ}| / |Z|``. The score moves in
    steps of 1/|Z|: with few z, the most member-like examples all tie at 1 and the TPR
    at low FPR collapses, so use hundreds of z or more when that metric matters.
    """
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"a must be in [0, 1], got {a}")

    def log_ratio(p_target: np.ndarray, p_ref: np.ndarray) -> np.ndarray:
        p_target = np.asarray(p_target, dtype=np.float64).reshape(-1)
        p_ref = np.asarray(p_ref, dtype=np.float64)
        if p_ref.ndim != 2 or p_ref.shape[1] != len(p_target):
            raise ValueError(f"reference probabilities must be (n_models, {len(p_target)}), got {p_ref.shape}")
        marginal = 0.5 * ((1 + a) * p_ref.mean(0) + (1 - a))
        return np.log(np.maximum(p_target, 1e-300)) - np.log(np.maximum(marginal, 1e-300))

    lx, lz = log_ratio(target_p_x, ref_p_x), np.sort(log_ratio(target_p_z, ref_p_z))
    if len(lz) == 0:
        raise ValueError("RMIA needs population samples z")
    # ratio_x / ratio_z ≥ γ  ⟺  log ratio_z ≤ log ratio_x - log γ
    return np.searchsorted(lz, lx - np.log(gamma), side="right") / len(lz)
