"""The quick and standard profiles stop stalled GIA-O restarts by default; full (the papers' budgets) does
not; anything the experiment or the user sets wins."""

from __future__ import annotations

import copy

import pytest

from fl_privacy.experiments import load_experiment
from fl_privacy.experiments.spec.names import EARLY_STOP_KEY, EARLY_STOP_PROFILES
from tests.test_experiments import ATTACK_BASE, attack_experiment, write

pytestmark = pytest.mark.unit


def _window(tmp_path, profile, experiment=None, base=None, overrides=None):
    exp = load_experiment(write(tmp_path, experiment or attack_experiment(), base), profile=profile,
                          overrides=overrides, check_data=False)
    return [cfg.attack.gia.early_stop_window for p in exp.points for cfg in p.configs.values()]


def test_quick_and_standard_stop_early_and_full_runs_every_iteration(tmp_path):
    profiles = {"quick": {}, "standard": {}, "full": {"set": {"attack.gia.iterations": 4}}}
    experiment = attack_experiment(profiles=profiles)
    assert _window(tmp_path, "quick", experiment) == [EARLY_STOP_PROFILES["quick"]] * 2
    assert _window(tmp_path, "standard", experiment) == [EARLY_STOP_PROFILES["standard"]] * 2
    assert _window(tmp_path, "full", experiment) == [None, None]


def test_what_the_experiment_or_the_user_sets_wins(tmp_path):
    assert _window(tmp_path, "quick", overrides=[f"{EARLY_STOP_KEY}=0"]) == [0, 0]
    base = copy.deepcopy(ATTACK_BASE)
    base.setdefault("attack", {}).setdefault("gia", {})["early_stop_window"] = 50
    assert _window(tmp_path, "quick", base=base) == [50, 50]
    profiles = {"quick": {"set": {EARLY_STOP_KEY: 30}}}
    assert _window(tmp_path, "quick", attack_experiment(profiles=profiles)) == [30, 30]
    swept = attack_experiment(sweep={"attack.name": ["dlg"], EARLY_STOP_KEY: [0, 100]})
    assert sorted(_window(tmp_path, "quick", swept)) == [0, 100]


def test_attacks_without_early_stopping_are_left_alone(tmp_path):
    base = copy.deepcopy(ATTACK_BASE)
    base["training"] = {**base.get("training", {}), "algorithm": "fedavg", "local_steps": 2}
    experiment = attack_experiment(sweep={"attack.name": ["inverting_gradients", "dimitrov_fedavg"]})
    exp = load_experiment(write(tmp_path, experiment, base), profile="quick", check_data=False)
    windows = {cfg.attack.name: cfg.attack.gia.early_stop_window for p in exp.points for cfg in p.configs.values()}
    assert windows == {"inverting_gradients": EARLY_STOP_PROFILES["quick"], "dimitrov_fedavg": None}
    assert exp.overrides[EARLY_STOP_KEY] == EARLY_STOP_PROFILES["quick"]  # recorded: part of the fingerprint
