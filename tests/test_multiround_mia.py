"""Multi-round update MIA: FedMIA's one-tailed test by hand, separation of strongly overfit members,
AUC ~ 0.5 under random membership labels, and a smoke run on a recorded tiny federation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm
from torch import nn

from fl_privacy.attacks.mia import roc_metrics
from fl_privacy.attacks.mia.multiround import fedmia_scores, round_measurements, trajectory_scores
from fl_privacy.sgd import sgd_steps
from tests.conftest import needs_mnist


def test_fedmia_is_the_mean_of_one_tailed_gaussian_tests():
    target = np.array([[1.0, 0.0], [3.0, 0.0]])                 # T = 2 rounds, M = 2 candidates
    others = np.array([[[0.0, 0.0], [2.0, 2.0]], [[0.0, 1.0], [2.0, 3.0]]])  # T x (K-1 = 2) x M
    expected = [(norm.cdf(1, 1, np.sqrt(1 + 1e-8)) + norm.cdf(3, 1, np.sqrt(1 + 1e-8))) / 2,
                (norm.cdf(0, 1, np.sqrt(1 + 1e-8)) + norm.cdf(0, 2, np.sqrt(1 + 1e-8))) / 2]
    assert fedmia_scores(target, others) == pytest.approx(expected)
    assert trajectory_scores(target).tolist() == [2.0, 0.0]
    with pytest.raises(ValueError, match="two non-target clients"):
        fedmia_scores(target, others[:, :1])


def test_fedmia_separates_shifted_members_and_not_random_labels():
    rng = np.random.default_rng(0)
    others = rng.normal(size=(3, 6, 2000))
    is_member = np.r_[np.ones(1000, bool), np.zeros(1000, bool)]
    target = rng.normal(size=(3, 2000)) + 2.0 * is_member
    scores = fedmia_scores(target, others, outlier=True)
    assert roc_metrics(scores, is_member)["auc"] > 0.95
    assert abs(roc_metrics(scores, rng.permutation(is_member))["auc"] - 0.5) < 0.05


def _federation(rounds: int = 3, clients: int = 4, per_client: int = 8, seed: int = 0):
    """FedAvg on random images with random labels: each client memorises its own samples."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 10))
    data = [(torch.randn((per_client, 3, 4, 4), generator=gen), torch.randint(0, 10, (per_client,), generator=gen))
            for _ in range(clients)]
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    history = []
    for _ in range(rounds):
        deltas = []
        for x, y in data:
            after, _ = sgd_steps(model, params, {}, [(x, y)] * 10, lr=0.2)
            deltas.append({k: after[k] - params[k] for k in params})
        history.append((dict(params), deltas))
        params = {k: params[k] + sum(d[k] for d in deltas) / clients for k in params}
    return model, data, history, gen


def test_overfit_members_separate_with_measurements_from_real_updates():
    model, data, history, gen = _federation()
    outsiders = (torch.randn((300, 3, 4, 4), generator=gen), torch.randint(0, 10, (300,), generator=gen))
    x, y = torch.cat([data[0][0], outsiders[0]]), torch.cat([data[0][1], outsiders[1]])
    target, others = {"cosine": [], "loss": []}, {"cosine": [], "loss": []}
    for params, deltas in history:
        measured = round_measurements(model, params, {}, deltas, x, y)
        assert measured["cosine"].shape == (4, 308) and np.all(np.abs(measured["cosine"]) <= 1 + 1e-9)
        for key, values in measured.items():
            target[key].append(values[0])
            others[key].append(values[1:])
    is_member = np.r_[np.ones(8, bool), np.zeros(300, bool)]
    for key in ("cosine", "loss"):
        fedmia = fedmia_scores(np.stack(target[key]), np.stack(others[key]))
        assert roc_metrics(fedmia, is_member)["auc"] > 0.9, key
        assert roc_metrics(trajectory_scores(np.stack(target[key])), is_member)["auc"] > 0.9, key
    rng = np.random.default_rng(1)
    shuffled = [roc_metrics(fedmia, rng.permutation(is_member))["auc"] for _ in range(200)]
    assert abs(float(np.mean(shuffled)) - 0.5) < 0.05


@needs_mnist
def test_smoke_multiround_mia_on_a_recorded_federation(tmp_path):
    from clients.client_app import app as client_app
    from fl_privacy.audit.multiround_mia import multiround_mia
    from fl_privacy.config import build_config
    from fl_privacy.federation.run_setup import build_model_for, load_split
    from fl_privacy.launch.inprocess import InProcessGrid
    from fl_privacy.metrics.catalog import MULTIROUND_MIA_METHODS
    from strategies.server_app import run_federation

    config = build_config({}, {
        "data.dataset": "mnist", "data.partition": "iid", "data.samples_per_client": 8, "federation.num_clients": 3,
        "federation.rounds": 2, "training.algorithm": "fedavg", "training.batch_size": 4, "model.name": "small_cnn",
        "model.width": 4, "attack.name": "none", "attack.rounds": [1, 2], "attack.victim_ids": [0, 1, 2],
        "evaluation.test_samples": 50, "resources.device": "cpu",
    })
    run = run_federation(InProcessGrid(client_app, 3), config, out=str(tmp_path / "run"))
    train, test = load_split(config, "train"), load_split(config, "test")
    model = build_model_for(config, train)
    result = multiround_mia(run.root, model, train, test, targets=[0], nonmembers=40,
                            normalize=config.data.normalize)
    target = result["per_target"][0]
    assert result["rounds"] == [1, 2] and target["members"] == 8 and result["nonmembers"] == 40
    assert set(target["scores"]) == set(MULTIROUND_MIA_METHODS) and (run.root / target["roc"]).is_file()
