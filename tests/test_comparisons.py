"""Declared comparisons: validation (extra keys, values, paired design) and the summary's statistics sections."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from scipy import stats

from fl_privacy.config import ConfigError
from fl_privacy.experiments import load_experiment
from fl_privacy.experiments.tables import write_summary
from tests.test_experiments import attack_experiment, write

EIGHT = {"split": "test", "indices": list(range(8)), "group": 1, "count": 8}
CLAIM = {"name": "idlg beats dlg", "baseline": {"attack.name": "dlg"}, "treatment": {"attack.name": "idlg"},
         "metric": "ssim_mean", "paper_claim": "higher", "paper": "Zhao et al. 2020"}


def _load(tmp_path, comparisons, **changes):
    changes.setdefault("victims", EIGHT)
    return load_experiment(write(tmp_path, attack_experiment(comparisons=comparisons, **changes)), check_data=False)


@pytest.mark.parametrize(("change", "message"), [
    ({"colour": "red"}, r"colour: Extra inputs are not permitted"),
    ({"paper_claim": "better"}, r"paper_claim: Input should be 'higher', 'lower' or 'equal'"),
    ({"metric": "ssim"}, r"unknown metric 'ssim'"),
    ({"treatment": {"attack.nam": "idlg"}}, r"must name the same swept keys"),
    ({"treatment": {"attack.name": "idlgg"}}, r"'idlgg' is not a value of the sweep"),
    ({"treatment": {"attack.name": "dlg"}}, r"the same cell"),
    ({"paper_claim": "equal"}, r"needs a margin"),
])
def test_comparison_validation_names_the_problem(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, [{**CLAIM, **change}])


def test_unpaired_comparison_is_refused(tmp_path):
    """group auto over batch sizes gives each batch size other victims: not a paired comparison."""
    claim = {**CLAIM, "baseline": {"training.batch_size": 1}, "treatment": {"training.batch_size": 2}}
    with pytest.raises(ConfigError, match="attack different victims.*paired"):
        _load(tmp_path, [claim], sweep={"training.batch_size": [1, 2]},
              victims={"split": "test", "indices": list(range(8)), "group": "auto", "count": 2},
              table={"rows": "training.batch_size", "metrics": ["ssim_mean"]}, figure=None)


def test_comparison_inactive_when_profile_drops_a_cell(tmp_path):
    profiles = {"quick": {"sweep": {"attack.name": ["dlg"]}}, "full": {}}
    experiment = _load(tmp_path, [CLAIM], profiles=profiles)
    assert not experiment.comparisons[0].active


def test_summary_has_cell_statistics_and_paired_comparisons(tmp_path):
    experiment = _load(tmp_path, [CLAIM])
    rng = np.random.default_rng(0)
    base = rng.uniform(0.1, 0.4, 8)
    treat = base + rng.uniform(0.05, 0.15, 8)
    by_name = {p.values["attack.name"]: p for p in experiment.points}
    rows = []
    for name, values in (("dlg", base), ("idlg", treat)):
        for unit in (u for u in experiment.units if u.point is by_name[name]):
            rows.append({"row_id": unit.row_id, "point_id": unit.point.point_id, "seed": "0",
                         "victim": str(unit.victim.index), "ssim_mean": repr(float(values[unit.victim.index])),
                         "psnr_mean": "12.0"})
    root = tmp_path / "out"
    root.mkdir()
    summary = write_summary(root, experiment, rows, elapsed=1.0, command="cmd", status="finished").read_text()
    assert "Cell statistics" in summary and "95% CI" in summary
    assert "Gaussian 11x11 window" in summary
    assert "## Paired comparisons" in summary and "**supported**" in summary
    with (root / "comparisons.csv").open(newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["n"] == "8" and row["verdict"] == "supported"
    assert float(row["wilcoxon_p"]) == pytest.approx(stats.wilcoxon(treat - base).pvalue)
    assert float(row["mean_difference"]) == pytest.approx((treat - base).mean())


def test_two_metrics_of_the_same_runs_are_compared_pair_by_pair(tmp_path):
    """baseline_metric: the same cell on both sides, each victim's psnr against its own ssim (scipy's Wilcoxon)."""
    claim = {"name": "psnr above ssim", "baseline": {"attack.name": "idlg"}, "treatment": {"attack.name": "idlg"},
             "metric": "psnr_mean", "baseline_metric": "ssim_mean", "paper_claim": "higher"}
    experiment = _load(tmp_path, [claim])
    rng = np.random.default_rng(1)
    ssim, psnr = rng.uniform(0.1, 0.4, 8), rng.uniform(10, 20, 8)
    idlg = next(p for p in experiment.points if p.values["attack.name"] == "idlg")
    rows = [{"row_id": u.row_id, "point_id": idlg.point_id, "seed": "0", "victim": str(u.victim.index),
             "ssim_mean": repr(float(ssim[u.victim.index])), "psnr_mean": repr(float(psnr[u.victim.index]))}
            for u in experiment.units if u.point is idlg]
    root = tmp_path / "out"
    root.mkdir()
    summary = write_summary(root, experiment, rows, elapsed=1.0, command="cmd", status="finished").read_text()
    assert "`psnr_mean vs ssim_mean`" in summary
    with (root / "comparisons.csv").open(newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["n"] == "8" and float(row["mean_difference"]) == pytest.approx((psnr - ssim).mean())
    assert float(row["wilcoxon_p"]) == pytest.approx(stats.wilcoxon(psnr - ssim).pvalue)


def test_baseline_metric_must_be_known(tmp_path):
    with pytest.raises(ConfigError, match="unknown metric 'ssim'"):
        _load(tmp_path, [{**CLAIM, "baseline_metric": "ssim"}])


def _federation(tmp_path, comparisons):
    from tests.test_experiments import FEDERATION_BASE

    experiment = attack_experiment(mode="federation", sweep={"training.lr": [0.1]}, seeds=list(range(8)),
                                   table={"rows": ["training.lr", "round"], "metrics": ["test_accuracy"]},
                                   figure=None, comparisons=comparisons)
    del experiment["victims"]
    return load_experiment(write(tmp_path, experiment, FEDERATION_BASE), check_data=False)


def test_a_later_round_is_compared_with_an_earlier_one_paired_on_the_seed(tmp_path):
    claim = {"name": "accuracy grows", "baseline": {"round": 0}, "treatment": {"round": 2},
             "metric": "test_accuracy", "paper_claim": "higher"}
    experiment = _federation(tmp_path, [claim])
    rng = np.random.default_rng(2)
    first = rng.uniform(0.1, 0.2, 8)
    last = first + rng.uniform(0.1, 0.3, 8)
    rows = [{"row_id": u.row_id, "point_id": u.point.point_id, "seed": str(u.seed), "round": str(r),
             "test_accuracy": repr(float(value))}
            for u in experiment.units for r, value in ((0, first[u.seed]), (1, 0.5), (2, last[u.seed]))]
    root = tmp_path / "out"
    root.mkdir()
    write_summary(root, experiment, rows, elapsed=1.0, command="cmd", status="finished")
    with (root / "comparisons.csv").open(newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["n"] == "8" and row["verdict"] == "supported" and row["at"] == "training.lr=0.1"
    assert float(row["wilcoxon_p"]) == pytest.approx(stats.wilcoxon(last - first).pvalue)


def test_a_round_the_profile_does_not_reach_gives_no_row(tmp_path):
    """ablation_igsa declares round-30 claims; its 4-round standard profile must still write the round-4 row."""
    claims = [{"name": name, "baseline": {"round": 0}, "treatment": {"round": r}, "metric": "test_accuracy",
               "paper_claim": "higher"} for name, r in (("after 2 rounds", 2), ("after 30 rounds", 30))]
    experiment = _federation(tmp_path, claims)
    rows = [{"row_id": u.row_id, "point_id": u.point.point_id, "seed": str(u.seed), "round": str(r),
             "test_accuracy": repr(0.1 + 0.1 * r + 0.01 * u.seed * r)} for u in experiment.units for r in range(3)]
    root = tmp_path / "out"
    root.mkdir()
    write_summary(root, experiment, rows, elapsed=1.0, command="cmd", status="finished")
    with (root / "comparisons.csv").open(newline="") as handle:
        written = list(csv.DictReader(handle))
    assert [row["comparison"] for row in written] == ["after 2 rounds"]
    assert written[0]["n"] == "8" and written[0]["verdict"] == "supported"


def test_round_comparisons_need_rows_per_round(tmp_path):
    claim = {"name": "x", "baseline": {"round": 0}, "treatment": {"round": "last"}, "metric": "test_accuracy",
             "paper_claim": "higher"}
    with pytest.raises(ConfigError, match="round: a round number"):
        _federation(tmp_path, [claim])


def test_cells_with_other_victims_are_compared_unpaired_when_declared(tmp_path):
    """paired: false lets batch sizes (victims.group auto: other images per cell) be compared, as independent
    samples; without it the loader refuses (test_unpaired_comparison_is_refused)."""
    claim = {**CLAIM, "baseline": {"training.batch_size": 1}, "treatment": {"training.batch_size": 2},
             "metric": "ssim_mean", "paper_claim": "lower", "paired": False}
    experiment = _load(tmp_path, [claim], sweep={"training.batch_size": [1, 2]},
                       victims={"split": "test", "indices": list(range(8)), "group": "auto", "count": 4},
                       table={"rows": "training.batch_size", "metrics": ["ssim_mean"]}, figure=None)
    rng = np.random.default_rng(3)
    values = {1: rng.uniform(0.4, 0.6, 4), 2: rng.uniform(0.1, 0.2, 4)}
    rows = [{"row_id": u.row_id, "point_id": u.point.point_id, "seed": "0", "victim": str(i),
             "ssim_mean": repr(float(values[u.point.values["training.batch_size"]][i])), "psnr_mean": "12.0"}
            for p in experiment.points for i, u in enumerate(x for x in experiment.units if x.point is p)]
    root = tmp_path / "out"
    root.mkdir()
    summary = write_summary(root, experiment, rows, elapsed=1.0, command="cmd", status="finished").read_text()
    assert "(Mann-Whitney, unpaired)" in summary and "| 4 vs 4 |" in summary
    with (root / "comparisons.csv").open(newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["test"] == "mann-whitney" and row["verdict"] == "supported"
    assert float(row["mann_whitney_p"]) == pytest.approx(stats.mannwhitneyu(values[2], values[1]).pvalue)
