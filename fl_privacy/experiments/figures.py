"""The experiment's figures, one PNG per y metric, in the papers' forms: curves (SoK Fig. 4, 10), bars (Fig. 13)
and a metric-vs-metric scatter (Fig. 15's privacy-utility plot). Points are means over victims and seeds; error
bars are 95% BCa bootstrap CIs of the mean (the tables' intervals) or the standard deviation."""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fl_privacy.experiments.grouping import Record, combo_label, grouped, metric_values
from fl_privacy.experiments.spec.model import Experiment, FigureSpec
from fl_privacy.experiments.stats import bootstrap_ci

_UNIT_INTERVAL = ("accuracy", "acc", "ssim", "auc", "tpr", "fpr", "lpips", "rate")


def clipped_error_bars(metric: str, means: tuple[float, ...], spreads: tuple[float, ...]) -> list[list[float]]:
    """(lower, upper) error bars; for metrics bounded by [0, 1] (accuracy, SSIM, AUC, ...) cut at the bounds, so
    the spread of few samples (two seeds) never draws a bar below 0 or above 1."""
    if not any(part in metric.lower().split("_") or metric.lower().endswith(part) for part in _UNIT_INTERVAL):
        return [list(spreads), list(spreads)]
    return [[min(e, max(m, 0.0)) for m, e in zip(means, spreads)],
            [min(e, max(1.0 - m, 0.0)) for m, e in zip(means, spreads)]]


@dataclass(frozen=True)
class Estimate:
    """A point's mean with its lower / upper error (distances from the mean) and n."""

    mean: float
    low: float
    high: float
    n: int


def estimate(metric: str, values: list[float], error: str) -> Estimate:
    """Mean with a 95% BCa CI (none below 3 values: bootstrap needs them) or a clipped standard deviation."""
    mean = statistics.fmean(values)
    if error == "ci95":
        ci = bootstrap_ci(np.asarray(values))
        return Estimate(mean, mean - ci[0], ci[1] - mean, len(values)) if ci else Estimate(mean, 0.0, 0.0, len(values))
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    (low,), (high,) = clipped_error_bars(metric, (mean,), (std,))
    return Estimate(mean, low, high, len(values))


def _error_text(error: str, ns: list[int]) -> str:
    n = f"n = {min(ns)}" if ns and min(ns) == max(ns) else f"n = {min(ns, default=0)}-{max(ns, default=0)}"
    return f"mean, {'95% CI' if error == 'ci95' else '± std'}, {n}"


def plot_figure(experiment: Experiment, figure: FigureSpec, recs: list[Record], root: Path) -> list[Path]:
    """One PNG per y metric in the figure's kind (line, bar or scatter)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    draw = {"line": _curves, "bar": _bars, "scatter": _scatter}[figure.kind]
    paths = []
    for metric in figure.y:
        fig, ax = plt.subplots(figsize=(6.0 if figure.kind == "line" else 7.0, 3.8))
        ns = draw(ax, figure, recs, metric)
        if ns is None:
            plt.close(fig)
            continue
        if figure.logy:
            ax.set_yscale("log")
        ax.set_ylabel(metric)
        ax.set_title(f"{figure.title or experiment.name}\n({_error_text(figure.error, ns)})", fontsize=9)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        default = f"{metric}_vs_{figure.x}" if figure.kind == "line" else f"{metric}_{figure.kind}_{figure.x}"
        stem = figure.name or default
        if figure.name and len(figure.y) > 1:
            stem = f"{figure.name}_{metric}"
        path = root / (re.sub(r"[^A-Za-z0-9_.-]+", "_", stem) + ".png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def _x_positions(figure: FigureSpec, recs: list[Record]):
    xs = sorted({r.keys[figure.x] for r in recs if figure.x in r.keys}, key=lambda k: k.order)
    numeric = all(isinstance(k.value, (int, float)) and not isinstance(k.value, bool) for k in xs)
    return xs, numeric, {k: (float(k.value) if numeric and figure.kind == "line" else i) for i, k in enumerate(xs)}


def _series(figure: FigureSpec, recs: list[Record], metric: str):
    """(label, [(x key, Estimate)]) per hue combination, in sweep order."""
    lines = grouped(recs, figure.hue) if figure.hue else {(): recs}
    out = []
    for combo, members in lines.items():
        points = [(x[0], estimate(metric, values, figure.error))
                  for x, group in grouped(members, (figure.x,)).items() if (values := metric_values(group, metric))]
        if points:
            out.append((combo_label(figure.hue, combo) if figure.hue else None, points))
    return out


def _curves(ax, figure: FigureSpec, recs: list[Record], metric: str) -> list[int] | None:
    xs, numeric, position = _x_positions(figure, recs)
    series = _series(figure, recs, metric)
    if not xs or not series:
        return None
    for label, points in series:
        ax.errorbar([position[k] for k, _ in points], [e.mean for _, e in points],
                    yerr=[[e.low for _, e in points], [e.high for _, e in points]],
                    marker="o", capsize=3, linewidth=1.2, label=label)
    if figure.logx and numeric:
        ax.set_xscale("log")
        ax.minorticks_off()
    if len(xs) <= 12 or not numeric:
        ax.set_xticks(list(position.values()), [k.text for k in xs])
    ax.set_xlabel(figure.x)
    if figure.hue:
        ax.legend(fontsize=7)
    return [e.n for _, points in series for _, e in points]


def _bars(ax, figure: FigureSpec, recs: list[Record], metric: str) -> list[int] | None:
    """Grouped bars: one group per x setting, one bar per hue combination (SoK Fig. 13's form)."""
    xs, _, position = _x_positions(figure, recs)
    series = _series(figure, recs, metric)
    if not xs or not series:
        return None
    width = 0.8 / len(series)
    for i, (label, points) in enumerate(series):
        offset = (i - (len(series) - 1) / 2) * width
        ax.bar([position[k] + offset for k, _ in points], [e.mean for _, e in points], width=width,
               yerr=[[e.low for _, e in points], [e.high for _, e in points]], capsize=3, label=label, alpha=0.85)
    ax.set_xticks(list(position.values()), [k.text for k in xs], rotation=35, ha="right", fontsize=7)
    ax.set_xlabel(figure.x)
    if figure.hue and len(series) > 1:
        ax.legend(fontsize=7)
    return [e.n for _, points in series for _, e in points]


def _scatter(ax, figure: FigureSpec, recs: list[Record], metric: str) -> list[int] | None:
    """One labelled point per setting of the swept keys: x metric against y metric, both with error bars."""
    ns = []
    for combo, members in (grouped(recs, figure.hue) if figure.hue else {(): recs}).items():
        xv, yv = metric_values(members, figure.x), metric_values(members, metric)
        if not xv or not yv:
            continue
        ex, ey = estimate(figure.x, xv, figure.error), estimate(metric, yv, figure.error)
        ax.errorbar([ex.mean], [ey.mean], xerr=[[ex.low], [ex.high]], yerr=[[ey.low], [ey.high]],
                    marker="o", capsize=2, linewidth=1.0)
        ax.annotate(", ".join(key.text for key in combo), (ex.mean, ey.mean), fontsize=6,
                    xytext=(3, 3), textcoords="offset points")
        ns += [ex.n, ey.n]
    if not ns:
        return None
    if figure.logx:
        ax.set_xscale("log")
    ax.set_xlabel(figure.x)
    return ns
