"""Uncertainty for experiment tables: per-cell bootstrap intervals and paired (or unpaired) tests of a paper's claim.

A cell of an attack table holds one value per victim (and seed). We report its mean, median and a
95% bootstrap confidence interval of the mean (scipy.stats.bootstrap, BCa, fixed seed so a table is
reproducible). A comparison the paper states ("the known schedule reconstructs better") is tested on
*paired* values, the same victims attacked under both settings: the difference treatment - baseline
per victim, the bootstrap CI of its mean, and the two-sided Wilcoxon signed-rank p-value
(scipy.stats.wilcoxon). ``verdict`` turns those into supported / contradicted / undecided at this n.

Cells that attack different images (batch sizes with ``victims.group: auto``) cannot be paired; a comparison
declared ``paired: false`` uses the bootstrap CI of the difference of means (each sample resampled on its own)
and the two-sided Mann-Whitney U test instead.

Small n is reported as it is: with 5 pairs the smallest two-sided Wilcoxon p is 0.0625, so no claim
can be decided at alpha 0.05 (that is the answer "undecided at n = 5", not a failure). p-values are
not corrected for the number of comparisons in a table.
"""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as _scipy

Claim = Literal["higher", "lower", "equal"]
Verdict = Literal["supported", "contradicted", "undecided"]
CLAIMS: tuple[str, ...] = ("higher", "lower", "equal")
BOOTSTRAP_SEED = 0
"""Seed of every bootstrap here: the same results give the same intervals."""
BOOTSTRAP_RESAMPLES = 9999
MIN_BOOTSTRAP_N = 3
"""Fewer values give no interval: resampling 2 values only spans them, which is not a 95% interval."""


@dataclass(frozen=True)
class CellStats:
    """n, mean, median and the bootstrap CI of the mean (None below ``MIN_BOOTSTRAP_N`` values) of one table cell."""

    n: int
    mean: float
    median: float
    ci_low: float | None
    ci_high: float | None


@dataclass(frozen=True)
class ComparisonResult:
    """Treatment - baseline: mean/median difference, its CI, the test's p, verdict.

    Paired (the default): ``n`` pairs, ``wilcoxon_p``. Unpaired (two independent samples, e.g. batch sizes that
    attack other images): ``n`` baseline and ``n_treatment`` treatment values, ``mann_whitney_p``; the median
    difference is then the difference of the medians."""

    n: int
    baseline_mean: float
    treatment_mean: float
    mean_difference: float
    median_difference: float
    ci_low: float | None
    ci_high: float | None
    wilcoxon_p: float | None
    claim: str
    alpha: float
    verdict: str
    test: str = "wilcoxon"
    mann_whitney_p: float | None = None
    n_treatment: int | None = None

    @property
    def p(self) -> float | None:
        return self.mann_whitney_p if self.test == "mann-whitney" else self.wilcoxon_p



def bootstrap_ci(values: np.ndarray, confidence: float = 0.95, seed: int = BOOTSTRAP_SEED,
                 n_resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float] | None:
    """BCa bootstrap CI of the mean (scipy); None below ``MIN_BOOTSTRAP_N`` values, the point itself when all are
    equal. Bootstrap intervals are too narrow at small n (they cover less than 95%): read n next to them.

    BCa is undefined when every resample has the same mean spread pattern (degenerate data); then the
    percentile interval is used instead."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < MIN_BOOTSTRAP_N:
        return None
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DegenerateDataWarning: handled by the fallback below
            res = _scipy.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                                   method=method, rng=np.random.default_rng(seed))
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            return low, high
    return None


def cell_stats(values: list[float] | np.ndarray, confidence: float = 0.95, seed: int = BOOTSTRAP_SEED) -> CellStats:
    """n, mean, median and bootstrap CI of the mean over a cell's values (finite values only)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        nan = float("nan")
        return CellStats(0, nan, nan, None, None)
    ci = bootstrap_ci(x, confidence, seed)
    return CellStats(int(x.size), float(x.mean()), float(statistics.median(x.tolist())),
                     ci[0] if ci else None, ci[1] if ci else None)


def wilcoxon_p(differences: np.ndarray) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (scipy; zero differences dropped,
    'wilcox'); 1.0 when every difference is zero, None for fewer than 2 pairs."""
    d = np.asarray(differences, dtype=np.float64)
    if d.size < 2:
        return None
    if np.all(d == 0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-n and ties notes from scipy
        return float(_scipy.wilcoxon(d).pvalue)


def verdict(claim: str, ci: tuple[float, float] | None, p: float | None, alpha: float = 0.05,
            margin: float | None = None) -> Verdict:
    """Does the paired difference (treatment - baseline) support the paper's claim at level ``alpha``?

    ``higher``/``lower``: supported when p < alpha and the CI lies entirely on the claimed side of 0;
    contradicted when p < alpha and the CI lies entirely on the other side; otherwise undecided.
    ``equal`` (needs ``margin``, in the metric's units): supported when the CI lies inside
    [-margin, margin] (an equivalence check); contradicted when p < alpha and the CI excludes
    [-margin, margin] on one side; otherwise undecided."""
    if claim not in CLAIMS:
        raise ValueError(f"unknown claim {claim!r}; expected one of {CLAIMS}")
    if ci is None:
        return "undecided"
    low, high = ci
    significant = p is not None and p < alpha
    if claim == "equal":
        if margin is None or margin < 0:
            raise ValueError("an 'equal' claim needs a non-negative margin (the largest difference that counts as equal)")
        if -margin <= low and high <= margin:
            return "supported"
        return "contradicted" if significant and (low > margin or high < -margin) else "undecided"
    above, below = low > 0, high < 0
    if not significant or not (above or below):
        return "undecided"
    return "supported" if above == (claim == "higher") else "contradicted"


def paired_comparison(baseline: list[float] | np.ndarray, treatment: list[float] | np.ndarray, claim: str,
                      alpha: float = 0.05, margin: float | None = None, seed: int = BOOTSTRAP_SEED) -> ComparisonResult:
    """Compare paired values (same order = same victim): treatment - baseline, CI at 1 - alpha, Wilcoxon, verdict."""
    b, t = np.asarray(baseline, dtype=np.float64), np.asarray(treatment, dtype=np.float64)
    if b.shape != t.shape or b.ndim != 1:
        raise ValueError(f"paired values need equal 1-D lengths, got {b.shape} and {t.shape}")
    keep = np.isfinite(b) & np.isfinite(t)
    b, t = b[keep], t[keep]
    d = t - b
    if d.size == 0:
        nan = float("nan")
        return ComparisonResult(0, nan, nan, nan, nan, None, None, None, claim, alpha, "undecided")
    ci = bootstrap_ci(d, 1.0 - alpha, seed)
    p = wilcoxon_p(d)
    return ComparisonResult(
        n=int(d.size), baseline_mean=float(b.mean()), treatment_mean=float(t.mean()),
        mean_difference=float(d.mean()), median_difference=float(np.median(d)),
        ci_low=ci[0] if ci else None, ci_high=ci[1] if ci else None, wilcoxon_p=p, claim=claim, alpha=alpha,
        verdict=verdict(claim, ci, p, alpha, margin),
    )


def mann_whitney_p(baseline: np.ndarray, treatment: np.ndarray) -> float | None:
    """Two-sided Mann-Whitney U p-value of two independent samples (scipy); None with fewer than 2 in either."""
    b, t = np.asarray(baseline, dtype=np.float64), np.asarray(treatment, dtype=np.float64)
    if b.size < 2 or t.size < 2:
        return None
    return float(_scipy.mannwhitneyu(t, b, alternative="two-sided").pvalue)


def difference_ci(baseline: np.ndarray, treatment: np.ndarray, confidence: float = 0.95, seed: int = BOOTSTRAP_SEED,
                  n_resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float] | None:
    """Bootstrap CI of mean(treatment) - mean(baseline) for independent samples (scipy, BCa, each sample resampled
    on its own); None below ``MIN_BOOTSTRAP_N`` values in either."""
    b, t = np.asarray(baseline, dtype=np.float64), np.asarray(treatment, dtype=np.float64)
    if b.size < MIN_BOOTSTRAP_N or t.size < MIN_BOOTSTRAP_N:
        return None

    def statistic(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean(y, axis=axis) - np.mean(x, axis=axis)

    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = _scipy.bootstrap((b, t), statistic, confidence_level=confidence, n_resamples=n_resamples,
                                   method=method, paired=False, vectorized=True, rng=np.random.default_rng(seed))
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            return low, high
    return None


def unpaired_comparison(baseline: list[float] | np.ndarray, treatment: list[float] | np.ndarray, claim: str,
                        alpha: float = 0.05, margin: float | None = None,
                        seed: int = BOOTSTRAP_SEED) -> ComparisonResult:
    """Compare two independent samples: difference of means, its bootstrap CI, Mann-Whitney U, verdict."""
    b = np.asarray([v for v in baseline if math.isfinite(v)], dtype=np.float64)
    t = np.asarray([v for v in treatment if math.isfinite(v)], dtype=np.float64)
    if b.size == 0 or t.size == 0:
        nan = float("nan")
        return ComparisonResult(int(b.size), nan, nan, nan, nan, None, None, None, claim, alpha, "undecided",
                                "mann-whitney", None, int(t.size))
    ci = difference_ci(b, t, 1.0 - alpha, seed)
    p = mann_whitney_p(b, t)
    return ComparisonResult(
        n=int(b.size), baseline_mean=float(b.mean()), treatment_mean=float(t.mean()),
        mean_difference=float(t.mean() - b.mean()), median_difference=float(np.median(t) - np.median(b)),
        ci_low=ci[0] if ci else None, ci_high=ci[1] if ci else None, wilcoxon_p=None, claim=claim, alpha=alpha,
        verdict=verdict(claim, ci, p, alpha, margin), test="mann-whitney", mann_whitney_p=p, n_treatment=int(t.size),
    )
