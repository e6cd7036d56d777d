"""The statistics sections of an experiment's summary: per-cell n / mean / median / 95% CI, and the paired
comparisons the file declares (difference, CI, Wilcoxon p, verdict on the paper's claim), also as CSV."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from fl_privacy.experiments.comparisons import Comparison
from fl_privacy.experiments.grouping import Record, combo_label, fmt, grouped, metric_values
from fl_privacy.experiments.spec.model import Experiment, TableSpec
from fl_privacy.experiments.stats import cell_stats, paired_comparison, unpaired_comparison

COMPARISONS_CSV = "comparisons.csv"
PAIR_KEYS = ("seed", "victim", "round")
"""What makes two results a pair: the same seed, victim (attack mode) and round (per-round federation rows)."""


def _ci(metric: str, low: float | None, high: float | None) -> str:
    return "–" if low is None or high is None else f"[{fmt(metric, low)}, {fmt(metric, high)}]"


def cell_stats_lines(table: TableSpec, recs: list[Record]) -> list[str]:
    """One line per cell x metric: n, mean, median, 95% BCa bootstrap CI of the mean (fixed seed)."""
    keys = (*table.rows, *table.columns)
    groups = grouped(recs, keys)
    if not groups or max(len(g) for g in groups.values()) < 2:
        return []
    lines = ["", ("Cell statistics (95% CI: BCa bootstrap of the mean, scipy, seed 0; none below n = 3, and too narrow "
                 "at small n):"), "",
             "| " + " | ".join(["metric", *keys, "n", "mean", "median", "95% CI"]) + " |",
             "|" + "---|" * (len(keys) + 5)]
    for metric in table.metrics:
        for combo, members in groups.items():
            cell = cell_stats(metric_values(members, metric))
            if not cell.n:
                continue
            lines.append("| " + " | ".join([f"`{metric}`", *(k.text for k in combo), str(cell.n), fmt(metric, cell.mean),
                                            fmt(metric, cell.median), _ci(metric, cell.ci_low, cell.ci_high)]) + " |")
    return lines


def _pairs(recs: list[Record], chosen: dict[str, str], metric: str) -> dict[tuple, float]:
    """Values of ``metric`` in the cell ``chosen``, keyed by what pairs them (seed, victim, round unless compared)."""
    out = {}
    for r in recs:
        if all(k in r.keys and r.keys[k].text == v for k, v in chosen.items()):
            value = r.metrics.get(metric)
            if value is not None:
                out[tuple(r.keys[k].text for k in PAIR_KEYS if k in r.keys and k not in chosen)] = value
    return out


def comparison_rows(experiment: Experiment, recs: list[Record]) -> list[dict[str, Any]]:
    """One row per active comparison x combination of the swept keys it holds fixed."""
    rows = []
    for comparison in experiment.comparisons:
        if not comparison.active:
            continue
        spec = comparison.spec
        fixed = tuple(k for k in experiment.axis_keys if k not in comparison.keys)
        if experiment.per_round and "round" not in comparison.keys:
            fixed += ("round",)  # per-round rows: one paired test per round (pairs: the seeds)
        for combo, members in (grouped(recs, fixed) if fixed else {(): recs}).items():
            base = _pairs(members, comparison.baseline, spec.baseline_metric or spec.metric)
            treat = _pairs(members, comparison.treatment, spec.metric)
            shared = sorted(set(base) & set(treat))
            if not spec.paired:
                if not base or not treat:
                    continue
                result = unpaired_comparison(list(base.values()), list(treat.values()), spec.paper_claim, spec.alpha,
                                             spec.margin)
            elif not shared:
                continue
            else:
                result = paired_comparison([base[k] for k in shared], [treat[k] for k in shared], spec.paper_claim,
                                           spec.alpha, spec.margin)
            metric = spec.metric if spec.baseline_metric in (None, spec.metric) else \
                f"{spec.metric} vs {spec.baseline_metric}"
            rows.append({"comparison": spec.name, "at": combo_label(fixed, combo) if fixed else "", "metric": metric,
                         "baseline": _setting(comparison.baseline), "treatment": _setting(comparison.treatment),
                         **result.__dict__,
                         "unpaired_dropped": len(base) + len(treat) - 2 * len(shared) if spec.paired else 0,
                         "paper": spec.paper or ""})
    return rows


def _setting(chosen: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in chosen.items())


def comparison_lines(experiment: Experiment, rows: list[dict[str, Any]]) -> list[str]:
    """The paired-comparison table of the summary (and which declared comparisons this profile cannot run)."""
    if not experiment.comparisons:
        return []
    lines = ["", "## Paired comparisons (the papers' claims)", "",
             ("Difference = treatment - baseline per victim (same victims and seeds in both cells); CI: BCa bootstrap "
             "of the mean difference at 1 - alpha (seed 0); p: two-sided Wilcoxon signed-rank (scipy). Verdict: "
             "supported / contradicted when p < alpha and the CI lies on one side of 0 (equal: the CI inside "
             "± margin); otherwise undecided at this n. Not corrected for multiple comparisons. A comparison declared "
             "paired: false (cells that attack different images) uses the bootstrap CI of the difference of means "
             "and the two-sided Mann-Whitney U test, marked in the p column, with n per side."), "",
             "| comparison | held fixed | metric | n | baseline | treatment | mean diff | CI | Wilcoxon p | claim | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        metric = row["metric"]
        unpaired = row["test"] == "mann-whitney"
        p_value = row["mann_whitney_p"] if unpaired else row["wilcoxon_p"]
        p = "–" if p_value is None else f"{p_value:.3g}" + (" (Mann-Whitney, unpaired)" if unpaired else "")
        n = f"{row['n']} vs {row['n_treatment']}" if unpaired else str(row["n"])
        lines.append(f"| {row['comparison']} | {row['at'] or '–'} | `{metric}` | {n} | "
                     f"{fmt(metric, row['baseline_mean'])} | {fmt(metric, row['treatment_mean'])} | "
                     f"{row['mean_difference']:+.3g} | {_ci_plain(row)} | {p} | {row['claim']} | **{row['verdict']}** |")
    if not rows:
        lines.append("| – | | | | | | | | | | |")
    inactive = [c.spec.name for c in experiment.comparisons if not c.active]
    for comparison in experiment.comparisons:
        if comparison.active and comparison.spec.paper:
            lines.append(f"\n- {comparison.spec.name}: {comparison.spec.paper}")
    if inactive:
        lines.append(f"\nNot run in profile `{experiment.profile}` (a cell it names is not swept): {', '.join(inactive)}.")
    return lines


def _ci_plain(row: dict[str, Any]) -> str:
    if row["ci_low"] is None:
        return "–"
    return f"[{row['ci_low']:+.3g}, {row['ci_high']:+.3g}]"


def write_comparisons_csv(root: Path, rows: list[dict[str, Any]]) -> Path | None:
    """``DIR/comparisons.csv``: the paired-comparison rows (for RESULTS.md and plots)."""
    if not rows:
        return None
    path = root / COMPARISONS_CSV
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


__all__ = ["Comparison", "cell_stats_lines", "comparison_lines", "comparison_rows", "write_comparisons_csv"]
