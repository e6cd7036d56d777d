"""One catalog of the metric names a run writes, so records, tables and reports agree on them.

Reconstruction scores of one victim come from ``score_reconstruction`` (and the
scale-free ``corr_mean``); a round averages them over its victims under
``attack_<name>``, a probe reports them under ``probe_<name>``. Names, not
values: how each is computed lives with its function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

IMAGE_QUALITY = ("psnr_mean", "ssim_mean", "mse_mean", "lpips_mean")
"""Mean image similarity of a reconstruction to the originals (PSNR dB, SSIM, MSE, LPIPS)."""

RECONSTRUCTION = (*IMAGE_QUALITY, "label_acc")
"""Per-victim reconstruction scores every report shows: image quality and label accuracy."""

VICTIM_SCORES = (*RECONSTRUCTION, "ssim_uniform7_mean")
"""Scored for every attacked victim (``ssim_uniform7_mean``: skimage's 7x7 uniform window, next to the
Gaussian 11x11 ``ssim_mean``); ``corr_mean`` (sign/scale-free) is added next to them."""

SCALE_FREE = "corr_mean"
"""Mean |Pearson correlation| after optimal matching: blind to sign, scale and offset."""

ROUND_MEANS = (*RECONSTRUCTION, SCALE_FREE)
"""Averaged over a round's victims into the round record as ``attack_<name>``."""

ATTACK_PREFIX = "attack_"
PROBE_PREFIX = "probe_"

MIA_SUMMARY = ("auc", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr")
"""ROC numbers kept per membership attack (``roc_metrics`` has more)."""


MULTIROUND_MIA_METHODS = ("fedmia", "fedmia_loss", "gradient_trajectory", "loss_trajectory", "gradient_update")
"""Membership scores from a client's updates over rounds: FedMIA on the gradient cosine (FedMIA-II) and on the
loss (FedMIA-I), the cosine and the loss averaged over rounds, and the one-update gradient cosine."""

MULTIROUND_MIA_SUMMARY = {"auc": "mia_auc_", "tpr_at_1pct_fpr": "mia_tpr_at_1pct_fpr_",
                          "tpr_at_0.1pct_fpr": "mia_tpr_at_0p1pct_fpr_"}
"""``MIA_SUMMARY`` key -> prefix of the run metric of each multi-round method (``mia_auc_fedmia``, ...)."""


def multiround_mia_metrics(methods: Iterable[str] = MULTIROUND_MIA_METHODS) -> tuple[str, ...]:
    """The run metrics of the multi-round update MIA: AUC and TPR at 1% / 0.1% FPR per method."""
    return tuple(f"{prefix}{method}" for method in methods for prefix in MULTIROUND_MIA_SUMMARY.values())


def prefixed(prefix: str, names: Iterable[str]) -> tuple[str, ...]:
    """``names`` as a round record stores them, e.g. ``attack_psnr_mean``."""
    return tuple(f"{prefix}{name}" for name in names)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float))


def numeric_values(entry: Mapping[str, Any], names: Iterable[str], prefix: str = "") -> dict[str, Any]:
    """The numeric ones of ``names`` in one entry, renamed with ``prefix`` (missing or None values left out)."""
    return {f"{prefix}{name}": entry[name] for name in names if _number(entry.get(name))}


def _plain_mean(values: list[float]) -> float:
    return sum(values) / len(values)


def finite_means(entries: Iterable[Mapping[str, Any]], names: Iterable[str], prefix: str = "",
                 mean: Callable[[list[float]], float] = _plain_mean) -> dict[str, float]:
    """Per name: the ``mean`` over entries of its finite numeric values (names without any are left out).

    ``mean`` is explicit because summation order shows in the last bits: records written with
    ``float(np.mean(v))`` are re-derived with that same function.
    """
    entries = list(entries)
    out = {}
    for name in names:
        values = [e[name] for e in entries if _number(e.get(name)) and math.isfinite(e[name])]
        if values:
            out[f"{prefix}{name}"] = mean(values)
    return out
