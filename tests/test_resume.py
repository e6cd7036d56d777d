"""A killed federation continues with ``--resume`` and ends with the same records as an uninterrupted run."""

from __future__ import annotations

import json

import pytest

import clients.client_app as client_module
from fl_privacy.launch.cli import main
from tests.conftest import needs_mnist

pytestmark = needs_mnist

DEFENDED = {"federation.rounds": 3, "federation.fraction_train": 0.67, "training.algorithm": "fedsgd",
            "defenses": json.dumps([{"name": "topk", "ratio": 0.1, "error_feedback": True},
                                    {"name": "powersgd", "rank": 1}])}
"""Client sampling (Python's random), error feedback and PowerSGD warm starts: state a resume must restore."""


def _argv(overrides: dict, out) -> list[str]:
    return ["run", *[a for k, v in overrides.items() for a in ("--set", f"{k}={v}")], "--out", str(out)]


def _metrics(out) -> list[dict]:
    keep = ("round", "test_accuracy", "test_loss", "train_loss", "partitions", "recorded")
    return [{k: r.get(k) for k in keep} for r in map(json.loads, (out / "rounds.jsonl").read_text().splitlines())]


def test_resumed_run_ends_with_the_uninterrupted_metrics(tmp_path, tiny_overrides, monkeypatch):
    overrides = {**tiny_overrides, **DEFENDED}
    assert main(_argv(overrides, tmp_path / "whole")) == 0

    real = client_module.client_update

    def killed_in_round_3(config, model, data, steps, state, pid, server_round, *args):
        if server_round == 3:
            raise KeyboardInterrupt  # the process dies mid-round
        return real(config, model, data, steps, state, pid, server_round, *args)

    monkeypatch.setattr(client_module, "client_update", killed_in_round_3)
    with pytest.raises(KeyboardInterrupt):
        main(_argv(overrides, tmp_path / "killed"))
    summary = (tmp_path / "killed" / "summary.md").read_text()
    assert "status: 2 of 3 rounds finished; not finished yet" in summary and "--resume" in summary
    assert main(_argv(overrides, tmp_path / "killed")) == 2  # refused without --resume or --force

    monkeypatch.setattr(client_module, "client_update", real)
    import random

    random.seed(12345)  # a fresh process: the checkpoint, not this state, decides the sampling
    assert main([*_argv(overrides, tmp_path / "killed"), "--resume"]) == 0
    assert _metrics(tmp_path / "killed") == _metrics(tmp_path / "whole")
    assert "status: finished, all 3 rounds" in (tmp_path / "killed" / "summary.md").read_text()
    assert main([*_argv(overrides, tmp_path / "killed"), "--resume"]) == 2  # already finished


def test_resume_refuses_a_different_config(tmp_path, tiny_overrides, capsys):
    overrides = {**tiny_overrides, "federation.rounds": 1}
    assert main(_argv(overrides, tmp_path / "run")) == 0
    (tmp_path / "run" / "final.json").unlink()
    assert main([*_argv({**overrides, "training.lr": 0.5}, tmp_path / "run"), "--resume"]) == 2
    assert "differs from the run's config.yaml in ['training']" in capsys.readouterr().err


def test_resume_refuses_other_supernodes_when_clients_hold_state(tmp_path, tiny_overrides, capsys):
    overrides = {**tiny_overrides, **DEFENDED, "federation.rounds": 2}
    assert main(_argv(overrides, tmp_path / "run")) == 0
    (tmp_path / "run" / "final.json").unlink()  # as if killed after its last checkpoint
    assert main([*_argv(overrides, tmp_path / "run"), "--resume", "--supernodes", "1"]) == 2
    assert "resume with the same --supernodes" in capsys.readouterr().err


MIA_EACH_ROUND = {"federation.rounds": 3, "mia.rounds": [1, 2, 3], "mia.audit_size": 20, "mia.reference_models": 2,
                  "mia.reference_epochs": 1, "mia.reference_pool": 64, "mia.attacks": "loss,lira_offline,rmia_offline"}


def _mia_aucs(out) -> list[dict]:
    return [{k: v for k, v in r.items() if k == "round" or k.startswith("mia_auc_")}
            for r in map(json.loads, (out / "rounds.jsonl").read_text().splitlines())]


def test_resumed_run_reuses_the_mia_reference_models(tmp_path, tiny_overrides, monkeypatch):
    from fl_privacy.audit import mia_round

    overrides = {**tiny_overrides, **MIA_EACH_ROUND}
    trained = []
    real_train = mia_round.train_reference_models

    def counted(*args, **kwargs):
        trained.append(1)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(mia_round, "train_reference_models", counted)
    assert main(_argv(overrides, tmp_path / "whole")) == 0
    assert len(trained) == 1  # once per run, reused by the later rounds

    real = client_module.client_update

    def killed_in_round_2(config, model, data, steps, state, pid, server_round, *args):
        if server_round == 2:
            raise KeyboardInterrupt
        return real(config, model, data, steps, state, pid, server_round, *args)

    monkeypatch.setattr(client_module, "client_update", killed_in_round_2)
    with pytest.raises(KeyboardInterrupt):
        main(_argv(overrides, tmp_path / "killed"))
    assert len(trained) == 2 and (tmp_path / "killed" / "mia" / "reference_models.pt").is_file()

    monkeypatch.setattr(client_module, "client_update", real)
    assert main([*_argv(overrides, tmp_path / "killed"), "--resume"]) == 0
    assert len(trained) == 2  # loaded from the run directory, not retrained
    aucs = _mia_aucs(tmp_path / "killed")
    assert aucs == _mia_aucs(tmp_path / "whole") and all("mia_auc_lira_offline" in r for r in aucs[1:])


def test_reference_models_are_retrained_when_their_settings_changed(tmp_path, caplog):
    import numpy as np
    import torch

    from fl_privacy.attacks.mia.reference import train_reference_models
    from fl_privacy.audit.mia_references import reused_or_trained
    from fl_privacy.data import ImageData

    data = ImageData(name="toy", images=np.random.default_rng(0).random((16, 1, 4, 4), dtype=np.float32),
                     labels=np.arange(16) % 2, classes=2, mean=(0.5,), std=(0.5,), source="toy")

    def factory():
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))

    calls = []

    def train():
        calls.append(1)
        return train_reference_models(factory, data, np.arange(16), 2, 1, 4, 0.1, 0)

    path = tmp_path / "reference_models.pt"
    first = reused_or_trained(path, {"seed": 0}, factory, "cpu", train)
    again = reused_or_trained(path, {"seed": 0}, factory, "cpu", train)
    assert len(calls) == 1 and all(torch.equal(a[0][1].weight, b[0][1].weight) and np.array_equal(a[1], b[1])
                                   for a, b in zip(first, again, strict=True))
    with caplog.at_level("WARNING", logger="flwr"):
        reused_or_trained(path, {"seed": 1}, factory, "cpu", train)
    assert len(calls) == 2 and "other settings (seed): retraining" in caplog.text
