"""Run an experiment file: every point x seed x victim in order, one results row each, resumable.

In attack mode the victims of one point x seed share the global model, so they are attacked as one
batched problem when the attack can (``experiment.batch_victims``, default true; ``units.cells``).

    fl-privacy run experiments/<name>.yaml [--profile quick|full|...] [--set key=value ...] [--out DIR]

Layout of the output directory ``DIR`` (default ``<out_dir>/<name>-<profile>``,
so running the same command again resumes)::

    DIR/experiment.yaml     the resolved experiment (profile and --set applied) and its fingerprint
    DIR/results.csv         one row per finished run, appended and flushed as each run ends
    DIR/summary.md          question, profile, the table (mean ± std), figures, wall time, command
    DIR/<figure>.png        the figure(s)
    DIR/points/<point-id>/seed<S>[-victim<V>]/   each run's own run directory (pictures, records)

Resume: rows already in ``results.csv`` (same row id = hash of the point's
settings, the seed and the victim) are not recomputed. A directory holding
results of a different experiment (other sweep values, base config, profile
settings, seeds or victims) is refused; changing only the question, table or
figure is allowed and re-renders the summary.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from fl_privacy.experiments.output_dir import RESULTS, Lock, ResultsFile, command
from fl_privacy.experiments.parallel import FAILED, RayOptions, RunsFailed, check_options, run_on_ray
from fl_privacy.experiments.spec.load import load_experiment
from fl_privacy.experiments.spec.model import Experiment, Unit
from fl_privacy.experiments.spec.names import show
from fl_privacy.experiments.tables import write_summary
from fl_privacy.experiments.units import LpipsCache, RunFederation, cells, run_cell
from fl_privacy.reporting.experiment_report import write_experiment_report

# ----------------------------------------------------------------------------- the sweep


def run_experiment(
    path: str | os.PathLike,
    overrides: list[str] | Mapping[str, Any] | None = None,
    out: str | os.PathLike | None = None,
    profile: str | None = None,
    *,
    progress: bool = True,
    stream: Any = None,
    parallel: RayOptions | None = None,
    run_federation: RunFederation | None = None,
) -> Path:
    """Validate the whole experiment, then run every unfinished point x seed x victim; return the output directory.

    ``profile`` None means ``quick`` (said in the output). ``overrides`` are
    ``key=value`` strings (or a flat dict) applied to every point. Raises
    ``ConfigError`` before any run when anything is wrong. ``parallel`` spreads
    the runs over Ray workers (``fl_privacy.experiments.parallel``); then a
    failing run is recorded and the others go on, and ``RunsFailed`` is raised
    at the end. ``run_federation`` runs the federation points (the launcher passes one)."""
    stream = stream or sys.stdout
    started = time.time()
    experiment = load_experiment(path, overrides, profile, out=out)
    if parallel is not None:
        check_options(experiment, parallel)
    root = experiment.root
    root.mkdir(parents=True, exist_ok=True)
    with Lock(root):
        return _run(experiment, root, started, progress, stream, parallel, run_federation)


def _run(experiment: Experiment, root: Path, started: float, progress: bool, stream: Any,
         parallel: RayOptions | None = None, run_federation: RunFederation | None = None) -> Path:
    results = ResultsFile(root, experiment)
    done = results.open()
    units = experiment.units
    todo = [u for u in units if u.row_id not in done]
    (root / FAILED).unlink(missing_ok=True)  # failures of an earlier invocation are retried now
    default = " (the default; --profile to choose another)" if experiment.profile_defaulted else ""
    print(f"experiment {experiment.name} (mode {experiment.mode}): profile {experiment.profile}{default}; "
          f"profiles: {', '.join(experiment.profiles)}", file=stream)
    print(f"  {experiment.plan()}; {len(units) - len(todo)} already in {RESULTS}, {len(todo)} to run", file=stream)
    print(f"  output: {root}", file=stream)
    stream.flush()

    def summarize(status: str) -> Path:
        rows = results.read()
        summary = write_summary(root, experiment, rows, elapsed=time.time() - started,
                                command=command(experiment, root), status=status)
        write_experiment_report(root, experiment, rows, status=status)
        return summary

    prepare_generators(experiment, todo, stream, progress)
    if parallel is not None:
        return _run_parallel(experiment, root, todo, results, parallel, stream, summarize, run_federation)
    lpips = LpipsCache()
    from tqdm import tqdm

    bar = tqdm(total=len(units), initial=len(units) - len(todo), desc=experiment.name, unit="run",
               disable=not progress, file=sys.stderr, dynamic_ncols=True)
    finished = False
    try:
        last_point = None
        for cell in cells(experiment, todo):
            if last_point is not None and cell[0].point is not last_point:
                summarize("running")  # cheap: after each point, the table so far
            last_point = cell[0].point
            bar.set_postfix_str(_short(cell), refresh=True)
            results.append(run_cell(experiment, cell, root, lpips, run_federation))
            bar.update(len(cell))
        finished = True
    finally:
        bar.close()
        summary = summarize("finished" if finished else "stopped early; rerun the command below to resume")
    print(f"summary: {summary}", file=stream)
    return root


def _run_parallel(experiment: Experiment, root: Path, todo: list[Unit], results: ResultsFile, parallel: RayOptions,
                  stream: Any, summarize: Any, run_federation: RunFederation | None = None) -> Path:
    """The runs on Ray workers (see ``parallel``); failed runs are listed in the summary and raised at the end."""
    failures: list[dict[str, Any]] = []
    status = "stopped early; rerun the command below to resume"
    try:
        failures = run_on_ray(experiment, root, todo, results, parallel, stream, lambda: summarize("running"),
                              run_federation)
        status = (f"{len(failures)} run(s) failed, errors in {FAILED}; rerun the command below to retry them"
                  if failures else "finished")
    finally:
        summary = summarize(status)
    print(f"summary: {summary}", file=stream)
    if failures:
        first = failures[0]
        raise RunsFailed(f"{len(failures)} of {len(todo)} run(s) failed (errors in {root / FAILED}); first: point "
                         f"{first['point_id']} ({first['point']}), seed {first['seed']}: {first['error']}. The other "
                         f"runs are in {root / RESULTS}; run the same command again to retry the failed ones")
    return root


def prepare_generators(experiment: Experiment, todo: list[Unit], stream: Any, progress: bool) -> None:
    """Train each ``experiment.generators`` entry that an unfinished GIA-L run uses and that is not on disk yet.

    The adversary's generator is part of its auxiliary knowledge (SoK §4.2: trained
    on public data), so the experiment builds it once, under ``DIR/generators/``,
    and a resumed run reuses the file (the fingerprint covers the spec)."""
    for name in sorted(experiment.generators_needed(todo)):
        path = experiment.generator_path(name)
        if path.exists():
            continue
        from fl_privacy.audit.auxiliary import train_generator
        from fl_privacy.federation.run_setup import resolve_device

        spec = dict(experiment.generators[name])
        config = next(iter(experiment.points[0].configs.values()))
        if config.resources.threads:
            torch.set_num_threads(config.resources.threads)
        print(f"  training generator '{name}' ({', '.join(f'{k}={show(v)}' for k, v in spec.items())})",
              file=stream, flush=True)
        started = time.time()
        checkpoint = train_generator(**spec, device=resolve_device(config.resources.device), progress=progress,
                                     data_dir=config.data.data_dir)
        checkpoint.save_checkpoint(path)
        info = {k: v for k, v in checkpoint.info().items() if k not in ("history", "format")}
        path.with_suffix(".json").write_text(json.dumps({"name": name, "spec": spec, **info}, indent=1))
        print(f"  generator '{name}' trained in {time.time() - started:.0f} s: {path}", file=stream, flush=True)


def _short(cell: list[Unit]) -> str:
    unit = cell[0]
    victims = ", victims " + " ".join(str(u.victim.index) for u in cell if u.victim) if len(cell) > 1 else \
        (f", victim {unit.victim.index}" if unit.victim else "")
    text = unit.point.label() + f", seed {unit.seed}" + victims
    return text if len(text) <= 80 else text[:77] + "..."
