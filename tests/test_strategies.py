"""The recording server around Flower strategies: each one runs a federation and victims are recorded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fl_privacy.config import ConfigError, build_config
from fl_privacy.federation.recording import RecordedUpdate
from fl_privacy.federation.run_setup import prepare, victim_steps
from fl_privacy.federation.training import local_update
from fl_privacy.launch.runs import run_inprocess
from tests.conftest import needs_mnist

pytestmark = needs_mnist


def _run(tmp_path, overrides, name="run"):
    config = build_config({}, overrides)
    return config, run_inprocess(config, str(tmp_path / name))


def _final_state(run) -> dict[str, torch.Tensor]:
    from fl_privacy.federation.checkpoint import RoundCheckpoint

    return RoundCheckpoint.load(run).arrays


@pytest.mark.parametrize("strategy", ["fedavg", "fedprox", "fedadam", "fedavgm"])
def test_each_strategy_runs_a_federation_and_records_victims(tmp_path, tiny_overrides, strategy):
    _, run = _run(tmp_path, {**tiny_overrides, "federation.strategy": strategy, "attack.rounds": [1, 2]})
    rounds = run.read_jsonl("rounds.jsonl")
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert all(np.isfinite(r["test_loss"]) for r in rounds)
    assert [r["recorded"] for r in rounds[1:]] == [[0], [0]]
    assert rounds[1]["clients"] == 3 and rounds[1]["train_loss"] is not None
    recorded = RecordedUpdate.load(run.update_path(2, 0))
    assert recorded.kind == "delta" and recorded.partition_id == 0
    final = _final_state(run)
    assert all(final[k].dtype == v.dtype for k, v in recorded.global_state.items())  # integer buffers stay integers


def test_the_inner_strategy_decides_the_global_model(tmp_path, tiny_overrides):
    base = {**tiny_overrides, "federation.rounds": 1}
    states = {s: _final_state(_run(tmp_path, {**base, "federation.strategy": s}, s)[1])
              for s in ("fedavg", "fedavgm", "fedadam")}
    # FedAvgM's first step is FedAvg's (momentum starts at the first pseudo-gradient, server lr 1)
    for k, v in states["fedavg"].items():
        assert torch.allclose(states["fedavgm"][k].double(), v.double(), atol=1e-6), k
    assert any(not torch.allclose(states["fedadam"][k].double(), v.double(), atol=1e-4)
               for k, v in states["fedavg"].items() if v.is_floating_point())


def test_fedprox_clients_add_the_proximal_term(tmp_path, tiny_overrides):
    """The recorded update is what local SGD with (mu/2)||w - w_global||^2 gives, not plain SGD's."""
    overrides = {**tiny_overrides, "federation.rounds": 1, "federation.strategy": "fedprox",
                 "federation.proximal_mu": 5.0, "training.local_epochs": 2}
    config, run = _run(tmp_path, overrides)
    recorded = RecordedUpdate.load(run.update_path(1, 0))
    setup = prepare(config)
    steps = victim_steps(setup, 1, 0)

    def replay(mu: float) -> dict[str, torch.Tensor]:
        model = setup.new_model()
        model.load_state_dict(recorded.global_state)
        shared = local_update(model, setup.train, steps, config.training, proximal_mu=mu).shared
        return {k: v - recorded.global_state[k] for k, v in shared.items()}

    with_term, without = replay(5.0), replay(0.0)
    for name, delta in recorded.update.items():
        assert torch.allclose(delta, with_term[name], atol=1e-6), name
    assert any(not torch.allclose(recorded.update[k], without[k], atol=1e-4) for k in without)


def test_fedsgd_under_a_server_optimizer_records_gradients(tmp_path, tiny_overrides):
    _, run = _run(tmp_path, {**tiny_overrides, "federation.strategy": "fedadam", "training.algorithm": "fedsgd",
                             "attack.rounds": [2]})
    rounds = run.read_jsonl("rounds.jsonl")
    assert rounds[2]["recorded"] == [0] and all(np.isfinite(r["test_loss"]) for r in rounds)
    assert RecordedUpdate.load(run.update_path(2, 0)).kind == "gradient"


def test_defenses_that_need_the_server_require_fedavg(tmp_path, tiny_overrides):
    config = build_config({}, {**tiny_overrides, "federation.strategy": "fedadam", "privacy.mechanism": "central",
                               "privacy.clip": 1.0, "privacy.noise_multiplier": 0.5})
    with pytest.raises(ConfigError, match="federation.strategy=fedavg"):
        run_inprocess(config, str(tmp_path / "never"))
    assert not (tmp_path / "never").exists()


def test_fedprox_sends_its_mu_with_the_train_messages(tiny_overrides):
    from flwr.app import ArrayRecord, ConfigRecord

    from clients.client_app import app as client_app
    from fl_privacy.federation.server_round import RoundLedger
    from fl_privacy.federation.server_update import ServerUpdate
    from fl_privacy.launch.inprocess import InProcessGrid
    from strategies.inner_strategies import inner_strategy
    from strategies.recording import RecordingStrategy

    config = build_config({}, {**tiny_overrides, "federation.strategy": "fedprox", "federation.proximal_mu": 0.3})
    grid = InProcessGrid(client_app, 3)
    nodes = {node: 2 - i for i, node in enumerate(grid.get_node_ids())}
    server = ServerUpdate(config, ["w"])
    strategy = RecordingStrategy(inner_strategy(config, server), config, RoundLedger(config, None, ["w"]), server,
                                 nodes)
    messages = strategy.configure_train(1, ArrayRecord({"w": torch.zeros(2)}), ConfigRecord(), grid)
    configs = [m.content["config"] for m in messages]
    assert [c["proximal-mu"] for c in configs] == [0.3] * 3
    assert sorted(c["partition-id"] for c in configs) == [0, 1, 2] and {c["server-round"] for c in configs} == {1}


def test_a_server_optimizer_run_is_not_resumed_without_its_state(tmp_path, tiny_overrides):
    from fl_privacy.federation.checkpoint import check_resumable

    config, run = _run(tmp_path, {**tiny_overrides, "federation.rounds": 1, "federation.strategy": "fedavgm"})
    (run.root / "final.json").unlink()  # as if stopped after round 1
    with pytest.raises(ConfigError, match="server optimizer state"):
        check_resumable(run.root, config, None)
