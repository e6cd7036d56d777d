"""The paper-shaped table (mean ± std) and figures of an experiment, and its ``summary.md``.

Everything here reads ``results.csv`` rows (strings) and the resolved
experiment; the settings of a row come from its ``point_id`` (typed values and
their order in the sweep), so tables follow the sweep's order, not the CSV's.
Cells aggregate over victims and seeds only: a swept key the table (figure)
does not name becomes an extra row key (line), never an average.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from fl_privacy.experiments.figures import plot_figure
from fl_privacy.experiments.grouping import Record, combo_label, fmt, grouped, metric_values, number, records
from fl_privacy.experiments.spec.model import Experiment, TableSpec
from fl_privacy.experiments.spec.names import show

_MODE_TEXT = {
    "attack": "one-shot attacks: each victim's update is built by the client code from the initial global model "
              "and attacked (`attack_once`); one row per point x seed x victim",
    "federation": "whole federations (in-process clients, `run_federation`); one row per point x seed",
    "federation_rounds": "whole federations (in-process clients, `run_federation`); one row per point x seed x "
                         "round (rounds.jsonl; epsilon after that round)",
}


def cell(metric: str, values: list[float], stat: str = "mean") -> str:
    """``mean ± std`` (sample standard deviation) over the values, or their median; one value alone; ``–``
    when none."""
    if not values:
        return "–"
    if stat == "median":
        return fmt(metric, statistics.median(values))
    mean = statistics.fmean(values)
    if len(values) == 1:
        return fmt(metric, mean)
    return f"{fmt(metric, mean)} ± {fmt(metric, statistics.stdev(values))}"


def render_table(experiment: Experiment, table: TableSpec, recs: list[Record]) -> list[str]:
    """Markdown lines: one row per combination of the row keys, one column per column-key value x metric."""
    rows = grouped(recs, table.rows)
    col_combos = list(grouped(recs, table.columns)) if table.columns else [()]
    headers = list(table.rows)
    stats = table.stats
    for combo in col_combos:
        for metric in table.metrics:
            for stat in stats:
                name = metric if len(stats) == 1 else f"{metric} ({stat})"
                if not table.columns:
                    headers.append(name)
                elif len(table.metrics) == 1 and len(stats) == 1:
                    headers.append(combo_label(table.columns, combo))
                else:
                    headers.append(f"{combo_label(table.columns, combo)}: {name}")
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    counts = []
    for row_combo, members in rows.items():
        cells = [key.text for key in row_combo]
        by_column = grouped(members, table.columns) if table.columns else {(): members}
        for combo in col_combos:
            group = by_column.get(combo, [])
            for metric in table.metrics:
                values = metric_values(group, metric)
                counts.append(len(values))
                cells.extend(cell(metric, values, stat) for stat in stats)
        lines.append("| " + " | ".join(cells) + " |")
    if not rows:
        lines.append("| " + " | ".join("–" for _ in headers) + " |")
    over = "victims and seeds" if experiment.mode == "attack" else "seeds"
    spread = [c for c in counts if c]
    n = (f"n = {min(spread)}" if spread and min(spread) == max(spread) else
         f"n = {min(spread)}..{max(spread)}" if spread else "no results yet")
    what = " and ".join({"mean": "mean ± sample standard deviation", "median": "median"}[st] for st in stats)
    lines += ["", f"Cells: {what} over {over} ({n} per cell; a single value is shown alone)."]
    if table.columns and len(table.metrics) == 1:
        lines[-1] = f"Metric: `{table.metrics[0]}`. " + lines[-1]
    lines += ssim_note(table.metrics)
    return lines


SSIM_NOTE = ("SSIM (`*ssim_mean`): Gaussian 11x11 window, sigma 1.5, population covariance, data range 1 "
             "(Wang et al. 2004, as the papers report); `ssim_uniform7_mean`: skimage's 7x7 uniform window.")


def ssim_note(metrics: tuple[str, ...] | list[str]) -> list[str]:
    """A line naming the SSIM window when a table shows SSIM (the two windows give different numbers)."""
    return ["", SSIM_NOTE] if any("ssim" in m for m in metrics) else []


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def _generator_lines(experiment: Experiment) -> list[str]:
    """The experiment's generators (GIA-L's auxiliary knowledge): data, size, training time."""
    if not experiment.generators:
        return []
    needed = experiment.generators_needed()
    lines = ["", "## Generators", "", "| name | data | images | epochs | training time | file |", "|---|---|---|---|---|---|"]
    for name, spec in experiment.generators.items():
        path = experiment.generator_path(name)
        sidecar = path.with_suffix(".json")
        info = json.loads(sidecar.read_text()) if sidecar.exists() else {}
        data = f"{spec['dataset']} {spec.get('split', 'train')}" + (
            f" classes {show(spec['classes'])}" if spec.get("classes") else "")
        if info:
            lines.append(f"| {name} | {data} | {info.get('num_samples')} | {info.get('epochs', 0):g} | "
                         f"{_duration(info.get('seconds', 0.0))} | `generators/{path.name}` |")
        else:
            status = "not trained yet" if name in needed else "not needed by this profile (no GIA-L run uses it)"
            lines.append(f"| {name} | {data} | | {spec.get('epochs', '')} | {status} | |")
    return lines


def write_summary(root: Path, experiment: Experiment, rows: list[dict[str, str]], *, elapsed: float,
                  command: str, status: str) -> Path:
    """``DIR/summary.md`` with the table(s) and figure(s); rewritten after each point and at the end."""
    rows = list({(row.get("row_id"), row.get("round")): row for row in rows}.values())  # a row counts once
    recs = records(experiment, rows)
    done = len({row.get("row_id") for row in rows})
    total = len(experiment.units)
    walls: dict[str, float] = {}  # per run: its largest wall time (per-round rows: the last round holds the run's)
    for row in rows:
        walls[row.get("row_id", "")] = max(walls.get(row.get("row_id", ""), 0.0), number(row.get("wall_seconds")) or 0.0)
    compute = sum(walls.values())
    lines = [f"# {experiment.name}", ""]
    if experiment.question:
        lines += [f"**Question.** {experiment.question}", ""]
    lines += [
        f"- mode: {experiment.mode} ({_MODE_TEXT['federation_rounds' if experiment.per_round else experiment.mode]})",
        f"- profile: `{experiment.profile}`" + (f" ({experiment.profile_description})"
                                                 if experiment.profile_description else "")
        + f"; profiles in the file: {', '.join(experiment.profiles)}",
        "- sweep: " + ("; ".join(f"`{a.key}` in {{{', '.join(show(v) for v in a.values)}}}" for a in experiment.axes)
                        or "none (one point)") + f"; seeds {experiment.seeds}",
        (f"- runs: {done} of {total} ({status}); compute time {_duration(compute)} (sum over rows), "
        f"this invocation {_duration(elapsed)}; written {time.strftime('%Y-%m-%d %H:%M:%S')}"),
    ]
    if experiment.overrides:
        lines.append("- settings on top of `base`: " + ", ".join(f"`{k}={show(v)}`"
                                                                  for k, v in experiment.overrides.items()))
    if experiment.paper:
        lines.append(f"- paper: {experiment.paper}")
    lines += [f"- {note}" for note in experiment.notes]
    lines += _generator_lines(experiment)
    from fl_privacy.experiments.stat_tables import (
        cell_stats_lines,
        comparison_lines,
        comparison_rows,
        write_comparisons_csv,
    )

    for i, table in enumerate(experiment.tables):
        title = table.title or ("Results" if len(experiment.tables) == 1 else f"Table {i + 1}")
        lines += ["", f"## {title}", ""] + render_table(experiment, table, recs) + cell_stats_lines(table, recs)
    compared = comparison_rows(experiment, recs)
    lines += comparison_lines(experiment, compared)
    write_comparisons_csv(root, compared)
    figures = [p for f in experiment.figures for p in plot_figure(experiment, f, recs, root)] if recs else []
    if figures:
        lines += ["", "## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures]
    lines += ["", "## Points", "", "| point | id | settings |", "|---|---|---|"]
    lines += [f"| {p.index + 1} | `{p.point_id}` | {p.label()} |" for p in experiment.points]
    lines += ["", "## Regenerate", "", "```bash", command, "```", "",
              ("The same command resumes an interrupted run (finished rows are not recomputed). Files: "
              "`results.csv` (one row per run: settings, seed, victim/round, metrics, run directory), "
              "`experiment.yaml` (the resolved experiment), `points/<id>/...` (each run's own directory with "
              "its pictures and records).")]
    path = root / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path
