"""Secure-aggregation threat level (attack.threat.observes: aggregate) and the Cocktail Party Attack."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from clients.client_app import app as client_app
from fl_privacy.attacks.cocktail_party import CocktailPartyConfig, cocktail_party, matched_correlation
from fl_privacy.attacks.threat import Observation
from fl_privacy.audit.observe import VictimTruth, observe
from fl_privacy.audit.run_attacks import gia_config
from fl_privacy.config import ConfigError, build_config, load_config
from fl_privacy.federation.recording import AGGREGATE_ID, RecordedUpdate
from fl_privacy.federation.run_setup import prepare, victim_steps
from fl_privacy.federation.training import local_update
from fl_privacy.launch.inprocess import InProcessGrid
from fl_privacy.models import build_model
from strategies.server_app import run_federation
from tests.conftest import needs_mnist


def _smooth_images(n: int, seed: int, size: int = 16) -> torch.Tensor:
    """Natural-image-like sources: a few flat rectangles of random place and brightness per image."""
    gen = np.random.default_rng(seed)
    images = np.zeros((n, 1, size, size))
    for image in images:
        for _ in range(4):
            top, left = gen.integers(0, size - 3, size=2)
            height, width = gen.integers(3, size // 2, size=2)
            image[0, top:top + height, left:left + width] += gen.uniform(0.2, 0.8)
    return torch.as_tensor(images.clip(0, 1), dtype=torch.float32)


def _observation(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Observation:
    loss = torch.nn.functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    update = {name: g for (name, _), g in zip(model.named_parameters(), grads, strict=True)}
    return Observation(model=copy.deepcopy(model), global_params=dict(model.named_parameters()), global_buffers={},
                       update=update, kind="gradient", image_shape=tuple(x.shape[1:]), num_classes=10,
                       mean=(0.0,), std=(1.0,), normalized=False, num_examples=len(x))


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_cocktail_party_recovers_the_batch_from_a_fully_connected_gradient(activation: str) -> None:
    """K = 6 images, first layer of 32 units (K <= width): each image comes back (|corr| > 0.95)."""
    torch.manual_seed(0)
    model = build_model("mlp", num_classes=10, in_channels=1, image_size=16, width=32, activation=activation)
    x = _smooth_images(6, seed=1)
    result = cocktail_party(_observation(model, x, torch.arange(6)), CocktailPartyConfig())
    corr, perm = matched_correlation(result.images, x)
    assert result.images.shape == x.shape
    assert corr.min() > 0.95, corr
    assert sorted(perm.tolist()) == list(range(6))
    # the bias gradient fixes sign, scale and brightness: pixels themselves come back, not only their pattern
    assert (result.images[perm] - x).abs().mean() < 0.1


def test_cocktail_party_refuses_more_images_than_units() -> None:
    torch.manual_seed(0)
    model = build_model("mlp", num_classes=10, in_channels=1, image_size=16, width=4)
    with pytest.raises(ValueError, match="at most as many sources"):
        cocktail_party(_observation(model, _smooth_images(6, 1), torch.arange(6)), CocktailPartyConfig())


def test_matched_correlation_ignores_sign_scale_and_order() -> None:
    x = _smooth_images(4, seed=2)
    shuffled = -3.0 * x[[2, 0, 3, 1]] + 0.5
    corr, perm = matched_correlation(shuffled, x)
    np.testing.assert_allclose(corr, 1.0, atol=1e-9)
    assert perm.tolist() == [1, 3, 0, 2]


def test_cocktail_party_needs_a_first_fully_connected_layer_and_aggregate_hides_schedule() -> None:
    with pytest.raises(ConfigError, match="model.name mlp"):
        gia_config(load_config(None, {"attack.name": "cocktail_party", "model.name": "convnet"}))
    with pytest.raises(Exception, match="schedule"):
        load_config(None, {"attack.threat.observes": "aggregate", "attack.threat.schedule": True})


AGGREGATE = {
    "data.dataset": "mnist", "data.partition": "iid", "data.samples_per_client": 2, "federation.num_clients": 3,
    "federation.rounds": 1, "training.algorithm": "fedsgd", "training.batch_size": 2, "evaluation.test_samples": 50,
    "model.name": "mlp", "model.width": 16, "resources.device": "cpu", "attack.threat.observes": "aggregate",
    "attack.victims": 3,
}


@needs_mnist
def test_aggregate_observation_holds_only_the_weighted_mean(tmp_path) -> None:
    """The server records one aggregate per attacked round and no client's update; it equals the clients' mean."""
    config = build_config({}, AGGREGATE)
    run = run_federation(InProcessGrid(client_app, 3), config, out=str(tmp_path / "run"))
    files = sorted(p.name for p in (run.root / "updates" / "round_001").iterdir())
    assert files == ["aggregate.pt"]
    recorded = RecordedUpdate.load(run.update_path(1, AGGREGATE_ID))
    assert recorded.partition_id == AGGREGATE_ID and recorded.metadata["aggregated_partitions"] == [0, 1, 2]
    assert recorded.num_examples == 6
    setup = prepare(config)
    singles = []
    for pid in range(3):
        model = setup.new_model()
        model.load_state_dict(recorded.global_state)
        singles.append(local_update(model, setup.train, victim_steps(setup, 1, pid), config.training).shared)
    name = "features.fc.weight"
    torch.testing.assert_close(recorded.update[name], sum(s[name] for s in singles) / 3, atol=1e-6, rtol=0)
    assert all(not torch.allclose(recorded.update[name], s[name]) for s in singles)
    # FedSGD, equal batches, no BatchNorm: the aggregate is the gradient of one batch of all 6 images
    model = setup.new_model()
    model.load_state_dict(recorded.global_state)
    union = np.concatenate([victim_steps(setup, 1, pid)[0] for pid in range(3)])
    big_batch = local_update(model, setup.train, [union], config.training).shared
    torch.testing.assert_close(recorded.update[name], big_batch[name], atol=1e-6, rtol=1e-5)

    truth = json.loads(run.ground_truth_path(1, AGGREGATE_ID).read_text())
    assert truth["partitions"] == [0, 1, 2] and len(truth["labels"]) == 3
    steps = [np.asarray(s) for s in truth["steps"]]
    obs = observe(recorded, setup.new_model(), setup.train, config,
                  VictimTruth.from_steps(setup.train, steps, config.data.normalize))
    assert obs.aggregated_clients == 3 and obs.num_examples == 6 and obs.batch_size == 6
    assert obs.schedule is None and obs.bn_statistics is None and obs.labels is None
    assert all(torch.equal(obs.update[k], recorded.update[k]) for k in recorded.update)


@needs_mnist
@pytest.mark.parametrize("attack", ["cocktail_party", "inverting_gradients"])
def test_attacks_on_the_aggregate_run_through_a_federation(tmp_path, attack: str) -> None:
    overrides = {**AGGREGATE, "attack.name": attack, "attack.gia.iterations": 3, "attack.threat.labels": True}
    config = build_config({}, overrides)
    run = run_federation(InProcessGrid(client_app, 3), config, out=str(tmp_path / attack))
    victims = run.read_jsonl("victims.jsonl")
    assert len(victims) == 1 and victims[0]["partition_id"] == AGGREGATE_ID
    entry = victims[0]
    assert entry["images"] == 6 and entry["aggregated_clients"] == 3
    assert 0.0 <= entry["corr_mean"] <= 1.0 and np.isfinite(entry["psnr_mean"])
    rounds = run.read_jsonl("rounds.jsonl")
    assert rounds[1]["recorded"] == [AGGREGATE_ID] and "attack_corr_mean" in rounds[1]
    if attack == "cocktail_party":
        assert entry["corr_mean"] > 0.5  # 6 MNIST digits unmixed from a 16-unit first layer


def test_aggregate_counts_examples_when_clients_withhold_them(tmp_path) -> None:
    """Under DP the clients withhold their example counts: the aggregate still holds K x B images (the public
    FedSGD batch size), not K (the uniform weights)."""
    config = build_config({}, {**AGGREGATE, "privacy.mechanism": "local", "privacy.clip": 1.0,
                               "privacy.noise_multiplier": 1.0, "privacy.proceed_without_guarantee": True})
    run = run_federation(InProcessGrid(client_app, 3), config, out=str(tmp_path / "run"))
    recorded = RecordedUpdate.load(run.update_path(1, AGGREGATE_ID))
    assert recorded.num_examples == 3 * config.training.batch_size == 6
