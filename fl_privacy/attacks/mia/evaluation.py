"""Scoring a membership inference attack as today's protocol asks.

Carlini et al. 2022 ("Membership inference attacks from first principles", §III):
report the full ROC curve on log-log axes and the TPR at a low FPR (1% and 0.1%),
with AUC and balanced accuracy secondary (they average over the whole curve and hide
whether the attack confidently identifies *any* member). ROC points come from
scikit-learn's ``roc_curve`` (all thresholds kept); ``auc`` integrates them.

TPR at a target FPR is read conservatively, as in Carlini et al.'s evaluation code:
the largest TPR among ROC points whose FPR is ≤ the target (no interpolation
between points). Measuring TPR at FPR = f needs well over 1/f non-members; with fewer
than 10/f the number is reported with a warning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import auc, roc_curve

FPR_TARGETS: tuple[float, ...] = (0.01, 0.001)
MIN_NONMEMBERS_FACTOR = 10
"""Warn when #non-members < MIN_NONMEMBERS_FACTOR / FPR."""


def _key(target: float) -> str:
    """0.01 -> 'tpr_at_1pct_fpr', 0.001 -> 'tpr_at_0.1pct_fpr'."""
    return f"tpr_at_{100 * target:g}pct_fpr"


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """Largest TPR over ROC points with FPR ≤ ``target`` (0 if none)."""
    fpr, tpr = np.asarray(fpr), np.asarray(tpr)
    ok = fpr <= target + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def roc_metrics(
    scores: Sequence[float] | np.ndarray,
    is_member: Sequence[bool] | np.ndarray,
    fpr_targets: Sequence[float] = FPR_TARGETS,
) -> dict[str, Any]:
    """ROC summary of one attack (higher score = predicted member).

    Returns ``auc``, ``tpr_at_<x>pct_fpr`` per target (``tpr_at_1pct_fpr``,
    ``tpr_at_0.1pct_fpr`` by default), ``balanced_accuracy_at_best_threshold`` =
    max over thresholds of (TPR + 1 - FPR) / 2 — an oracle threshold chosen on the
    evaluated set itself, an upper bound for a real threshold attack, never a fitted
    attack's accuracy —, ``advantage`` = max(TPR - FPR), ``fpr``/``tpr``/``thresholds``
    arrays, ``n_members``, ``n_nonmembers`` and ``warnings`` (a list of strings,
    empty when every target FPR has at least 10/FPR non-members).
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    m = np.asarray(is_member).astype(bool).reshape(-1)
    if len(s) != len(m):
        raise ValueError(f"{len(s)} scores but {len(m)} membership labels")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinity")
    n_in, n_out = int(m.sum()), int((~m).sum())
    if n_in == 0 or n_out == 0:
        raise ValueError(f"need members and non-members, got {n_in} and {n_out}")
    fpr, tpr, thresholds = roc_curve(m, s, drop_intermediate=False)
    result: dict[str, Any] = {"auc": float(auc(fpr, tpr))}
    warnings = []
    for target in fpr_targets:
        result[_key(target)] = tpr_at_fpr(fpr, tpr, target)
        needed = math.ceil(MIN_NONMEMBERS_FACTOR / target)
        if n_out < needed:
            warnings.append(
                f"only {n_out} non-members: TPR at {100 * target:g}% FPR needs ≥ {needed} to be measured "
                f"(at most {math.floor(target * n_out)} false positives allowed)"
            )
    result["balanced_accuracy_at_best_threshold"] = float(np.max((tpr + 1 - fpr) / 2))
    result["advantage"] = float(np.max(tpr - fpr))
    result.update(fpr=fpr, tpr=tpr, thresholds=thresholds, n_members=n_in, n_nonmembers=n_out, warnings=warnings)
    return result


def summary(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``roc_metrics`` without the arrays (JSON-friendly)."""
    return {k: v for k, v in metrics.items() if not isinstance(v, np.ndarray)}


def dp_bound_check(
    fpr: np.ndarray, tpr: np.ndarray, epsilon: float, delta: float, slack: float = 0.0
) -> dict[str, Any]:
    """Does an empirical ROC respect (ε, δ)-DP's hypothesis-testing bound?

    Kairouz et al. 2015 / Nasr et al. 2021: any test between neighbouring datasets has
    ``TPR ≤ e^ε · FPR + δ`` and ``1 - FPR ≤ e^ε · (1 - TPR) + δ``. Returns the largest
    excess over the bound (≤ 0 when respected) and ``ok`` (excess ≤ ``slack``). An
    empirical ROC has sampling error: pass a slack (or confidence intervals) before
    calling a violation a bug.
    """
    fpr, tpr = np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)
    e = math.exp(epsilon)
    excess = np.maximum(tpr - (e * fpr + delta), (1 - fpr) - (e * (1 - tpr) + delta))
    worst = int(np.argmax(excess))
    return {"ok": bool(excess[worst] <= slack), "max_excess": float(excess[worst]),
            "at_fpr": float(fpr[worst]), "at_tpr": float(tpr[worst])}


def plot_roc(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray] | Mapping[str, Any]],
    path: str | Path,
    title: str | None = None,
) -> Path:
    """ROC curves on log-log axes with the chance diagonal (Carlini et al. 2022, Fig. 1).

    ``curves`` maps a name to ``(fpr, tpr)`` or to a ``roc_metrics`` dict (then the
    legend shows AUC and TPR at 0.1% FPR). Points with FPR = 0 cannot be drawn on a
    log axis; the x axis starts at min(1e-3, half the smallest positive FPR).
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.subplots()
    low = 1.0
    for name, curve in curves.items():
        if isinstance(curve, Mapping):
            fpr, tpr = np.asarray(curve["fpr"]), np.asarray(curve["tpr"])
            label = f"{name} (AUC {curve['auc']:.3f}"
            label += f", TPR@0.1% {curve[_key(0.001)]:.3f})" if _key(0.001) in curve else ")"
        else:
            fpr, tpr = (np.asarray(a) for a in curve)
            label = name
        positive = fpr > 0
        if positive.any():
            low = min(low, float(fpr[positive].min()) / 2)
        ax.plot(np.where(positive, fpr, np.nan), np.maximum(tpr, 1e-12), label=label, lw=1.2)
    low = max(min(low, 1e-3), 1e-6)
    ax.plot([low, 1], [low, 1], ls="--", color="gray", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, 1)
    ax.set_ylim(low, 1.02)
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out
