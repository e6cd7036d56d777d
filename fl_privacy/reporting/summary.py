"""``summary.md`` and the metric-vs-round plot, rewritten as each round ends."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from fl_privacy.reporting.run_dir import RunDirectory

_COLUMNS = [
    ("round", "round", "{}"),
    ("test_accuracy", "test acc", "{:.4f}"),
    ("test_loss", "test loss", "{:.4f}"),
    ("train_loss", "train loss", "{:.4f}"),
    ("clients", "clients", "{}"),
    ("recorded", "recorded victims", "{}"),
    ("round_seconds", "round s", "{:.1f}"),
]


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "–"
    return fmt.format(value)


def write_summary(run: RunDirectory, title: str, notes: list[str] | None = None) -> Path:
    """Table of per-round records plus an accuracy plot (when there is something to plot)."""
    records = run.read_jsonl("rounds.jsonl")
    lines = [f"# {title}", ""]
    lines += notes or []
    lines += ["", "## Rounds", ""]
    lines.append("| " + " | ".join(h for _, h, _ in _COLUMNS) + " |")
    lines.append("|" + "---|" * len(_COLUMNS))
    for record in records:
        lines.append("| " + " | ".join(_cell(record.get(k), f) for k, _, f in _COLUMNS) + " |")
    plot = _plot_accuracy(run, records)
    if plot:
        lines += ["", f"![test accuracy per round]({plot.name})"]
    lines += ["", "Files: `config.yaml` (resolved config), `environment.json` (versions), `rounds.jsonl` "
              "(one record per round), `updates/` (the server's view of recorded victim updates), "
              "`ground_truth/` (the victims' sample indices, for the evaluator only)."]
    path = run.root / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _plot_accuracy(run: RunDirectory, records: list[dict[str, Any]]) -> Path | None:
    points = [(r["round"], r["test_accuracy"]) for r in records if r.get("test_accuracy") is not None]
    if len(points) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.plot(*zip(*points), marker="o")
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = run.root / "accuracy.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
