"""Names an experiment file may use besides config keys: modes, profiles, metrics, reserved columns.

Also the small text helpers every part of the spec shares: how a value is shown in a label or a
CSV field, a "did you mean" hint, and the short digests that name points and rows.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fl_privacy.errors import did_you_mean
from fl_privacy.metrics.catalog import multiround_mia_metrics

MODES = ("attack", "federation")
DEFAULT_PROFILE = "quick"
EARLY_STOP_KEY = "attack.gia.early_stop_window"
EARLY_STOP_PROFILES = {"quick": 200, "standard": 200}
"""Profiles that stop a stalled GIA-O restart by default: no relative improvement of ``early_stop_tol``
(1e-3) in 200 iterations. ``full`` (the papers' budgets) runs every iteration, as the reference code does.
An experiment's base, profile, sweep or ``--set`` value of the key wins (``=0`` turns it off)."""
TABLE_STATS = ("mean", "median")
"""Cell statistics: ``mean`` = mean ± sample std, ``median`` = median over victims/seeds."""
GENERATOR_REF = "generator:"
"""``attack.generator: generator:<name>`` points at the generator ``<name>`` of ``experiment.generators``."""

ATTACK_METRICS = ("psnr_mean", "ssim_mean", "mse_mean", "lpips_mean", "label_acc", "images", "iterations",
                  "seconds", "seconds_per_iteration", "objective", "wall_seconds", "ssim_uniform7_mean",
                  "corr_mean")
"""Per-victim values of ``attack_once``'s entry (``seconds``: the attack alone; ``wall_seconds``: the whole row;
victims attacked as one batched problem (``experiment.batch_victims``) share ``seconds``, ``seconds_per_iteration``
and ``wall_seconds``: the cell's divided by its victims;
``ssim_mean``: Gaussian 11x11 window, ``ssim_uniform7_mean``: skimage's 7x7 uniform window)."""

FEDERATION_METRICS = ("test_accuracy", "test_loss", "train_loss", "attack_psnr_mean", "attack_ssim_mean",
                      "attack_mse_mean", "attack_lpips_mean", "attack_label_acc", "payload_kib", "compression",
                      "epsilon", "delta", "igsa", "probe_psnr_mean", "probe_ssim_mean", "probe_mse_mean",
                      "probe_lpips_mean", "mia_auc_confidence", "mia_auc_loss", "mia_auc_entropy",
                      "mia_auc_modified_entropy", "mia_auc_lira_offline", "mia_auc_rmia_offline", "wall_seconds",
                      "attack_corr_mean", *multiround_mia_metrics())
"""Per run (or per round with ``round`` in the table/figure) from rounds.jsonl and final.json (the multi-round
update MIA's ``mia_auc_<method>``, ``mia_tpr_at_1pct_fpr_<method>``, ... from the record of its last round)."""

METRICS = {"attack": ATTACK_METRICS, "federation": FEDERATION_METRICS}
RESERVED_COLUMNS = frozenset(("row_id", "point_id", "victim_images", "run_dir", *ATTACK_METRICS, *FEDERATION_METRICS))
PSEUDO_KEYS = {"attack": ("seed", "victim"), "federation": ("seed", "round")}
"""Keys a table or figure may use besides the swept ones: taken from each results row."""

RUNNER_DEFAULTS: dict[str, Any] = {"attack": {"progress": False}}
"""Applied under ``base``: the runner's own progress bar replaces the attack's per-iteration bar."""


def close(word: Any, allowed: tuple[str, ...] | list[str]) -> str:
    """``"; did you mean 'x'?"`` when ``word`` is a likely typo of one of ``allowed``, else ``""``."""
    return did_you_mean(word, allowed)


def show(value: Any) -> str:
    """A value as a table cell / CSV field / label: YAML-style scalars, compact JSON for lists and maps."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def digest(payload: Any, size: int) -> str:
    """A short stable name for ``payload`` (point ids, row ids, fingerprints)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:size]
