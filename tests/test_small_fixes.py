"""Small things a new user trips over: error bars past [0, 1], runs/runs/, raw markup in --help."""

from __future__ import annotations

from fl_privacy.config import build_config
from fl_privacy.experiments.figures import clipped_error_bars
from fl_privacy.reporting import RunDirectory


def test_error_bars_of_bounded_metrics_stay_in_the_unit_interval():
    lower, upper = clipped_error_bars("ssim_mean", (0.95, 0.05), (0.2, 0.2))
    assert [m + u for m, u in zip((0.95, 0.05), upper)] == [1.0, 0.25]
    assert [round(m - lo, 10) for m, lo in zip((0.95, 0.05), lower)] == [0.75, 0.0]
    assert clipped_error_bars("test_accuracy", (0.99,), (0.5,))[1] == [1.0 - 0.99]
    assert clipped_error_bars("psnr_mean", (20.0,), (3.0,)) == [[3.0], [3.0]]  # unbounded: symmetric


def test_runs_dir_env_replaces_the_default_out_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FL_PRIVACY_RUNS_DIR", str(tmp_path / "runs"))
    run = RunDirectory.create(build_config({}, {"name": "a"}))
    assert run.root.parent == (tmp_path / "runs").resolve()  # not runs/runs/
    nested = RunDirectory.create(build_config({}, {"name": "b", "out_dir": "study"}))
    assert nested.root.parent == (tmp_path / "runs" / "study").resolve()


def test_help_shows_no_raw_markup(capsys):
    import pytest

    from fl_privacy.launch.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    assert "``" not in capsys.readouterr().out
