"""One run of a sweep: a victim attacked once, a point x seed's victims attacked together, or a federation run;
its rows for results.csv.

Called in order by the sweep (``fl_privacy.experiments.runner``) or on a Ray worker
(``fl_privacy.experiments.parallel``); both pass the ``run_federation`` function the
launcher supplies.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fl_privacy.audit.oneshot import VictimRequest, attack_once, attack_together
from fl_privacy.config import ConfigError, ExperimentConfig
from fl_privacy.experiments.spec.model import Experiment, Unit
from fl_privacy.experiments.spec.names import ATTACK_METRICS, FEDERATION_METRICS, show
from fl_privacy.metrics.catalog import ATTACK_PREFIX, IMAGE_QUALITY, PROBE_PREFIX, ROUND_MEANS, finite_means, prefixed
from fl_privacy.reporting import RunDirectory

RunFederation = Callable[[ExperimentConfig, str], RunDirectory]
"""Runs one whole federation of a config into a run directory (``fl_privacy.launch.runs.run_inprocess``)."""


class LpipsCache:
    """One LPIPS metric per device for the whole experiment (None where the backbone weights are missing)."""

    def __init__(self) -> None:
        self._by_device: dict[str, Any] = {}

    def __call__(self, config: ExperimentConfig) -> Any:
        from fl_privacy.federation.run_setup import resolve_device
        from fl_privacy.metrics import try_lpips

        device = str(resolve_device(config.resources.device))
        if device not in self._by_device:
            self._by_device[device] = try_lpips(device=device)
        return self._by_device[device]


def _base_row(unit: Unit, root: Path, run_dir: Path) -> dict[str, Any]:
    row: dict[str, Any] = {"row_id": unit.row_id, "point_id": unit.point.point_id, "seed": unit.seed,
                           "run_dir": str(run_dir.relative_to(root))}
    row.update({k: show(v) for k, v in unit.point.values.items()})
    if unit.victim is not None:
        row.update({"victim": unit.victim.index, "victim_images": unit.victim.describe()})
    return row


def cells(experiment: Experiment, todo: list[Unit]) -> list[list[Unit]]:
    """The unfinished units as cells that run as one: in attack mode, with ``experiment.batch_victims`` and an
    attack that batches victims (``batches_victims``), the victims of one point x seed; else each unit alone."""
    from fl_privacy.audit.run_attacks import batches_victims

    if experiment.mode != "attack" or not experiment.batch_victims:
        return [[unit] for unit in todo]
    grouped: dict[tuple[str, int], list[Unit]] = {}
    for unit in todo:
        grouped.setdefault((unit.point.point_id, unit.seed), []).append(unit)
    out: list[list[Unit]] = []
    for cell in grouped.values():
        config = cell[0].point.configs[cell[0].seed]
        together = len(cell) > 1 and len({u.victim.split for u in cell if u.victim}) == 1 and batches_victims(config)
        out.extend([cell] if together else [[unit] for unit in cell])
    return out


def run_cell(experiment: Experiment, cell: list[Unit], root: Path, lpips: LpipsCache,
             run_federation: RunFederation | None = None) -> list[dict[str, Any]]:
    """The rows of one cell of ``cells``: its victims attacked together, or its one unit by ``run_unit``."""
    if len(cell) == 1:
        return run_unit(experiment, cell[0], root, lpips, run_federation)
    for unit in cell:
        _clear(unit.run_dir(root), root)
    return run_attack_cell(experiment, cell, root, lpips)


def run_unit(experiment: Experiment, unit: Unit, root: Path, lpips: LpipsCache,
             run_federation: RunFederation | None = None) -> list[dict[str, Any]]:
    """One run in a fresh run directory (an unfinished one of an interrupted invocation is cleared first)."""
    _clear(unit.run_dir(root), root)
    if experiment.mode == "attack":
        return run_attack_unit(experiment, unit, root, lpips)
    if run_federation is None:
        raise ConfigError("federation experiments need a function that runs a federation: run them with "
                          "`fl-privacy run` or fl_privacy.launch.runs.run_experiment")
    return run_federation_unit(experiment, unit, root, run_federation)


def _clear(run_dir: Path, root: Path) -> None:
    if run_dir.exists() and (root / "points") in run_dir.parents:
        shutil.rmtree(run_dir)


def run_attack_unit(experiment: Experiment, unit: Unit, root: Path, lpips: LpipsCache) -> list[dict[str, Any]]:
    """One victim update built and attacked with ``attack_once``: one row."""
    config = unit.point.configs[unit.seed]
    victim = unit.victim
    assert victim is not None
    run_dir = unit.run_dir(root)
    started = time.time()
    if config.resources.threads:
        torch.set_num_threads(config.resources.threads)
    if victim.indices is not None:
        _, entry = attack_once(config, str(run_dir), None, victim.split, list(victim.indices), lpips(config))
    else:
        _, entry = attack_once(config, str(run_dir), victim.client, "train", None, lpips(config))
    return [_attack_row(unit, root, entry, time.time() - started)]


def run_attack_cell(experiment: Experiment, cell: list[Unit], root: Path, lpips: LpipsCache) -> list[dict[str, Any]]:
    """The victims of one point x seed (one global model) built and attacked together with ``attack_together``:
    one row each; ``wall_seconds`` is the cell's divided by its victims."""
    config = cell[0].point.configs[cell[0].seed]
    started = time.time()
    if config.resources.threads:
        torch.set_num_threads(config.resources.threads)
    requests = []
    for unit in cell:
        victim = unit.victim
        assert victim is not None
        indices = list(victim.indices) if victim.indices is not None else None
        requests.append(VictimRequest(str(unit.run_dir(root)), victim.client, victim.split, indices))
    entries = [entry for _, entry in attack_together(config, requests, lpips(config))]
    wall = (time.time() - started) / len(cell)
    return [_attack_row(unit, root, entry, wall) for unit, entry in zip(cell, entries)]


def _attack_row(unit: Unit, root: Path, entry: dict[str, Any],
                wall: float) -> dict[str, Any]:
    """A victim's row; a batched attack's ``seconds`` and ``seconds_per_iteration`` are shared by its victims."""
    row = _base_row(unit, root, unit.run_dir(root))
    row.update({m: entry.get(m) for m in ATTACK_METRICS if m != "wall_seconds"})
    share = entry.get("victims_batched") or 1
    for key in ("seconds", "seconds_per_iteration"):
        if isinstance(row.get(key), (int, float)) and share > 1:
            row[key] = row[key] / share
    row["wall_seconds"] = wall
    return row


def run_federation_unit(experiment: Experiment, unit: Unit, root: Path,
                        run_federation: RunFederation) -> list[dict[str, Any]]:
    """One whole federation (in-process clients): one row, or one row per round when the report asks for rounds."""
    config = unit.point.configs[unit.seed]
    run_dir = unit.run_dir(root)
    started = time.time()
    run = run_federation(config, str(run_dir))
    wall = time.time() - started
    records = run.read_jsonl("rounds.jsonl")
    final = json.loads((run.root / "final.json").read_text()) if (run.root / "final.json").exists() else {}
    privacy = final.get("privacy") or {}
    base = _base_row(unit, root, run_dir)
    if experiment.per_round:
        from fl_privacy.dp.report import privacy_block

        rows = []
        for index, record in enumerate(records):
            row = {**base, "round": record["round"], "wall_seconds": record.get("elapsed_seconds")}
            row.update({m: record.get(m) for m in experiment.metrics if m in record and m != "wall_seconds"})
            guarantee = privacy_block(config, records[: index + 1], record["round"]) if record["round"] else None
            if guarantee:
                row.update(epsilon=guarantee["epsilon"], delta=guarantee["delta"])
            rows.append(row)
        if rows:
            rows[-1]["wall_seconds"] = wall
        return rows
    row = {**base, **_final_metrics(records), "wall_seconds": wall}
    if privacy:
        row.update(epsilon=privacy.get("epsilon"), delta=privacy.get("delta"), dp_mechanism=privacy.get("mechanism"))
    return [row]


def _final_metrics(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per run: the last evaluated accuracy/loss, attack metrics over every attacked victim, mean payload."""
    out: dict[str, Any] = {}
    mia = [k for k in FEDERATION_METRICS if k.startswith("mia_")]
    for key in ("test_accuracy", "test_loss", "train_loss", "igsa", *prefixed(PROBE_PREFIX, IMAGE_QUALITY), *mia):
        values = [r[key] for r in records if isinstance(r.get(key), (int, float))]
        if values:
            out[key] = values[-1]
    victims = [v for r in records for v in r.get("victims") or []]
    out.update(finite_means(victims, ROUND_MEANS, ATTACK_PREFIX))
    for key in ("payload_kib", "compression"):
        values = [r[key] for r in records if isinstance(r.get(key), (int, float))]
        if values:
            out[key] = sum(values) / len(values)
    return out
