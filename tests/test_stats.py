"""Statistics helpers against scipy on fixed data (bootstrap seed fixed), and the verdict rules."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from fl_privacy.experiments.stats import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    bootstrap_ci,
    cell_stats,
    paired_comparison,
    unpaired_comparison,
    verdict,
    wilcoxon_p,
)

VALUES = np.array([0.12, 0.35, 0.41, 0.18, 0.52, 0.27, 0.33, 0.61, 0.09, 0.44])
BASE = np.array([0.21, 0.30, 0.18, 0.45, 0.26, 0.33, 0.19, 0.40, 0.28, 0.36])
TREAT = BASE + np.array([0.05, 0.11, 0.02, 0.09, 0.07, -0.01, 0.12, 0.04, 0.08, 0.06])


def _scipy_ci(x: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    res = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=BOOTSTRAP_RESAMPLES,
                          method="BCa", rng=np.random.default_rng(BOOTSTRAP_SEED))
    return res.confidence_interval.low, res.confidence_interval.high


def test_cell_stats_equal_scipy():
    cell = cell_stats(VALUES)
    assert cell.n == 10
    assert cell.mean == pytest.approx(VALUES.mean(), abs=1e-15)
    assert cell.median == pytest.approx(np.median(VALUES), abs=1e-15)
    low, high = _scipy_ci(VALUES)
    assert (cell.ci_low, cell.ci_high) == pytest.approx((low, high), abs=1e-12)
    assert cell.ci_low < cell.mean < cell.ci_high
    assert cell_stats(VALUES) == cell  # fixed seed: the same interval every time


def test_cell_stats_small_and_degenerate():
    assert cell_stats([0.3]).ci_low is None and cell_stats([0.3]).n == 1
    assert cell_stats([0.3, 0.5]).ci_low is None  # two values span no 95% interval
    assert bootstrap_ci(np.array([0.2, 0.2, 0.2])) == (0.2, 0.2)
    assert cell_stats([]).n == 0
    assert cell_stats([0.1, float("nan"), 0.3]).n == 2  # non-finite values do not count


def test_paired_comparison_equals_scipy():
    result = paired_comparison(BASE, TREAT, "higher")
    d = TREAT - BASE
    assert result.n == 10
    assert result.mean_difference == pytest.approx(d.mean(), abs=1e-15)
    assert result.median_difference == pytest.approx(np.median(d), abs=1e-15)
    assert result.wilcoxon_p == pytest.approx(stats.wilcoxon(d).pvalue, abs=1e-15)
    assert (result.ci_low, result.ci_high) == pytest.approx(_scipy_ci(d), abs=1e-12)
    assert result.verdict == "supported"
    assert paired_comparison(BASE, TREAT, "lower").verdict == "contradicted"


def test_undecided_when_noise_or_small_n():
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 0.05, 10)
    assert paired_comparison(BASE, BASE + noise - noise.mean(), "higher").verdict == "undecided"
    # five pairs all in the claimed direction: the exact two-sided Wilcoxon p is 2/2^5 = 0.0625
    five = paired_comparison(BASE[:5], BASE[:5] + 0.1 + np.arange(5) * 0.01, "higher")
    assert five.wilcoxon_p == pytest.approx(0.0625)
    assert five.verdict == "undecided"
    assert paired_comparison([0.1], [0.2], "higher").verdict == "undecided"


def test_wilcoxon_zero_and_verdict_rules():
    assert wilcoxon_p(np.zeros(4)) == 1.0
    assert wilcoxon_p(np.array([0.1])) is None
    assert verdict("higher", (0.01, 0.05), 0.01) == "supported"
    assert verdict("higher", (0.01, 0.05), 0.2) == "undecided"
    assert verdict("higher", (-0.01, 0.05), 0.01) == "undecided"
    assert verdict("lower", (0.01, 0.05), 0.01) == "contradicted"
    assert verdict("equal", (-0.01, 0.02), 0.5, margin=0.05) == "supported"
    assert verdict("equal", (0.08, 0.2), 0.01, margin=0.05) == "contradicted"
    assert verdict("equal", (0.01, 0.2), 0.01, margin=0.05) == "undecided"
    with pytest.raises(ValueError, match="margin"):
        verdict("equal", (0.0, 0.1), 0.5)
    with pytest.raises(ValueError, match="claim"):
        verdict("better", (0.0, 0.1), 0.5)


def test_unpaired_comparison_equals_scipy():
    """Independent samples (other images per cell): Mann-Whitney U and the two-sample bootstrap CI, as scipy gives."""
    small, large = VALUES[:8], BASE[:6] + 0.3
    result = unpaired_comparison(small, large, "higher")
    assert (result.n, result.n_treatment, result.test) == (8, 6, "mann-whitney") and result.wilcoxon_p is None
    assert result.mann_whitney_p == pytest.approx(stats.mannwhitneyu(large, small).pvalue, abs=1e-15)
    assert result.p == result.mann_whitney_p
    assert result.mean_difference == pytest.approx(large.mean() - small.mean(), abs=1e-15)
    ci = stats.bootstrap((small, large), lambda x, y, axis=-1: y.mean(axis) - x.mean(axis), paired=False,
                         vectorized=True, confidence_level=0.95, n_resamples=BOOTSTRAP_RESAMPLES, method="BCa",
                         rng=np.random.default_rng(BOOTSTRAP_SEED)).confidence_interval
    assert (result.ci_low, result.ci_high) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert result.verdict == "supported"
    assert unpaired_comparison(small, large, "lower").verdict == "contradicted"
    assert unpaired_comparison([0.1, 0.2], [0.3, 0.4], "higher").verdict == "undecided"  # no CI below 3 per side
