"""Every experiment file has a ``standard`` profile: n >= 8 per cell, paired victims, active comparisons, an estimate.

``standard`` sits between ``quick`` (minutes, smoke-level evidence) and ``full`` (GPU): at least 8 victims (attack
mode) or seeds (federation mode) per cell, the same victims in every cell that attacks images of the same data and
size, the paper's claims declared as paired comparisons, and a time estimate in the file's Command lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from fl_privacy.experiments import load_experiment
from tests.test_experiment_files import EXPERIMENTS, _header, _skip_without_data

FEWER_SEEDS = {"rq4_training_stage.yaml": "per-round federation rows; the SoK's claims are over rounds, 2 seeds fit 1 h",
               "ablation_igsa.yaml": "IGSA per round for 10 estimator x model cells; 2 seeds fit 1 h"}
"""Federation files allowed fewer than 8 seeds in standard, with the reason."""
NO_COMPARISONS = {"rq4_training_stage.yaml", "ablation_igsa.yaml"}
"""Files whose paper claims are not between swept cells (over rounds), so no paired comparison is declared."""


def _files() -> list:
    return [pytest.param(p, id=p.stem) for p in EXPERIMENTS]


@pytest.mark.parametrize("path", _files())
def test_standard_profile_has_n_and_paired_victims(path: Path):
    _skip_without_data(path, "standard")
    experiment = load_experiment(path, [], "standard")  # with the preflight (and the paired-design check)
    assert experiment.units
    if experiment.mode == "attack":
        for point in experiment.points:
            n = len(point.victims) * len(experiment.seeds)
            assert n >= 8, f"{path.name}: {point.label()} has n = {n} < 8 victims x seeds"
        same = {}
        for point in experiment.points:
            config = next(iter(point.configs.values()))
            key = (config.data.dataset, len(point.victims[0].indices or ()))
            victims = [v.key() for v in point.victims]
            assert same.setdefault(key, victims) == victims, f"{path.name}: {point.label()} attacks other victims"
    elif path.name not in FEWER_SEEDS:
        assert len(experiment.seeds) >= 8, f"{path.name}: n = {len(experiment.seeds)} seeds < 8"
    if path.name not in NO_COMPARISONS:
        assert experiment.comparisons, f"{path.name}: declare the paper's claims under experiment.comparisons"
        inactive = {c.spec.name for c in experiment.comparisons if not c.active}
        for profile in experiment.profiles:  # allowed only for cells that another profile runs (full, photos, ...)
            if inactive and profile != "standard":
                other = load_experiment(path, [], profile, check_data=False)
                inactive &= {c.spec.name for c in other.comparisons if not c.active}
        assert not inactive, f"{path.name}: comparisons no profile runs: {sorted(inactive)}"


@pytest.mark.parametrize("path", _files())
def test_standard_command_states_its_time(path: Path):
    text = "\n".join(_header(path))
    line = next((ln for ln in text.splitlines() if "--profile standard" in ln), "")
    assert ("estimate" in line or "measured" in line) and "min" in line, \
        f"{path.name}: add the standard command with its time (an estimate until it has run, then the measured time)"
