"""Multi-round update MIA as a run setting (``mia.multiround``) and ``attack.gia.label_method: fedavg``."""

from __future__ import annotations

import json

import pytest

from fl_privacy.config import ExperimentConfig, build_config
from fl_privacy.metrics.catalog import MULTIROUND_MIA_METHODS, multiround_mia_metrics
from tests.conftest import needs_mnist

RECORDED = {"federation.num_clients": 3, "federation.rounds": 2, "training.algorithm": "fedavg",
            "attack.name": "none", "attack.rounds": [1, 2], "attack.victim_ids": [0, 1, 2]}


def test_multiround_settings_round_trip_through_run_config_and_json():
    config = build_config({}, {**RECORDED, "mia.multiround.rounds": "1,2", "mia.multiround.clients": "0,1",
                               "mia.multiround.methods": "fedmia,loss_trajectory", "mia.multiround.nonmembers": 50})
    multi = config.mia.multiround
    assert (multi.rounds, multi.clients, multi.methods, multi.nonmembers) == ([1, 2], [0, 1],
                                                                             ["fedmia", "loss_trajectory"], 50)
    assert ExperimentConfig.from_json(config.to_json()) == config
    assert build_config({}, {}).mia.multiround.rounds == []  # off by default


@pytest.mark.parametrize(("changes", "message"), [
    ({"attack.rounds": [1]}, r"rounds \[2\] are not recorded"),
    ({"attack.victim_ids": [1, 2]}, r"clients \[0\] are not recorded"),
    ({"attack.victim_ids": [0, 1]}, "at least two other recorded clients"),
    ({"training.algorithm": "fedsgd"}, "training.algorithm=fedavg"),
    ({"mia.multiround.methods": "fedmia,nope"}, "unknown multi-round MIA method"),
    ({"attack.victim_ids": None, "attack.victims": 3, "federation.fraction_train": 0.5}, "set attack.victim_ids"),
])
def test_multiround_refuses_what_the_recorder_does_not_keep(changes, message):
    with pytest.raises(ValueError, match=message):
        build_config({}, {**RECORDED, "mia.multiround.rounds": [1, 2], **changes})


def test_multiround_metrics_are_experiment_metrics():
    from fl_privacy.experiments.spec.names import FEDERATION_METRICS

    assert set(multiround_mia_metrics()) <= set(FEDERATION_METRICS)
    assert "mia_auc_fedmia" in FEDERATION_METRICS and "mia_tpr_at_0p1pct_fpr_gradient_update" in FEDERATION_METRICS


@needs_mnist
def test_tiny_federation_with_multiround_mia_writes_auc_and_notes_too_few_nonmembers(tmp_path):
    from clients.client_app import app as client_app
    from fl_privacy.launch.inprocess import InProcessGrid
    from strategies.server_app import run_federation

    config = build_config({}, {
        **RECORDED, "data.dataset": "mnist", "data.partition": "iid", "data.samples_per_client": 8,
        "training.batch_size": 4, "model.name": "small_cnn", "model.width": 4, "evaluation.test_samples": 50,
        "resources.device": "cpu", "resources.threads": 1, "mia.multiround.rounds": [1, 2],
        "mia.multiround.nonmembers": 150,
    })
    run = run_federation(InProcessGrid(client_app, 3), config, out=str(tmp_path / "run"))
    final = json.loads((run.root / "final.json").read_text())
    block = final["multiround_mia"]
    assert block["rounds"] == [1, 2] and block["nonmembers"] == 150 and block["targets"] == [0]
    metrics = block["metrics"]
    for method in MULTIROUND_MIA_METHODS:
        assert 0 <= metrics[f"mia_auc_{method}"] <= 1 and metrics[f"mia_tpr_at_1pct_fpr_{method}"] is not None
        assert metrics[f"mia_tpr_at_0p1pct_fpr_{method}"] is None  # 150 < 1000 non-members: not measurable
    assert any("TPR at 0.1% FPR is not measurable" in note for note in block["notes"])
    assert (run.root / block["per_target"][0]["roc"]).is_file()
    last = run.read_jsonl("rounds.jsonl")[-1]
    assert last["mia_auc_fedmia"] == metrics["mia_auc_fedmia"]
    summary = (run.root / "summary.md").read_text()
    assert "multi-round update MIA" in summary and "not measurable" in summary


def test_label_method_fedavg_accepted_for_dimitrov_on_fedavg_updates():
    from fl_privacy.audit.run_attacks import gia_config

    config = build_config({}, {"attack.name": "dimitrov_fedavg", "training.algorithm": "fedavg",
                               "attack.gia.label_method": "fedavg", "attack.gia.iterations": 3})
    assert gia_config(config).label_method == "fedavg"
    assert gia_config(build_config({}, {"attack.name": "dimitrov_fedavg", "training.algorithm": "fedavg",
                                        "attack.gia.label_method": "llg+"})).label_method == "llg+"


def test_label_method_fedavg_refused_on_fedsgd_updates_and_single_gradient_attacks():
    from fl_privacy.audit.run_attacks import gia_config
    from fl_privacy.errors import ConfigError

    with pytest.raises(ValueError, match="reads a FedAvg update"):
        build_config({}, {"attack.name": "inverting_gradients", "training.algorithm": "fedsgd",
                          "attack.gia.label_method": "fedavg"})
    config = build_config({}, {"attack.name": "inverting_gradients", "training.algorithm": "fedavg",
                               "attack.gia.label_method": "fedavg"})
    with pytest.raises(ConfigError, match="dimitrov_fedavg"):
        gia_config(config)


def test_fedavg_attack_options_check_the_label_method():
    from fl_privacy.attacks.gia.fedavg_options import FedAvgAttackConfig

    assert FedAvgAttackConfig(label_method="fedavg").label_method == "fedavg"
    with pytest.raises(ValueError, match="label_method"):
        FedAvgAttackConfig(label_method="counts")


def test_fedmia_uses_the_other_clients_recorded_in_every_round():
    """Rounds may record different clients (failures, sampling): FedMIA compares with those present in all."""
    import numpy as np

    from fl_privacy.audit.multiround_mia import _method_scores

    rng = np.random.default_rng(0)
    def round_of(ids):
        return (ids, {"cosine": rng.random((len(ids), 5)), "loss": rng.random((len(ids), 5))})
    measured = [round_of([0, 1, 2, 3]), round_of([0, 1, 3]), round_of([0, 1, 2, 3])]
    scores = _method_scores(measured, 0, ["fedmia", "fedmia_loss"])
    assert {k: v.shape for k, v in scores.items()} == {"fedmia": (5,), "fedmia_loss": (5,)}
    with pytest.raises(ValueError, match="at least two other clients recorded in every scored round"):
        _method_scores([round_of([0, 1, 2]), round_of([0, 1, 3])], 0, ["fedmia"])
