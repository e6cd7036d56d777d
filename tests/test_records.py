"""Typed run records read back what runs wrote (same keys, same order), and the metric catalog's helpers."""

from __future__ import annotations

import math

import pytest

from fl_privacy.audit.preflight import check_image_budget
from fl_privacy.config import ConfigError, build_config
from fl_privacy.metrics.catalog import ATTACK_PREFIX, ROUND_MEANS, finite_means, numeric_values
from fl_privacy.reporting.records import AttackOutcome, RoundRecord, VictimEntry

OUTCOME = {"attack": "dlg", "images": 1, "psnr_mean": 12.5, "ssim_mean": 0.4, "mse_mean": 0.05, "lpips_mean": None,
           "label_acc": 1.0, "ssim_uniform7_mean": 0.38, "lpips": "unavailable", "psnr": [12.5], "ssim": [0.4],
           "ssim_window": "gaussian11", "labels_true": [3], "labels_used": [3], "objective": 0.1, "iterations": 30,
           "iterations_used": 30, "seconds_per_iteration": 0.01, "restarts": 1, "notes": [], "corr_mean": 0.7,
           "aggregated_clients": None, "grid": "attacks/round_001_client_0000.png", "trace": None,
           "seconds": 0.3, "victims_batched": 1}


@pytest.mark.parametrize("entry", [
    {"round": 1, "partition_id": 0, "num_examples": 1, "update_file": "updates/round_001/client_0000.pt",
     **OUTCOME, "gradient_mia_auc": 0.5},
    {"round": 2, "partition_id": 3, "split": "test", "indices": [0, 5], **OUTCOME, "warnings": ["w"]},
    {"round": 2, "partition_id": 1, "failed": True, "reason": "timeout"},
    {"round": 1, "partition_id": 0, "num_examples": 0, "update_file": "updates/round_001/client_0000.pt"},
])
def test_victim_entries_round_trip_with_their_key_order(entry):
    back = VictimEntry.from_json(entry).to_json()
    assert back == entry and list(back) == list(entry)


def test_attack_outcome_writes_the_keys_victims_carry():
    scores = {k: OUTCOME[k] for k in ("psnr_mean", "ssim_mean", "mse_mean", "lpips_mean", "label_acc",
                                      "ssim_uniform7_mean")}
    fields = {k: v for k, v in OUTCOME.items() if k not in scores}
    outcome = AttackOutcome(scores=scores, **fields)
    assert list(outcome.to_json()) == list(OUTCOME) and outcome.to_json() == OUTCOME
    entry = VictimEntry(1, 0, split="train", indices=[4]).add(outcome)
    assert entry.attacked and entry.to_json()["psnr_mean"] == 12.5


def test_one_shot_round_record_and_catalog_means():
    entry = VictimEntry(1, 0, split="train", indices=[4]).add(dict(OUTCOME))
    record = RoundRecord.of_one_victim(entry).to_json()
    assert record["attack_psnr_mean"] == 12.5 and "attack_lpips_mean" not in record
    assert RoundRecord.from_json(record).to_json() == record
    victims = [{"psnr_mean": 10.0, "label_acc": None}, {"psnr_mean": math.inf}, {"psnr_mean": 20.0, "corr_mean": 1}]
    assert finite_means(victims, ROUND_MEANS, ATTACK_PREFIX) == {"attack_psnr_mean": 15.0, "attack_corr_mean": 1.0}
    assert numeric_values({"psnr_mean": math.inf, "ssim_mean": None}, ROUND_MEANS) == {"psnr_mean": math.inf}


def test_image_budget_is_one_check():
    config = build_config({}, {"attack.max_images": 4})
    check_image_budget(config, 4, "four images")
    with pytest.raises(ConfigError, match=r"client 2's update, more than attack.max_images=4: lower it"):
        check_image_budget(config, 5, "client 2's update", "lower it")
