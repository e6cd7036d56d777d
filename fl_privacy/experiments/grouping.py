"""Results rows as typed records, grouped by settings in sweep order: what tables and figures are made of."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from fl_privacy.experiments.spec.model import Experiment
from fl_privacy.experiments.spec.names import show


@dataclass(frozen=True)
class Key:
    """A setting of a row: its order in the sweep (or its number: seed, victim, round), text and typed value."""

    order: float
    text: str
    value: Any = field(compare=False, hash=False)


@dataclass(frozen=True)
class Record:
    """One results row with typed settings (key -> Key) and metrics (name -> float or None)."""

    keys: dict[str, Key]
    metrics: dict[str, float | None]


def number(text: str | None) -> float | None:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def records(experiment: Experiment, rows: list[dict[str, str]]) -> list[Record]:
    """The rows of results.csv with typed settings (rows of points not in the experiment are skipped)."""
    points = {p.point_id: p for p in experiment.points}
    out = []
    for row in rows:
        point = points.get(row.get("point_id", ""))
        if point is None:
            continue
        keys = {k: Key(point.positions[k], show(v), v) for k, v in point.values.items()}
        for pseudo in ("seed", "victim", "round"):
            value = number(row.get(pseudo))
            if value is not None:
                keys[pseudo] = Key(value, str(int(value)), int(value))
        out.append(Record(keys, {m: number(row.get(m)) for m in experiment.metrics}))
    return out


def grouped(recs: list[Record], keys: tuple[str, ...]) -> dict[tuple, list[Record]]:
    """Records by their settings of ``keys``, in sweep order (records without one of the keys are left out)."""
    groups: dict[tuple, list[Record]] = {}
    for r in recs:
        if all(k in r.keys for k in keys):
            groups.setdefault(tuple(r.keys[k] for k in keys), []).append(r)
    return dict(sorted(groups.items(), key=lambda item: [key.order for key in item[0]]))


def metric_values(recs: list[Record], metric: str) -> list[float]:
    return [v for r in recs if (v := r.metrics.get(metric)) is not None]


def combo_label(keys: tuple[str, ...], combo: tuple) -> str:
    return ", ".join(f"{k}={key.text}" for k, key in zip(keys, combo))


_FORMATS = {
    "psnr_mean": "{:.2f}", "ssim_mean": "{:.3f}", "mse_mean": "{:.3g}", "lpips_mean": "{:.3f}",
    "label_acc": "{:.2f}", "images": "{:.0f}", "iterations": "{:.0f}", "seconds": "{:.1f}",
    "seconds_per_iteration": "{:.4f}", "objective": "{:.3g}", "wall_seconds": "{:.1f}",
    "test_accuracy": "{:.4f}", "test_loss": "{:.4f}", "train_loss": "{:.4f}", "attack_psnr_mean": "{:.2f}",
    "attack_ssim_mean": "{:.3f}", "attack_mse_mean": "{:.3g}", "attack_lpips_mean": "{:.3f}",
    "attack_label_acc": "{:.2f}", "payload_kib": "{:.1f}", "compression": "{:.1f}", "epsilon": "{:.3f}",
    "delta": "{:.1e}",
}
"""How each metric is shown in a table cell (others: 4 significant digits)."""


def fmt(metric: str, value: float) -> str:
    """``value`` formatted for ``metric``'s table cells."""
    return _FORMATS.get(metric, "{:.4g}").format(value)
