"""``fl-privacy report DIR``: redraw an experiment folder's tables, statistics and figures from its
``results.csv`` with the experiment file as it is now, without running anything.

Presentation (tables, figures, comparisons) is not part of an experiment's fingerprint, so a new figure kind
or a new claim can be shown for finished rows; rows are matched to points by their point id (the swept
values), so a point the file no longer has is left out rather than mislabelled."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, TextIO

import yaml

from fl_privacy.config import ConfigError
from fl_privacy.experiments.output_dir import RESOLVED, Lock, ResultsFile, command
from fl_privacy.experiments.spec.load import load_experiment
from fl_privacy.experiments.tables import write_summary
from fl_privacy.reporting.experiment_report import write_experiment_report

_MISSING = object()


def rerender(root: str | os.PathLike, path: str | os.PathLike | None, stream: TextIO) -> Path:
    """Rewrite ``summary.md``, ``comparisons.csv``, the figures and ``report.html`` of ``root``."""
    root = Path(root).expanduser().resolve()
    recorded_path = root / RESOLVED
    if not recorded_path.exists() or not (root / "results.csv").exists():
        raise ConfigError(f"{root} is not an experiment folder (it needs {RESOLVED} and results.csv, which "
                          f"`fl-privacy run EXPERIMENT.yaml --out {root}` writes)")
    recorded: dict[str, Any] = yaml.safe_load(recorded_path.read_text()) or {}
    source = Path(path or recorded.get("source", ""))
    if not source.is_file():
        raise ConfigError(f"the experiment file {source} is gone: pass it, as in `fl-privacy report {root} "
                          f"experiments/<name>.yaml`")
    profile = recorded.get("profile")
    plain = load_experiment(source, None, profile, check_data=False, out=root)
    ran = recorded.get("overrides") or {}
    cli = {k: v for k, v in ran.items() if plain.overrides.get(k, _MISSING) != v}
    experiment = load_experiment(source, cli, profile, check_data=False, out=root)
    if experiment.fingerprint() != recorded.get("fingerprint"):
        print(f"note: the file now resolves to other inputs than the rows were computed with (see {recorded_path}); "
              f"rows are shown where their swept values match a point of the file", file=stream)
        experiment = dataclasses.replace(experiment, overrides=dict(ran))  # the summary states what the rows ran
    with Lock(root):
        rows = ResultsFile(root, experiment).read()
        done = {row.get("row_id") for row in rows}
        status = "finished" if all(u.row_id in done for u in experiment.units) else \
            f"partial: {len(done)} of {len(experiment.units)} runs"
        summary = write_summary(root, experiment, rows, elapsed=0.0, command=command(experiment, root),
                                status=f"{status}; redrawn by fl-privacy report")
        write_experiment_report(root, experiment, rows, status=status)
    print(f"summary: {summary}", file=stream)
    return summary
