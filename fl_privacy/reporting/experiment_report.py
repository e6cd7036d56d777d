"""``report.html`` of an experiment: the paper-shaped tables and figures, next to the paper's numbers.

The tables and figures are exactly those of ``summary.md`` (``fl_privacy.experiments.tables``),
rendered from its Markdown with the figures inlined; the papers' numbers come from
the experiment's section of ``experiments/RESULTS.md`` (next to the YAML file);
each point adds one example picture and its cost, with a link to its runs' own pages.
"""

from __future__ import annotations

import json
import logging
import math
import re
import statistics
import time
from pathlib import Path
from typing import Any

from fl_privacy.reporting.html import image, markdown, number, render, write_page
from fl_privacy.reporting.run_report import REPORT

_MAX_EXAMPLES = 48
"""Points shown with a picture (a sweep of hundreds of points keeps a page that opens quickly)."""


def write_experiment_report(root: Path, experiment: Any, rows: list[dict[str, str]], *, status: str) -> Path | None:
    """Render ``DIR/report.html`` from ``DIR/summary.md`` (written just before) and ``results.csv`` rows.

    A page that cannot be rendered is logged and skipped: the sweep goes on."""
    try:
        return _write(root, experiment, rows, status)
    except Exception as err:  # noqa: BLE001 - a report must never end a long sweep
        logging.getLogger("fl_privacy").warning("report.html of %s not written: %s: %s", root, type(err).__name__, err)
        return None


def _write(root: Path, experiment: Any, rows: list[dict[str, str]], status: str) -> Path:
    summary = (root / "summary.md").read_text() if (root / "summary.md").is_file() else f"# {experiment.name}\n"
    head, _, tail = summary.partition("\n## Points\n")
    context = {
        "title": f"Experiment {experiment.name}",
        "status": status,
        "written": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "results_html": markdown(head, root),
        "papers": papers_numbers(Path(experiment.path)),
        "paper": experiment.paper,
        "points": _points(root, experiment, rows),
        "tail_html": markdown("## Points\n" + tail, root) if tail else "",
    }
    return write_page(root / REPORT, render("experiment.html", **context))


def papers_numbers(experiment_file: Path) -> dict[str, str] | None:
    """The sections of ``RESULTS.md`` (next to the experiment file) whose heading names this file, as HTML."""
    results = experiment_file.parent / "RESULTS.md"
    if not results.is_file():
        return None
    sections, current, level = [], None, 0
    for line in results.read_text().splitlines():
        heading = re.match(r"^(#+)\s", line)
        if heading and current is not None and len(heading.group(1)) <= level:
            sections.append(current)
            current = None
        if heading and current is None and f"`{experiment_file.name}`" in line:
            current, level = [line], len(heading.group(1))
        elif current is not None:
            current.append(line)
    if current is not None:
        sections.append(current)
    if not sections:
        return None
    text = "\n\n".join("\n".join(s) for s in sections)
    return {"source": str(results), "html": markdown(text, results.parent)}


def _points(root: Path, experiment: Any, rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    by_point: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_point.setdefault(row.get("point_id", ""), []).append(row)
    out = []
    for point in experiment.points:
        members = by_point.get(point.point_id, [])
        run_dirs = sorted({row["run_dir"] for row in members if row.get("run_dir")})
        example = _example(root, run_dirs[0]) if run_dirs and len(out) < _MAX_EXAMPLES else None
        out.append({"index": point.index + 1, "id": point.point_id, "label": point.label(), "runs": len(run_dirs),
                    "costs": _costs(members), "example": example,
                    "links": [f"{d}/{REPORT}" for d in run_dirs if (root / d / REPORT).is_file()]})
    return out


def _example(root: Path, run_dir: str) -> dict[str, str] | None:
    """The first attacked victim's originals-vs-reconstruction grid of a run, else its accuracy plot."""
    victims = root / run_dir / "victims.jsonl"
    if victims.is_file():
        for line in victims.read_text().splitlines():
            entry = json.loads(line) if line.strip() else {}
            if entry.get("grid"):
                return image(root / run_dir, entry["grid"], f"{run_dir}: originals (top), reconstructions (bottom)")
    return image(root / run_dir, "accuracy.png", f"{run_dir}: test accuracy per round")


def _costs(rows: list[dict[str, str]]) -> dict[str, str]:
    def values(key: str) -> list[float]:
        out = []
        for row in rows:
            try:
                out.append(float(row.get(key) or "nan"))
            except ValueError:
                continue
        return [v for v in out if math.isfinite(v)]

    walls = {}
    for row in rows:  # per run its largest wall time (per-round rows: the last round holds the run's)
        try:
            walls[row.get("row_id")] = max(walls.get(row.get("row_id"), 0.0), float(row.get("wall_seconds") or 0.0))
        except ValueError:
            continue
    per_iteration, payload = values("seconds_per_iteration"), values("payload_kib")
    return {"seconds": number(sum(walls.values())) if walls else "–",
            "per_iteration": number(statistics.fmean(per_iteration)) if per_iteration else "–",
            "bytes": f"{statistics.fmean(payload) * 1024:,.0f}" if payload else "–"}
