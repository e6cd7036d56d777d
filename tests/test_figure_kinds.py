"""Figures in the papers' forms: curves, bars (SoK Fig. 13) and a metric-vs-metric scatter (Fig. 15), with the
tables' 95% bootstrap CIs as error bars; the experiment file checks each kind's x before any run."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from fl_privacy.config import ConfigError
from fl_privacy.experiments import load_experiment
from fl_privacy.experiments.figures import estimate, plot_figure
from fl_privacy.experiments.grouping import Key, Record
from fl_privacy.experiments.spec.model import FigureSpec
from fl_privacy.experiments.stats import bootstrap_ci
from fl_privacy.launch.cli import main
from fl_privacy.launch.runs import run_experiment
from tests.conftest import needs_mnist
from tests.test_experiments import FEDERATION_BASE, attack_experiment, counting, write


VALUES = [0.31, 0.42, 0.38, 0.55, 0.29, 0.47, 0.36, 0.40]


@pytest.mark.unit
def test_ci95_error_bars_are_the_tables_bootstrap_interval():
    low, high = bootstrap_ci(np.asarray(VALUES))
    e = estimate("ssim_mean", VALUES, "ci95")
    assert e.n == 8 and e.mean == pytest.approx(np.mean(VALUES))
    assert e.mean - e.low == pytest.approx(low) and e.mean + e.high == pytest.approx(high)
    assert estimate("ssim_mean", VALUES[:2], "ci95").low == 0.0  # below 3 values: no interval is drawn


@pytest.mark.unit
def test_std_error_bars_stay_inside_the_unit_interval():
    e = estimate("ssim_mean", [0.0, 0.02, 0.01], "std")
    assert e.mean - e.low >= 0.0 and e.high == pytest.approx(np.std([0.0, 0.02, 0.01], ddof=1))


def _records() -> list[Record]:
    recs = []
    for order, defense in enumerate(["none", "clip", "quantize"]):
        for seed in range(4):
            recs.append(Record({"defense": Key(order, defense, defense), "seed": Key(seed, str(seed), seed)},
                               {"attack_ssim_mean": 0.6 - 0.2 * order + 0.01 * seed,
                                "test_accuracy": 0.5 - 0.05 * order + 0.002 * seed}))
    return recs


@pytest.mark.unit
@pytest.mark.parametrize("kind,x", [("line", "defense"), ("bar", "defense"), ("scatter", "test_accuracy")])
def test_every_kind_draws_one_png_per_metric(tmp_path, kind, x):
    figure = FigureSpec(x, ("attack_ssim_mean",), ("defense",) if kind == "scatter" else (), kind=kind)
    paths = plot_figure(SimpleNamespace(name="rq6"), figure, _records(), tmp_path)
    assert [p.name for p in paths] == [
        "attack_ssim_mean_vs_defense.png" if kind == "line" else f"attack_ssim_mean_{kind}_{x}.png"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[0].stat().st_size > 5000


@pytest.mark.unit
def test_scatter_takes_a_metric_as_x_and_every_swept_key_as_a_point(tmp_path):
    figure = {"kind": "scatter", "x": "test_accuracy", "y": "attack_ssim_mean"}
    exp = attack_experiment(mode="federation", sweep={"training.lr": [0.1, 0.01]}, table={"rows": "training.lr",
                            "metrics": ["test_accuracy"]}, figure=figure)
    del exp["victims"]
    loaded = load_experiment(write(tmp_path, exp, FEDERATION_BASE), check_data=False)
    assert loaded.figures[0].kind == "scatter" and loaded.figures[0].hue == ("training.lr",)
    assert loaded.figures[0].error == "ci95"


@pytest.mark.unit
def test_a_scatter_whose_x_is_not_a_metric_is_refused_with_the_known_metrics(tmp_path):
    exp = attack_experiment(figure={"kind": "scatter", "x": "attack.name", "y": "ssim_mean"})
    with pytest.raises(ConfigError, match=r"kind scatter.*unknown metric 'attack.name'"):
        load_experiment(write(tmp_path, exp), check_data=False)


@pytest.mark.unit
def test_an_unknown_kind_is_refused(tmp_path):
    exp = attack_experiment(figure={"kind": "pie", "x": "attack.name", "y": "ssim_mean"})
    with pytest.raises(ConfigError, match="line.*bar.*scatter"):
        load_experiment(write(tmp_path, exp), check_data=False)


@pytest.mark.integration
@needs_mnist
def test_report_redraws_a_finished_folder_with_the_files_new_figures_without_running(tmp_path, monkeypatch):
    path = write(tmp_path, attack_experiment(), name="exp.yaml")
    out = tmp_path / "out"
    run_experiment(path, [], str(out), None, progress=False)
    before = (out / "results.csv").read_bytes()
    exp = attack_experiment(figure={"kind": "bar", "x": "attack.name", "y": "ssim_mean"})
    write(tmp_path, exp, name="exp.yaml")  # the same inputs, another figure
    calls = counting(monkeypatch)
    assert main(["report", str(out)]) == 0
    assert calls == [] and (out / "results.csv").read_bytes() == before
    summary = (out / "summary.md").read_text()
    assert "![ssim_mean_bar_attack.name](ssim_mean_bar_attack.name.png)" in summary
    assert "runs: 4 of 4 (finished; redrawn by fl-privacy report)" in summary
    assert (out / "ssim_mean_bar_attack.name.png").exists() and (out / "report.html").exists()


@pytest.mark.unit
def test_report_names_what_a_folder_needs(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "is not an experiment folder" in capsys.readouterr().err
