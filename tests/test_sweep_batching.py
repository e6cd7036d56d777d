"""A sweep cell's victims attacked as one batched problem: the same rows as one at a time, resume, opt-out."""

from __future__ import annotations

from pathlib import Path

import pytest

from fl_privacy.audit import oneshot
from fl_privacy.experiments import load_experiment
from fl_privacy.experiments import units as units_module
from fl_privacy.launch.runs import run_experiment
from tests.conftest import needs_mnist
from tests.test_experiments import ATTACK_BASE, attack_experiment, read_rows, write
from tests.test_sweep_ray import local_ray  # noqa: F401  (the module's Ray instance, for the test marked ray)

TIMINGS = ("seconds", "seconds_per_iteration", "wall_seconds")
CLOSE = ("psnr_mean", "ssim_mean", "mse_mean", "objective", "ssim_uniform7_mean", "corr_mean")
"""Float results of an optimisation: equal within float tolerance whether batched or alone."""
TOLERANCE = 1e-4
"""PSNR (dB) / SSIM / MSE / objective, batched vs alone: the engine keeps victims independent (measured here: equal
to the last digit on one CPU thread; the bound allows another summation order on other hardware)."""

BASE = {**ATTACK_BASE, "model": {"name": "small_cnn", "width": 4},
        "attack": {"name": "inverting_gradients", "threat": {"labels": True}, "gia": {"iterations": 20}},
        "resources": {"device": "cpu", "threads": 1}}


def experiment(**changes) -> dict:
    """One point (or the given sweep) x seed 0 x 3 victims of one image each."""
    return attack_experiment(**{"victims": {"split": "test", "indices": [0, 1, 2], "group": 1, "count": 3},
                                "sweep": {"training.lr": [0.1]}, "figure": [],
                                "table": {"rows": "training.lr", "metrics": ["ssim_mean"]}, **changes})


def calls_of(monkeypatch) -> dict[str, list[int]]:
    """Victims per call of ``attack_once`` / ``attack_together`` made by the runner."""
    calls: dict[str, list[int]] = {"once": [], "together": []}
    once, together = oneshot.attack_once, oneshot.attack_together

    def count_once(*args, **kwargs):
        calls["once"].append(1)
        return once(*args, **kwargs)

    def count_together(config, requests, *args, **kwargs):
        calls["together"].append(len(requests))
        return together(config, requests, *args, **kwargs)

    monkeypatch.setattr(units_module, "attack_once", count_once)
    monkeypatch.setattr(units_module, "attack_together", count_together)
    return calls


def assert_same_rows(batched: list[dict[str, str]], alone: list[dict[str, str]]) -> None:
    assert [r["row_id"] for r in batched] == [r["row_id"] for r in alone]
    for b, a in zip(batched, alone):
        for key in a:
            if key in TIMINGS:
                continue
            if key in CLOSE and a[key] not in ("", "nan"):
                assert float(b[key]) == pytest.approx(float(a[key]), abs=TOLERANCE), key
            else:
                assert b[key] == a[key], key


@needs_mnist
def test_batched_cell_gives_the_rows_of_one_victim_at_a_time(tmp_path, monkeypatch):
    batched_out, alone_out = tmp_path / "batched", tmp_path / "alone"
    calls = calls_of(monkeypatch)
    run_experiment(write(tmp_path, experiment(), BASE), [], str(batched_out), None, progress=False)
    assert calls == {"once": [], "together": [3]}
    run_experiment(write(tmp_path, experiment(batch_victims=False), BASE), [], str(alone_out), None, progress=False)
    assert calls == {"once": [1, 1, 1], "together": [3]}
    _, batched = read_rows(batched_out)
    _, alone = read_rows(alone_out)
    assert len(batched) == 3
    assert_same_rows(batched, alone)
    for row in batched:  # each victim keeps its own run directory with the same files as alone
        files = sorted(p.relative_to(batched_out / row["run_dir"]) for p in (batched_out / row["run_dir"]).rglob("*"))
        assert files == sorted(p.relative_to(alone_out / row["run_dir"])
                               for p in (alone_out / row["run_dir"]).rglob("*"))
        assert (batched_out / row["run_dir"] / "final.json").exists()
    victims = (batched_out / batched[0]["run_dir"] / "victims.jsonl").read_text()
    assert '"victims_batched": 3' in victims


@needs_mnist
def test_resume_runs_only_the_missing_victims_together(tmp_path, monkeypatch):
    path = write(tmp_path, experiment(), BASE)
    out = tmp_path / "out"
    run_experiment(path, [], str(out), None, progress=False)
    _, rows = read_rows(out)
    lines = (out / "results.csv").read_text().splitlines(keepends=True)
    (out / "results.csv").write_text("".join(lines[:2]))  # header and victim 0: victims 1 and 2 lost
    calls = calls_of(monkeypatch)
    run_experiment(path, [], str(out), None, progress=False)
    assert calls == {"once": [], "together": [2]}
    _, again = read_rows(out)
    assert again[0] == rows[0]
    assert_same_rows(again, rows)
    (out / "results.csv").write_text("".join(lines[:3]))  # one victim left: attacked alone
    run_experiment(path, [], str(out), None, progress=False)
    assert calls == {"once": [1], "together": [2]}
    assert_same_rows(read_rows(out)[1], rows)


@needs_mnist
def test_an_attack_that_cannot_batch_runs_one_victim_at_a_time(tmp_path, monkeypatch):
    base = {**BASE, "attack": {"name": "dlg", "gia": {"iterations": 3}}}  # L-BFGS: no batched engine
    path = write(tmp_path, experiment(), base)
    loaded = load_experiment(path, check_data=False)
    assert loaded.batch_victims and [len(c) for c in units_module.cells(loaded, loaded.units)] == [1, 1, 1]
    calls = calls_of(monkeypatch)
    run_experiment(path, [], str(tmp_path / "out"), None, progress=False)
    assert calls == {"once": [1, 1, 1], "together": []}
    assert len(read_rows(tmp_path / "out")[1]) == 3


def test_batch_victims_is_a_boolean_setting(tmp_path):
    from fl_privacy.config import ConfigError

    assert load_experiment(write(tmp_path, experiment(), BASE), check_data=False).batch_victims
    off = load_experiment(write(tmp_path, experiment(batch_victims=False), BASE), check_data=False)
    assert not off.batch_victims and [len(c) for c in units_module.cells(off, off.units)] == [1, 1, 1]
    with pytest.raises(ConfigError, match="batch_victims"):
        load_experiment(write(tmp_path, experiment(batch_victims="yes"), BASE), check_data=False)


def test_row_seconds_are_the_cells_shared_by_its_victims(tmp_path):
    loaded = load_experiment(write(tmp_path, experiment(), BASE), check_data=False)
    unit = loaded.units[0]
    entry = {"seconds": 6.0, "seconds_per_iteration": 0.3, "victims_batched": 3, "psnr_mean": 10.0}
    row = units_module._attack_row(unit, Path(tmp_path), entry, 2.0)
    assert (row["seconds"], row["seconds_per_iteration"], row["wall_seconds"]) == (2.0, pytest.approx(0.1), 2.0)
    alone = units_module._attack_row(unit, Path(tmp_path), {**entry, "victims_batched": 1}, 2.0)
    assert (alone["seconds"], alone["seconds_per_iteration"]) == (6.0, 0.3)


@pytest.mark.ray
@needs_mnist
def test_ray_workers_take_a_whole_cell_and_give_the_serial_table(tmp_path, local_ray):  # noqa: F811
    import io

    from fl_privacy.experiments.parallel import RayOptions

    path = write(tmp_path, experiment(sweep={"training.lr": [0.1, 0.2]}), BASE)  # 2 cells of 3 victims
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    run_experiment(path, [], str(serial), None, progress=False)
    log = io.StringIO()
    run_experiment(path, [], str(parallel), None, progress=False, stream=log, parallel=RayOptions(workers=2))
    assert "on Ray: 2 run(s) at once" in log.getvalue()
    _, rows = read_rows(parallel)
    assert len(rows) == 6
    assert_same_rows(rows, read_rows(serial)[1])
    table = [line for line in (serial / "summary.md").read_text().splitlines() if line.startswith("| 0.")]
    assert table and table == [line for line in (parallel / "summary.md").read_text().splitlines()
                               if line.startswith("| 0.")]
    assert sum("point(s) left" in line for line in log.getvalue().splitlines()) == 2
