"""Dimitrov et al.'s FedAvg attack: batchings, the reduction to the single-step attack at E = 1,
the epoch-order-invariant prior, label counts by simulated training, a linear model where the
reconstruction converges to the client's images, and the config/registry path."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from fl_privacy.attacks.gia import GIAConfig
from fl_privacy.attacks.gia.fedavg import fedavg_preset, reconstruct_fedavg
from fl_privacy.attacks.gia.fedavg_labels import fedavg_label_counts, round_counts
from fl_privacy.attacks.gia.fedavg_options import FedAvgAttackConfig
from fl_privacy.attacks.gia.fedavg_problem import (
    FedAvgProblem,
    chosen_batching,
    exponential_layer_weights,
    granted_batching,
)
from fl_privacy.attacks.gia.objectives import l2_distance
from fl_privacy.attacks.gia.problem import GIAProblem
from fl_privacy.attacks.threat import LocalTraining, Observation, Schedule
from fl_privacy.models import build_model
from fl_privacy.sgd import sgd_steps
from tests.conftest import needs_mnist


def _client(model: nn.Module, x: torch.Tensor, y: torch.Tensor, order: list[list[int]], lr: float,
            epochs: int, batch_size: int, *, labels: bool = True) -> Observation:
    """The server's view of a FedAvg update: the client trains on ``x[order[t]]`` at step t."""
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    after, _ = sgd_steps(model, params, {k: v.clone() for k, v in buffers.items()},
                         [(x[s], y[s]) for s in order], lr)
    return Observation(
        model=copy.deepcopy(model), global_params=params, global_buffers=buffers,
        update={k: after[k] - params[k] for k in params}, kind="delta", image_shape=tuple(x.shape[1:]),
        num_classes=int(model(x[:1]).shape[-1]), mean=(0.5,) * x.shape[1], std=(0.5,) * x.shape[1],
        num_examples=x.shape[0], labels=y.clone() if labels else None,
        training=LocalTraining(lr=lr, epochs=epochs, batch_size=batch_size),
    )


def _images(n: int, c: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((n, c, size, size), generator=gen) * 2 - 1  # normalised space of mean 0.5, std 0.5


def test_chosen_batching_cuts_each_epoch_copy_and_stops_at_local_steps():
    b = chosen_batching(LocalTraining(lr=0.1, epochs=3, batch_size=2, local_steps=5), n=4)
    assert b.steps == ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
    assert (b.copies, b.per_copy, b.aligned, b.complete) == (3, 4, False, [0, 1])
    assert chosen_batching(LocalTraining(lr=0.1, epochs=2, batch_size=3, drop_last=True), n=4).steps == ((0, 1, 2),
                                                                                                       (4, 5, 6))


def test_granted_batching_starts_a_copy_when_a_sample_returns():
    b = granted_batching(Schedule(lr=0.1, steps=((2, 0), (1, 3), (3, 2), (0, 1))), n=4)
    assert b.steps == ((2, 0), (1, 3), (7, 6), (4, 5)) and b.copies == 2 and b.aligned


def test_exponential_layer_weights_share_a_module():
    assert exponential_layer_weights(["a.weight", "a.bias", "b.weight", "b.bias"]) == pytest.approx(
        [1, 1, 0.36787944, 0.36787944])


def test_one_local_step_reduces_to_the_single_step_l2_attack():
    """E = 1, one step: -delta / lr is the gradient, so the objective equals the FedSGD L2 attack's."""
    torch.manual_seed(0)
    model = build_model("lenet", num_classes=10, in_channels=3, image_size=16)
    x, y = _images(2), torch.tensor([3, 7])
    obs = _client(model, x, y, [[0, 1]], lr=0.1, epochs=1, batch_size=2)
    grads = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), list(model.parameters()))
    fedsgd = Observation(**{**obs.__dict__, "kind": "gradient", "training": None,
                            "update": {n: g for (n, _), g in zip(model.named_parameters(), grads)}})
    single = GIAProblem(fedsgd, GIAConfig(objective="l2", labels="known", tv=0.0), "cpu")
    cfg = FedAvgAttackConfig(layer_weights="uniform", labels="known")
    problem = FedAvgProblem(obs, cfg, "cpu")
    dummy = torch.randn((3, 2, 3, 16, 16), generator=torch.Generator().manual_seed(1))
    expected = single.evaluate(dummy, y)[1]
    assert problem.distance(dummy, y) == pytest.approx(expected, rel=1e-4)
    assert float(problem.distance(x[None], y)) < 1e-8 * float(expected.min())  # zero at the truth
    assert bool((problem.order_prior(dummy) == 0).all()) and problem.batching.copies == 1
    weighted = FedAvgProblem(obs, FedAvgAttackConfig(labels="known"), "cpu")
    w = exponential_layer_weights(single.names)
    assert weighted.distance(dummy, y) == pytest.approx(l2_distance(single.candidates(dummy, y)[0], single.target, w),
                                                         rel=1e-4)


def test_order_prior_ignores_the_order_within_a_copy_but_not_the_content():
    torch.manual_seed(0)
    model = build_model("lenet", num_classes=10, in_channels=3, image_size=16)
    x, y = _images(3), torch.tensor([0, 1, 2])
    obs = _client(model, x, y, [[0], [1], [2], [2], [0], [1]], lr=0.1, epochs=2, batch_size=1)
    problem = FedAvgProblem(obs, FedAvgAttackConfig(labels="known"), "cpu")
    same_set = torch.cat([x, x[[2, 0, 1]]])[None]
    other = torch.cat([x, _images(3, seed=5)])[None]
    assert float(problem.order_prior(same_set)) == pytest.approx(0.0, abs=1e-10)
    assert float(problem.order_prior(other)) > 1e-3


def test_round_counts_sum_to_the_total():
    assert round_counts(torch.tensor([1.6, 0.7, -0.4, 0.2], dtype=torch.float64), 3).tolist() == [2, 1, 0, 0]
    assert round_counts(torch.tensor([2.9, 1.9, 0.1], dtype=torch.float64), 4).tolist() == [3, 1, 0]


def test_label_counts_by_simulated_training_on_relu_features():
    """The method's premise: the dummy inputs (N(0, 1)) share the data's feature statistics. Exact on most draws."""
    y, order = torch.tensor([0, 0, 0, 2, 4, 4]), [[0, 3], [1, 4], [2, 5], [5, 1], [3, 0], [4, 2]]
    exact = 0
    for seed in range(10):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Flatten(), nn.Linear(48, 64), nn.ReLU(), nn.Linear(64, 5))
        x = torch.randn((6, 3, 4, 4), generator=torch.Generator().manual_seed(seed))
        obs = _client(model, x, y, order, lr=0.05, epochs=2, batch_size=2, labels=False)
        counts = fedavg_label_counts(obs, num=6, steps=6, lr=0.05, model_mode="eval")
        assert int(counts.sum()) == 6
        exact += counts.tolist() == [3, 0, 1, 0, 2]
    assert exact >= 8


def test_linear_model_reconstruction_converges_despite_an_unknown_order():
    """Softmax regression: the images are identifiable; the attacker's batch order differs from the client's."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    x, y = _images(2, c=1, size=4), torch.tensor([1, 3])
    obs = _client(model, x, y, [[1], [0], [0], [1]], lr=0.05, epochs=2, batch_size=1)
    result = reconstruct_fedavg(obs, FedAvgAttackConfig(labels="known", model_mode="eval"), "cpu")
    assert result.images.shape == x.shape and result.labels.tolist() == [1, 3]
    assert float((result.images - x).abs().max()) < 0.05
    assert result.trace[-1, 1] < result.trace[0, 1]
    assert result.update_model == "dimitrov_unknown_order"


def test_fedsgd_update_and_missing_hyperparameters_are_refused():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    obs = _client(model, _images(1, c=1, size=4), torch.tensor([1]), [[0]], lr=0.1, epochs=1, batch_size=1)
    with pytest.raises(ValueError, match="FedSGD"):
        FedAvgProblem(Observation(**{**obs.__dict__, "kind": "gradient"}), FedAvgAttackConfig(), "cpu")
    with pytest.raises(ValueError, match="hyperparameters"):
        FedAvgProblem(Observation(**{**obs.__dict__, "training": None}), FedAvgAttackConfig(), "cpu")
    with pytest.raises(ValueError, match="unknown FedAvgAttackConfig field"):
        fedavg_preset("dimitrov_fedavg", bn=0.1)


def test_attack_name_resolves_through_the_config_path():
    from fl_privacy.audit.run_attacks import gia_config
    from fl_privacy.config import ConfigError, build_config

    config = build_config({}, {"attack.name": "dimitrov_fedavg", "attack.threat.labels": True,
                               "attack.gia.iterations": 7, "training.algorithm": "fedavg"})
    cfg = gia_config(config)
    assert isinstance(cfg, FedAvgAttackConfig) and cfg.iterations == 7 and cfg.labels == "known"
    with pytest.raises(ConfigError, match="training.algorithm=fedavg"):
        gia_config(build_config({}, {"attack.name": "dimitrov_fedavg", "training.algorithm": "fedsgd"}))


@needs_mnist
def test_smoke_tiny_federation_attacks_a_fedavg_update(tmp_path):
    """Two MNIST clients, 2 local epochs of 2 mini-batches: the curious server runs dimitrov_fedavg on one."""
    from clients.client_app import app as client_app
    from fl_privacy.config import build_config
    from fl_privacy.launch.inprocess import InProcessGrid
    from strategies.server_app import run_federation
    config = build_config({}, {
        "data.dataset": "mnist", "data.partition": "iid", "data.samples_per_client": 4, "data.normalize": False,
        "federation.num_clients": 2, "federation.rounds": 1, "training.algorithm": "fedavg",
        "training.batch_size": 2, "training.local_epochs": 2, "model.name": "lenet",
        "attack.name": "dimitrov_fedavg", "attack.gia.iterations": 3, "attack.rounds": [1],
        "attack.progress": False, "evaluation.test_samples": 50, "resources.device": "cpu",
    })
    run = run_federation(InProcessGrid(client_app, 2), config, out=str(tmp_path / "run"))
    victim = run.read_jsonl("rounds.jsonl")[1]["victims"][0]  # [0] is the initial evaluation
    assert victim["attack"] == "dimitrov_fedavg" and victim["iterations"] == 3 and victim["images"] == 4
    assert any("4 local steps over 2 epoch copies of 4 images" in n for n in victim["notes"])
    assert len(victim["labels_used"]) == 4 and np.isfinite(victim["psnr_mean"])
