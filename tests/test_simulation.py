"""End-to-end federations in-process: records, recorded updates, defenses, virtual clients, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from clients.client_app import app as client_app
from fl_privacy.config import ConfigError, build_config
from fl_privacy.defenses import DEFENSES, Defense, register_defense
from fl_privacy.federation.aggregation import WeightedMean
from fl_privacy.federation.recording import RecordedUpdate
from fl_privacy.federation.run_setup import prepare
from fl_privacy.federation.training import local_update
from fl_privacy.launch.cli import main as cli_main
from fl_privacy.launch.inprocess import InProcessGrid
from strategies.server_app import run_federation
from tests.conftest import needs_mnist

pytestmark = needs_mnist


def _run(tmp_path, overrides, nodes=None, name="run"):
    config = build_config({}, overrides)
    grid = InProcessGrid(client_app, nodes or config.federation.num_clients)
    return config, run_federation(grid, config, out=str(tmp_path / name))


def _replay(config, recorded: RecordedUpdate, truth: dict) -> dict[str, torch.Tensor]:
    """What the victim computed, re-run from the ground truth (evaluator side)."""
    setup = prepare(config)
    model = setup.new_model()
    model.load_state_dict(recorded.global_state)
    steps = [np.asarray(s) for s in truth["steps"]]
    return local_update(model, setup.train, steps, config.training).shared


def test_run_writes_per_round_records_and_summary(tmp_path, tiny_overrides):
    _, run = _run(tmp_path, {**tiny_overrides, "attack.rounds": [1, 2]})
    rounds = run.read_jsonl("rounds.jsonl")
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in rounds)
    assert rounds[1]["clients"] == 3 and rounds[1]["recorded"] == [0]
    summary = (run.root / "summary.md").read_text()
    assert "| 2 |" in summary and "test acc" in summary
    assert (run.root / "final.json").exists() and (run.root / "config.yaml").exists()
    assert json.loads((run.root / "environment.json").read_text())["torch"] == torch.__version__


def test_recorded_fedavg_update_is_client_weights_minus_global(tmp_path, tiny_overrides):
    config, run = _run(tmp_path, {**tiny_overrides, "attack.victim_ids": [1]})
    recorded = RecordedUpdate.load(run.update_path(1, 1))
    truth = json.loads(run.ground_truth_path(1, 1).read_text())
    assert recorded.kind == "delta" and recorded.partition_id == 1
    weights = _replay(config, recorded, truth)
    for name, delta in recorded.update.items():
        torch.testing.assert_close(delta, weights[name] - recorded.global_state[name], atol=1e-6, rtol=0)


def test_recorded_fedsgd_update_is_the_gradient(tmp_path, tiny_overrides):
    config, run = _run(tmp_path, {**tiny_overrides, "training.algorithm": "fedsgd", "training.lr": 0.1})
    recorded = RecordedUpdate.load(run.update_path(1, 0))
    truth = json.loads(run.ground_truth_path(1, 0).read_text())
    assert recorded.kind == "gradient" and len(truth["steps"]) == 1 and len(truth["steps"][0]) == 16
    gradient = _replay(config, recorded, truth)
    for name, value in recorded.update.items():
        torch.testing.assert_close(value, gradient[name])


def test_recorded_update_holds_no_ground_truth(tmp_path, tiny_overrides):
    _, run = _run(tmp_path, tiny_overrides)
    stored = torch.load(run.update_path(1, 0), weights_only=True)
    assert set(stored) == {"server_round", "partition_id", "kind", "global_state", "update", "buffers",
                           "num_examples", "metadata"}
    text = json.dumps(stored["metadata"])
    assert '"steps"' not in text and '"labels"' not in text and '"indices"' not in text


@pytest.fixture
def halving_defense():
    @register_defense
    class Halve(Defense):
        name = "test_halve"

        def apply(self, update, context):
            context.state["calls"] = context.state.get("calls", torch.zeros(())) + 1
            return {k: v * self.params.get("factor", 0.5) for k, v in update.items()}

    yield Halve
    DEFENSES.pop("test_halve")


def test_server_records_the_update_after_the_client_defense(tmp_path, tiny_overrides, halving_defense):
    config, run = _run(tmp_path, {**tiny_overrides, "defenses": [{"name": "test_halve", "factor": 0.5}]})
    recorded = RecordedUpdate.load(run.update_path(1, 0))
    truth = json.loads(run.ground_truth_path(1, 0).read_text())
    weights = _replay(config, recorded, truth)
    for name, delta in recorded.update.items():
        expected = 0.5 * (weights[name] - recorded.global_state[name])
        torch.testing.assert_close(delta, expected, atol=1e-6, rtol=0)
    assert recorded.metadata["defenses"] == [{"name": "test_halve", "factor": 0.5}]


def test_more_clients_than_supernodes(tmp_path, tiny_overrides):
    overrides = {**tiny_overrides, "federation.num_clients": 5, "federation.fraction_train": 0.6}
    _, run = _run(tmp_path, overrides, nodes=2)
    rounds = run.read_jsonl("rounds.jsonl")
    assert [r["clients"] for r in rounds[1:]] == [3, 3]
    _, again = _run(tmp_path, overrides, nodes=2, name="again")
    assert [r["partitions"] for r in again.read_jsonl("rounds.jsonl")[1:]] == [r["partitions"] for r in rounds[1:]]


def test_batch_larger_than_client_data_fails_before_training(tiny_overrides):
    config = build_config({}, {**tiny_overrides, "training.batch_size": 64})
    with pytest.raises(ConfigError, match="larger than client .* data"):
        prepare(config)


def test_weighted_mean_is_the_fedavg_rule():
    mean = WeightedMean()
    mean.add({"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}, 1)
    mean.add({"w": torch.tensor([4.0, 8.0]), "n": torch.tensor(6)}, 2)
    out = mean.result()
    torch.testing.assert_close(out["w"], torch.tensor([3.0, 6.0]))
    assert out["n"].dtype == torch.int64 and int(out["n"]) == 5


def test_cli_run_and_validate(tmp_path, tiny_overrides, capsys):
    sets = [f"--set={k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in tiny_overrides.items()]
    assert cli_main(["run", *sets, "--set=federation.rounds=1", "--out", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "summary.md").exists()
    assert cli_main(["validate", *sets]) == 0
    assert "# ok: mnist" in capsys.readouterr().out
    assert cli_main(["validate", "--set=training.lrr=0.1"]) == 2
    assert "did you mean 'training.lr'" in capsys.readouterr().err


def test_defended_run_reports_payload_and_privacy(tmp_path, tiny_overrides):
    defenses = [{"name": "gaussian", "clip": 1.0, "epsilon": 5.0, "delta": 1e-5, "rounds": 2, "sample_rate": 1.0},
                {"name": "topk", "ratio": 0.1}]
    _, run = _run(tmp_path, {**tiny_overrides, "defenses": defenses})
    rounds = run.read_jsonl("rounds.jsonl")
    assert rounds[1]["compression"] == pytest.approx(5.0, rel=0.01)  # 10% of the entries as value + int32 index
    final = json.loads((run.root / "final.json").read_text())
    assert final["privacy"]["epsilon"] == pytest.approx(5.0, rel=0.05) and final["privacy"]["delta"] == 1e-5
    assert final["privacy"]["mechanism"] == "local" and "local mechanism" in (run.root / "summary.md").read_text()


def test_payload_of_a_pipeline_follows_its_last_encoding():
    from fl_privacy.defenses import build_pipeline, dense_bytes

    update = {"w": torch.randn(100, 10)}
    dense = dense_bytes(update)
    assert build_pipeline([{"name": "topk", "ratio": 0.1}]).payload_bytes(update) == dense // 5
    assert build_pipeline([{"name": "topk", "ratio": 0.1}, {"name": "clip", "max_norm": 1.0}]).payload_bytes(update) == dense // 5
    assert build_pipeline([{"name": "topk", "ratio": 0.1}, {"name": "gaussian", "std": 0.1}]).payload_bytes(update) == dense


def test_igsa_and_probe_attack_on_every_evaluated_round(tmp_path, tiny_overrides):
    """SoK sec. 5.1: IGSA and a one-image GIA on the current global model per round, no recorded victim needed."""
    config, run = _run(tmp_path, {**tiny_overrides, "evaluation.igsa": True, "evaluation.igsa_images": 2,
                                  "evaluation.igsa_probes": 1, "attack.name": "inverting_gradients",
                                  "attack.victims": 0, "attack.probe_images": 1, "attack.threat.labels": True,
                                  "attack.gia.iterations": 3, "attack.progress": False})
    rounds = run.read_jsonl("rounds.jsonl")
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert all(r["igsa"] > 0 and math.isclose(r["igsa"] * r["igsa_roughness"], 1.0) for r in rounds)
    assert all(0 <= r["probe_ssim_mean"] <= 1 and r["probe_psnr_mean"] > 0 for r in rounds)
    assert all(not r.get("victims") for r in rounds[1:])  # nobody's real update was attacked
    probes = sorted(p.name for p in (run.root / "probes").iterdir())
    assert probes == ["round000", "round001", "round002"]
    probe_rounds = [json.loads(line)["round"] for p in probes
                    for line in (run.root / "probes" / p / "victims.jsonl").read_text().splitlines()]
    assert probe_rounds == [1, 2, 3]  # the model of round r is the one clients receive in round r + 1
    assert "IGSA" in (run.root / "summary.md").read_text()
