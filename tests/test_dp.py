"""Differential privacy that holds for what runs: the four measured defects, the mechanisms, the accountants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fl_privacy.config import ConfigError, build_config
from fl_privacy.dp.accounting import gaussian_epsilon, noise_multiplier_for_target
from fl_privacy.dp.report import privacy_block
from tests.conftest import needs_mnist

DELTA = 1e-5
LOCAL = {"name": "gaussian", "std": 1.0, "clip": 1.0, "delta": DELTA}


def _config(defenses=None, **flat):
    return build_config({"defenses": defenses or []}, flat)


def _records(rounds: int, schedule) -> list[dict]:
    return [{"round": 0}] + [{"round": r, "partitions": schedule(r)} for r in range(1, rounds + 1)]


# ------------------------------------------------------------------ accountants


def test_accountant_hand_checked_values():
    # Opacus RDP, REFERENCES.md "Defenses": q = 256/60000, sigma = 1.1, 14062 steps, delta 1e-5 -> 2.60
    assert gaussian_epsilon(1.1, 14062, DELTA, sample_rate=256 / 60000) == pytest.approx(2.60, abs=0.01)
    # no amplification: sigma 1 over 10 releases; replace-one doubles the sensitivity (sigma/2)
    assert gaussian_epsilon(1.0, 10, DELTA) == pytest.approx(19.05, abs=0.01)
    assert gaussian_epsilon(1.0, 10, DELTA, "replace_one") == pytest.approx(48.80, abs=0.01)
    assert gaussian_epsilon(1.0, 10, DELTA, "replace_one") == pytest.approx(gaussian_epsilon(0.5, 10, DELTA))
    assert gaussian_epsilon(1.0, 0, DELTA) == 0.0 and gaussian_epsilon(0.0, 3, DELTA) == math.inf
    with pytest.raises(ValueError, match="add-or-remove"):
        gaussian_epsilon(1.0, 10, DELTA, "replace_one", sample_rate=0.1)
    sigma = noise_multiplier_for_target(8.0, DELTA, 10)
    assert 7.99 <= gaussian_epsilon(sigma, 10, DELTA) <= 8.0
    with pytest.raises(ValueError, match="above 1e4"):
        noise_multiplier_for_target(1e-6, 1e-12, 10_000)


def test_accountant_matches_flowers_rdp_accountant():
    # dp-accounting is a dependency (pyproject), so Flower's accountant is always here to cross-check.
    from flwr.serverapp import GaussianPrivacyEvent, NeighboringRelation, PrivacyConfig, RdpAccountant, SamplingMethod

    def flower(sampling, sigma, sample_size, population, count):
        accountant = RdpAccountant(PrivacyConfig(DELTA, population, NeighboringRelation.ADD_OR_REMOVE_ONE, sampling))
        accountant.compose(GaussianPrivacyEvent(sigma, sample_size, population), count)
        return accountant.get_epsilon(DELTA)

    assert gaussian_epsilon(1.0, 10, DELTA) == pytest.approx(flower(SamplingMethod.NO_AMPLIFICATION, 1.0, 1, 10, 10),
                                                             rel=1e-6)
    assert gaussian_epsilon(1.1, 14062, DELTA, sample_rate=256 / 60000) == pytest.approx(
        flower(SamplingMethod.POISSON, 1.1, 256, 60000, 14062), rel=1e-3)


# ------------------------------------------------- defect 1: local noise, no amplification


def test_local_noise_is_accounted_per_client_without_amplification():
    """HEAD reported 7.90 (central, amplified by q = 0.1) for noise each client adds to its own update."""
    config = _config([LOCAL], **{"federation.num_clients": 10, "federation.fraction_train": 0.1,
                                 "federation.rounds": 100, "privacy.metrics": "withhold"})
    records = _records(100, lambda r: [3] if r % 10 == 0 else [r % 10])  # client 3 takes part 10 + 10 times
    block = privacy_block(config, records)
    assert block["mechanism"] == "local" and block["unit"] == "client"
    assert block["neighbouring_relation"] == "add-or-remove-one" and block["sampling"].startswith("none")
    assert block["compositions"] == 20 and "client 3" in block["composed"]
    assert block["epsilon"] == pytest.approx(gaussian_epsilon(1.0, 20, DELTA))
    one_in_ten = _records(100, lambda r: [r % 10])  # every client 10 times
    assert privacy_block(config, one_in_ten)["epsilon"] == pytest.approx(19.05, abs=0.01)
    replace = _config([{**LOCAL, "neighbouring": "replace_one"}], **{"federation.num_clients": 10,
                      "federation.fraction_train": 0.1, "federation.rounds": 100})
    assert privacy_block(replace, one_in_ten)["epsilon"] == pytest.approx(48.80, abs=0.01)
    assert privacy_block(config)["compositions"] == 100  # before the run: every round (worst case)
    assert "server" in block["protects_against"]


# --------------------------------------------- defect 2: nothing bypasses the defenses


@needs_mnist
@pytest.mark.parametrize("algorithm", ["fedavg", "fedsgd"])
@pytest.mark.parametrize("buffers", ["withhold", "noise"])
def test_nothing_in_a_reply_bypasses_the_dp_stage(tiny_overrides, monkeypatch, algorithm, buffers):
    """HEAD sent BatchNorm running statistics and the train loss around the pipeline."""
    from fl_privacy.defenses.noise import GaussianNoise
    from fl_privacy.federation.client import client_update
    from fl_privacy.federation.run_setup import prepare, victim_steps

    config = build_config({}, {**tiny_overrides, "model.name": "convnet", "model.width": 2, "training.algorithm": algorithm,
                               "privacy.mechanism": "local",
                               "privacy.clip": 1.0, "privacy.noise_multiplier": 1.0, "privacy.buffers": buffers})
    setup = prepare(config)
    model = setup.new_model()
    assert any(v.is_floating_point() for _, v in model.named_buffers())  # the model has BatchNorm statistics
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    seen: dict[str, torch.Tensor] = {}
    original = GaussianNoise.apply

    def spy(self, update, context):
        out = original(self, update, context)
        seen.update({k: v.clone() for k, v in out.items()})
        return out

    monkeypatch.setattr(GaussianNoise, "apply", spy)
    reply = client_update(config, model, setup.train, victim_steps(setup, 1, 0), global_state, 0, 1, {})
    assert reply.num_examples is None and reply.train_loss is None  # metrics withheld under DP
    for key, sent in reply.arrays.items():
        if torch.equal(sent, global_state[key]):
            continue  # withheld: the client sends the global value back
        defended = seen[key]  # anything else must be exactly the DP stage's output
        expected = defended if (algorithm == "fedsgd" and key in dict(model.named_parameters())) else (
            global_state[key] + defended)
        assert torch.allclose(sent, expected.to(sent.dtype), atol=1e-6), key
    noised_buffers = [k for k, _ in model.named_buffers() if k in seen]
    assert bool(noised_buffers) == (buffers == "noise")


def test_buffers_and_metrics_policies_default_to_withhold_under_dp_only():
    from fl_privacy.dp.guarantee import release_policy

    assert release_policy(_config()) == ("share", "share")
    assert release_policy(_config([LOCAL])) == ("withhold", "withhold")
    with pytest.raises(ConfigError, match="metrics"):
        _config([LOCAL], **{"privacy.metrics": "share"})
    block = privacy_block(_config([LOCAL], **{"privacy.metrics": "share", "privacy.proceed_without_guarantee": True}))
    assert block["epsilon"] is None and "un-noised" in block["guarantee"]


@needs_mnist
def test_raw_buffers_under_dp_fail_before_round_1(tiny_overrides):
    from fl_privacy.dp.guarantee import check_model
    from fl_privacy.federation.run_setup import prepare

    config = build_config({}, {**tiny_overrides, "model.name": "convnet", "model.width": 2, "defenses": [LOCAL],
                               "privacy.buffers": "share"})
    with pytest.raises(ConfigError, match="buffer"):
        check_model(config, prepare(config).new_model())


# ------------------------------------------------ defect 3: the sampling that really runs


def test_fixed_size_sampling_is_not_accounted_as_poisson_amplification():
    """HEAD gave the accountant q = fraction_train = 0.1 (7.90) while the server drew 3 of 10 clients."""
    central = {"privacy.mechanism": "central", "privacy.clip": 1.0, "privacy.noise_multiplier": 1.0,
               "federation.num_clients": 10, "federation.fraction_train": 0.1, "federation.rounds": 100}
    block = privacy_block(_config(**central, **{"federation.min_train_clients": 3}))
    assert block["sampling"].startswith("fixed-size: 3 of 10")
    assert block["epsilon"] == pytest.approx(gaussian_epsilon(1.0, 100, DELTA))
    assert block["epsilon"] > 7.90 and "curious server" in block["does_not_protect_against"]
    poisson = privacy_block(_config(**central, **{"federation.sampling": "poisson"}))
    assert poisson["sampling"].startswith("poisson") and poisson["epsilon"] == pytest.approx(7.90, abs=0.01)
    with pytest.raises(ConfigError, match="min_train_clients"):
        _config(**central, **{"federation.sampling": "poisson", "federation.min_train_clients": 3})
    with pytest.raises(ConfigError, match="add-or-remove"):
        _config(**central, **{"federation.sampling": "poisson", "privacy.neighbouring": "replace_one"})


def test_poisson_sampling_is_what_the_server_does():
    from fl_privacy.federation.sampling import sample_clients

    config = _config(**{"federation.num_clients": 40, "federation.fraction_train": 0.25,
                        "federation.sampling": "poisson"})
    counts = [len(sample_clients(config, r)) for r in range(1, 201)]
    assert len(set(counts)) > 3 and np.mean(counts) == pytest.approx(10, rel=0.1)  # Binomial(40, 0.25)
    fixed = _config(**{"federation.num_clients": 10, "federation.fraction_train": 0.1,
                       "federation.min_train_clients": 3})
    assert {len(sample_clients(fixed, r)) for r in range(1, 20)} == {3}


# --------------------------------------------------- defect 4: post-processing only


def test_a_stage_reading_private_data_after_the_noise_voids_the_guarantee():
    """HEAD reported epsilon = 11.54 for [gaussian, soteria]; Soteria reads the private batch after the noise."""
    defenses = [LOCAL, {"name": "soteria", "pruning_rate": 0.6}]
    with pytest.raises(ConfigError, match="soteria .* reads private data after the noise"):
        _config(defenses)
    config = _config(defenses, **{"privacy.proceed_without_guarantee": True})
    block = privacy_block(config)
    assert block["epsilon"] is None and block["guarantee"].startswith("no guarantee: stage soteria")
    # before the noise, the same stage is fine: the noise is the last private-data access
    assert privacy_block(_config(defenses[::-1]))["epsilon"] > 0


# ------------------------------------------------------------- mechanisms, bad input


def test_bad_dp_input_fails_before_round_1():
    with pytest.raises(ConfigError, match="needs privacy.clip"):
        _config(**{"privacy.mechanism": "local", "privacy.noise_multiplier": 1.0})
    with pytest.raises(ConfigError, match="exactly one of noise_multiplier and epsilon"):
        _config(**{"privacy.mechanism": "local", "privacy.clip": 1.0})
    with pytest.raises(ConfigError, match="above 1e4"):
        _config(**{"privacy.mechanism": "local", "privacy.clip": 1.0, "privacy.epsilon": 1e-6,
                   "privacy.delta": 1e-12, "federation.rounds": 10000})
    with pytest.raises(ConfigError, match="1/num_clients"):
        _config(**{"privacy.mechanism": "central", "privacy.clip": 1.0, "privacy.noise_multiplier": 1.0,
                   "privacy.delta": 0.2})
    with pytest.raises(ConfigError, match="noise multiplier 0"):
        _config(**{"privacy.mechanism": "local", "privacy.clip": 1.0, "privacy.noise_multiplier": 0.0})
    with pytest.raises(ConfigError, match="two DP"):
        _config([LOCAL], **{"privacy.mechanism": "local", "privacy.clip": 1.0, "privacy.noise_multiplier": 1.0})


def test_epsilon_target_calibrates_each_mechanism():
    for mechanism, flat in [("local", {}), ("central", {"federation.sampling": "poisson",
                                                        "federation.fraction_train": 0.5}),
                            ("sample", {"training.local_epochs": 2})]:
        config = _config(**{"privacy.mechanism": mechanism, "privacy.clip": 1.0, "privacy.epsilon": 4.0,
                            "federation.rounds": 5, **flat})
        block = privacy_block(config)
        assert 3.99 <= block["epsilon"] <= 4.0, mechanism
    sample = privacy_block(config)
    assert sample["unit"] == "sample" and sample["compositions"] == 10 and sample["neighbouring_relation"] == "replace-one"


def test_central_noise_is_added_once_on_the_server():
    from fl_privacy.dp.release import CentralGaussian

    stage = CentralGaussian(clip=2.0, noise_multiplier=1.5)
    big = {"w": torch.full((1000,), 10.0)}
    assert float(torch.linalg.vector_norm(stage.apply(big, None)["w"])) == pytest.approx(2.0)  # client: clip only
    stage.start_round(seed=0, server_round=1, denominator=4)
    noisy = stage.server_step({"w": torch.zeros(200_000)}, num_clients=4)["w"]
    assert float(noisy.std()) == pytest.approx(1.5 * 2.0 / 4, rel=0.01)


@needs_mnist
def test_sample_mechanism_rejects_batchnorm_in_train_mode_and_clips_per_example(tiny_overrides):
    from fl_privacy.dp.guarantee import check_model
    from fl_privacy.dp.release import dp_gradient
    from fl_privacy.federation.run_setup import prepare

    flat = {**tiny_overrides, "privacy.mechanism": "sample", "privacy.clip": 0.1, "privacy.noise_multiplier": 1.0}
    with pytest.raises(ConfigError, match="BatchNorm"):
        config = build_config({}, {**flat, "model.name": "convnet", "model.width": 2})
        check_model(config, prepare(config).new_model())
    config = build_config({}, flat)
    model = prepare(config).new_model()
    check_model(config, model)
    params = {k: v.detach() for k, v in model.named_parameters()}
    x, y = prepare(config).train.batch(np.arange(4))
    grads, _ = dp_gradient(model, params, {}, x, y, 1e6, 0.0, torch.Generator())
    full = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), y), list(model.parameters()))
    assert all(torch.allclose(grads[k], g, atol=1e-5) for k, g in zip(params, full))  # huge clip, no noise
    clipped, _ = dp_gradient(model, params, {}, x[:1], y[:1], 0.1, 0.0, torch.Generator())
    norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in clipped.values()]))
    assert float(norm) <= 0.1 + 1e-6


@needs_mnist
@pytest.mark.parametrize("mechanism, extra", [
    ("local", {}),
    ("central", {"federation.sampling": "poisson", "federation.fraction_train": 0.7}),
    ("sample", {"training.algorithm": "fedsgd"}),
])
def test_each_mechanism_runs_and_reports_its_block(tmp_path, tiny_overrides, mechanism, extra):
    import json

    from clients.client_app import app as client_app
    from fl_privacy.launch.inprocess import InProcessGrid
    from strategies.server_app import run_federation

    config = build_config({}, {**tiny_overrides, "privacy.mechanism": mechanism, "privacy.clip": 1.0,
                               "privacy.noise_multiplier": 1.0, **extra})
    run = run_federation(InProcessGrid(client_app, 3), config, out=str(tmp_path / mechanism))
    block = json.loads((run.root / "final.json").read_text())["privacy"]
    for key in ("mechanism", "unit", "neighbouring_relation", "sampling", "noise_multiplier", "clip", "composed",
                "epsilon", "delta", "protects_against"):
        assert block[key] is not None, key
    assert block["mechanism"] == mechanism and math.isfinite(block["epsilon"])
    summary = (run.root / "summary.md").read_text()
    assert f"({mechanism} mechanism)" in summary and "protects against" in summary
    records = run.read_jsonl("rounds.jsonl")
    assert all(r.get("train_loss") is None for r in records)  # withheld by the clients
    if mechanism == "central":
        assert "does NOT protect against: the curious server" in summary


def test_central_dp_releases_noise_when_poisson_samples_nobody():
    from fl_privacy.federation.server_round import RoundLedger
    from fl_privacy.federation.server_update import ServerUpdate

    config = _config(**{"privacy.mechanism": "central", "privacy.clip": 1.0, "privacy.noise_multiplier": 1.0,
                        "federation.num_clients": 10, "federation.fraction_train": 0.3,
                        "federation.sampling": "poisson"})
    released = ServerUpdate(config, ["w"]).noise_only({"w": torch.zeros(50_000)}, 1)["w"]
    assert float(released.std()) == pytest.approx(1.0 * 1.0 / 3, rel=0.02)  # sigma clip / (q N)
    ledger = RoundLedger(config, None, ["w"])
    ledger.begin(1, {"w": torch.zeros(3)}, [])
    assert ledger.finish(1) is None and ledger.round_info[1]["clients"] == 0
