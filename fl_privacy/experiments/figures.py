"""The experiment's figures: one PNG per metric, mean over victims and seeds with error bars, one line per hue."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

from fl_privacy.experiments.grouping import Record, combo_label, grouped, metric_values
from fl_privacy.experiments.spec.model import Experiment, FigureSpec

_UNIT_INTERVAL = ("accuracy", "acc", "ssim", "auc", "tpr", "fpr", "lpips", "rate")


def clipped_error_bars(metric: str, means: tuple[float, ...], spreads: tuple[float, ...]) -> list[list[float]]:
    """(lower, upper) error bars; for metrics bounded by [0, 1] (accuracy, SSIM, AUC, ...) cut at the bounds, so
    the spread of few samples (two seeds) never draws a bar below 0 or above 1."""
    if not any(part in metric.lower().split("_") or metric.lower().endswith(part) for part in _UNIT_INTERVAL):
        return [list(spreads), list(spreads)]
    return [[min(e, max(m, 0.0)) for m, e in zip(means, spreads)],
            [min(e, max(1.0 - m, 0.0)) for m, e in zip(means, spreads)]]


def plot_figure(experiment: Experiment, figure: FigureSpec, recs: list[Record], root: Path) -> list[Path]:
    """One PNG per y metric: mean over victims and seeds vs x, std error bars, one line per hue combination."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for metric in figure.y:
        lines = grouped(recs, figure.hue) if figure.hue else {(): recs}
        xs_all = sorted({r.keys[figure.x] for r in recs if figure.x in r.keys}, key=lambda k: k.order)
        if not xs_all:
            continue
        numeric = all(isinstance(k.value, (int, float)) and not isinstance(k.value, bool) for k in xs_all)
        position = {k: (float(k.value) if numeric else i) for i, k in enumerate(xs_all)}
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        drawn = 0
        for combo, members in lines.items():
            points = []
            for x, group in grouped(members, (figure.x,)).items():
                values = metric_values(group, metric)
                if values:
                    std = statistics.stdev(values) if len(values) > 1 else 0.0
                    points.append((position[x[0]], statistics.fmean(values), std))
            if not points:
                continue
            px, py, pe = zip(*points)
            drawn += 1
            ax.errorbar(px, py, yerr=clipped_error_bars(metric, py, pe), marker="o", capsize=3, linewidth=1.2,
                        label=combo_label(figure.hue, combo) if figure.hue else None)
        if figure.logx and numeric:
            ax.set_xscale("log")
            ax.minorticks_off()
        if len(xs_all) <= 12 or not numeric:
            ax.set_xticks(list(position.values()), [k.text for k in xs_all])
        if figure.logy:
            ax.set_yscale("log")
        ax.set_xlabel(figure.x)
        ax.set_ylabel(metric)
        ax.set_title(figure.title or experiment.name, fontsize=10)
        ax.grid(alpha=0.3)
        if figure.hue and drawn:
            ax.legend(fontsize=7)
        fig.tight_layout()
        stem = figure.name or f"{metric}_vs_{figure.x}"
        if figure.name and len(figure.y) > 1:
            stem = f"{figure.name}_{metric}"
        path = root / (re.sub(r"[^A-Za-z0-9_.-]+", "_", stem) + ".png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


