"""The curious server attacks recorded updates: observation contract, reports, one-shot mode."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from clients.client_app import app as client_app
from fl_privacy.attacks import attack_names
from fl_privacy.attacks.gia import PRESETS
from fl_privacy.audit.observe import VictimTruth, observe
from fl_privacy.audit.oneshot import attack_once
from fl_privacy.audit.ready import prepare_checked
from fl_privacy.config import ConfigError, ThreatConfig, build_config
from fl_privacy.federation.recording import RecordedUpdate
from fl_privacy.federation.run_setup import prepare, victim_steps
from fl_privacy.launch.cli import main as cli_main
from fl_privacy.launch.inprocess import InProcessGrid
from strategies.server_app import run_federation
from tests.conftest import needs_mnist

pytestmark = needs_mnist

ATTACKED = {
    "data.dataset": "mnist", "data.partition": "iid", "data.samples_per_client": 8, "data.normalize": False,
    "federation.num_clients": 2, "federation.rounds": 2, "training.algorithm": "fedsgd", "training.batch_size": 1,
    "model.name": "lenet", "attack.name": "dlg", "attack.gia.iterations": 30, "attack.rounds": [1, 2],
    "attack.progress": False, "evaluation.test_samples": 100, "resources.device": "cpu",
}


def test_attack_names_are_the_presets():
    from fl_privacy.attacks.gia.fedavg import FEDAVG_PRESETS
    from fl_privacy.attacks.gia.latent import LATENT_PRESETS

    assert set(attack_names()) == {*PRESETS, *LATENT_PRESETS, *FEDAVG_PRESETS, "cocktail_party"}


def test_latent_attack_needs_a_generator(tmp_path):
    with pytest.raises(ConfigError, match="fl-privacy train-generator"):
        prepare_checked(build_config({}, {**ATTACKED, "attack.name": "gias"}))
    with pytest.raises(ConfigError, match="does not exist"):
        prepare_checked(build_config({}, {**ATTACKED, "attack.name": "ggl", "attack.generator": str(tmp_path / "g.pt")}))


def _observation(threat: ThreatConfig, algorithm: str = "fedavg"):
    overrides = {**ATTACKED, "training.algorithm": algorithm, "training.batch_size": 4, "attack.name": "none"}
    config = build_config({}, overrides)
    setup = prepare(config)
    model = setup.new_model()
    steps = victim_steps(setup, 1, 0)
    truth = VictimTruth.from_steps(setup.train, steps, config.data.normalize)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    from fl_privacy.federation.client import client_update

    reply = client_update(config, setup.new_model(), setup.train, steps, state, 0, 1, {})
    names = [n for n, _ in model.named_parameters()]
    recorded = RecordedUpdate.from_reply(config, 1, 0, state, reply.arrays, names, reply.num_examples)
    return observe(recorded, model, setup.train, config, truth, threat), truth


def _tensors(value, found):
    if isinstance(value, torch.Tensor):
        found.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            _tensors(v, found)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _tensors(v, found)
    return found


def test_observation_holds_no_ground_truth_by_default():
    obs, truth = _observation(ThreatConfig())
    assert obs.labels is None and obs.schedule is None and obs.bn_statistics is None
    fields = [getattr(obs, f) for f in obs.__dataclass_fields__ if f != "model"]
    for tensor in _tensors(fields, []) + list(obs.model.state_dict().values()):
        assert tensor.shape != truth.images.shape or not torch.equal(tensor, truth.images)
        assert tensor.shape != truth.labels.shape or not torch.equal(tensor.to(truth.labels.dtype), truth.labels)
    text = repr(obs.extra) + repr(obs.schedule)
    assert not any(str(i) in text.split() for i in truth.indices)


def test_granted_knowledge_is_exactly_what_the_threat_level_says():
    obs, truth = _observation(ThreatConfig(labels=True, schedule=True, bn_statistics=True))
    assert torch.equal(obs.labels, truth.labels)
    positions = sorted(p for step in obs.schedule.steps for p in step)
    assert positions == list(range(len(truth.indices)))  # positions, never dataset indices
    assert obs.schedule.lr == 0.05 and obs.bn_statistics == []  # LeNet has no BatchNorm
    assert obs.num_examples == len(truth.indices)


def test_federation_attacks_victims_and_reports(tmp_path):
    config = build_config({}, ATTACKED)
    run = run_federation(InProcessGrid(client_app, 2), config, out=str(tmp_path / "run"))
    rounds = run.read_jsonl("rounds.jsonl")
    assert all("attack_psnr_mean" in r for r in rounds[1:])
    victim = rounds[1]["victims"][0]
    assert victim["iterations"] == 30 and victim["images"] == 1 and victim["lpips"] in ("unavailable", "alex")
    assert (run.root / victim["grid"]).exists() and (run.root / victim["trace"]).exists()
    assert (run.root / "attacks" / "round_001_client_0000_trace.csv").exists()
    summary = (run.root / "summary.md").read_text()
    assert "## Attacked victims" in summary and "attack PSNR dB" in summary and (run.root / "attack.png").exists()


def test_attack_size_is_checked_before_round_one():
    overrides = {**ATTACKED, "training.algorithm": "fedavg", "data.samples_per_client": 200,
                 "training.batch_size": 8, "attack.max_images": 64}
    with pytest.raises(ConfigError, match="would reconstruct 200 images"):
        prepare_checked(build_config({}, overrides))


def test_one_shot_attack_recovers_an_mnist_digit(tmp_path):
    """DLG on LeNet (sigmoid), MNIST batch 1: a short L-BFGS run beats the random start clearly."""
    overrides = {**ATTACKED, "attack.name": "idlg", "attack.gia.iterations": 60}
    config = build_config({}, overrides)
    run, entry = attack_once(config, str(tmp_path / "one"), split="test", indices=[0])
    assert entry["label_acc"] == 1.0 and entry["psnr_mean"] > 20
    assert json.loads((run.root / "ground_truth" / "round_001" / "client_0000.json").read_text())["split"] == "test"
    assert np.isfinite(entry["objective"])


def test_cli_attack(tmp_path, capsys):
    sets = [f"--set={k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in ATTACKED.items()]
    code = cli_main(["attack", *sets, "--set=attack.gia.iterations=5", "--split", "test", "--indices", "1",
                     "--out", str(tmp_path / "cli")])
    assert code == 0 and "PSNR" in capsys.readouterr().out
    assert cli_main(["attack", "--set=attack.name=none"]) == 2


def test_granted_labels_are_used_and_missing_knowledge_fails_fast():
    from fl_privacy.audit.run_attacks import gia_config

    granted = build_config({}, {**ATTACKED, "attack.name": "inverting_gradients", "attack.threat.labels": True})
    assert gia_config(granted).labels == "known"
    assert gia_config(build_config({}, {**ATTACKED, "attack.name": "inverting_gradients"})).labels == "infer"
    with pytest.raises(ConfigError, match="bn_statistics"):
        prepare_checked(build_config({}, {**ATTACKED, "attack.name": "see_through_gradients"}))
    with pytest.raises(ConfigError, match="does not grant labels"):
        prepare_checked(build_config({}, {**ATTACKED, "attack.name": "inverting_gradients", "attack.gia.labels": "known"}))


def test_federation_runs_membership_inference(tmp_path):
    overrides = {**ATTACKED, "attack.name": "none", "training.algorithm": "fedavg", "training.batch_size": 4,
                 "mia.rounds": [2], "mia.audit_size": 16, "mia.reference_models": 2, "mia.reference_epochs": 1,
                 "mia.reference_pool": 64, "mia.gradient": True, "mia.gradient_nonmembers": 8,
                 "mia.attacks": "loss,lira_offline,rmia_offline"}
    config = build_config({}, overrides)
    run = run_federation(InProcessGrid(client_app, 2), config, out=str(tmp_path / "mia"))
    rounds = run.read_jsonl("rounds.jsonl")
    audit = rounds[2]["mia"]
    assert set(audit["attacks"]) == {"loss", "lira_offline", "rmia_offline"}
    assert audit["members"] == 8 and audit["nonmembers"] == 8
    assert all(0.0 <= m["auc"] <= 1.0 for m in audit["attacks"].values())
    assert (run.root / audit["roc"]).exists()
    victim = rounds[1]["victims"][0]
    assert victim["gradient_mia_members"] == 8 and 0.0 <= victim["gradient_mia_auc"] <= 1.0
    summary = (run.root / "summary.md").read_text()
    assert "## Membership inference" in summary and "lira_offline" in summary


def test_train_generator_then_latent_attack(tmp_path, capsys):
    path = tmp_path / "gen.pt"
    code = cli_main(["train-generator", "--dataset", "mnist", "--classes", "0,1", "--epochs", "1", "--max-steps", "2",
                     "--ngf", "8", "--ndf", "8", "--nz", "16", "--batch-size", "16", "--device", "cpu",
                     "--no-progress", "--out", str(path)])
    assert code == 0 and path.exists()
    overrides = {**ATTACKED, "attack.name": "gias", "attack.generator": str(path), "attack.gia.iterations": 5,
                 "attack.gia.restarts": 2, "attack.gia.generator_steps": 2, "attack.threat.labels": True}
    run, entry = attack_once(build_config({}, overrides), str(tmp_path / "gial"), split="test", indices=[0])
    assert entry["attack"] == "gias" and entry["restarts"] == 2 and np.isfinite(entry["psnr_mean"])
    assert (run.root / entry["grid"]).exists()


def test_round_victims_are_attacked_as_one_batch_with_their_solo_results(tmp_path):
    from fl_privacy.audit.run_attacks import attack_update

    overrides = {**ATTACKED, "attack.name": "inverting_gradients", "attack.gia.iterations": 6, "attack.rounds": [1],
                 "federation.rounds": 1, "attack.victims": 2, "attack.threat.labels": True}
    config = build_config({}, overrides)
    run = run_federation(InProcessGrid(client_app, 2), config, out=str(tmp_path / "run"))
    victims = run.read_jsonl("rounds.jsonl")[1]["victims"]
    assert [v["victims_batched"] for v in victims] == [2, 2]
    assert all(v["iterations_used"] == 6 for v in victims)
    setup = prepare(config)
    for v in victims:  # each victim's batched result is the one it gets when attacked alone
        recorded = RecordedUpdate.load(run.root / v["update_file"])
        truth = VictimTruth.from_steps(setup.train, victim_steps(setup, 1, v["partition_id"]), config.data.normalize)
        alone = attack_update(recorded, truth, setup.new_model(), setup.train, config, tmp_path / "alone", "cpu")
        assert alone["victims_batched"] == 1
        assert alone["objective"] == pytest.approx(v["objective"], rel=1e-4, abs=1e-6)
        assert alone["psnr_mean"] == pytest.approx(v["psnr_mean"], rel=1e-4)
