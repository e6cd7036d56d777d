"""Experiment sweeps on Ray workers: same results as a serial run, resume after a kill, failing runs recorded.

The tests marked ``ray`` share one local Ray instance of 2 CPUs (``-m ray`` selects them, ``-m 'not ray'`` skips).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import warnings
from pathlib import Path

import pytest

from fl_privacy.config import ConfigError
from fl_privacy.experiments import load_experiment
from fl_privacy.experiments.parallel import FAILED, RayOptions, RunsFailed, worker_env
from fl_privacy.launch.cli import main as cli_main
from fl_privacy.launch.runs import run_experiment
from tests.conftest import needs_mnist
from tests.test_experiments import FEDERATION_BASE, attack_experiment, read_rows, write

TIMINGS = ("seconds", "seconds_per_iteration", "wall_seconds")
"""Columns that measure time: they differ between any two runs; every other value must be equal."""


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_worker_niceness", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Ray's notice about a future default for GPU visibility
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR",
                 runtime_env={"env_vars": worker_env()})
    yield ray
    ray.shutdown()


def values(root: Path) -> tuple[list[str], list[dict[str, str]]]:
    header, rows = read_rows(root)
    return header, [{k: v for k, v in row.items() if k not in TIMINGS} for row in rows]


def table_lines(root: Path) -> list[str]:
    return [line for line in (root / "summary.md").read_text().splitlines() if line.startswith("|")]


def serial_and_parallel(tmp_path: Path, experiment_file: Path) -> tuple[Path, Path, str]:
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    run_experiment(experiment_file, [], str(serial), None, progress=False)
    log = io.StringIO()
    run_experiment(experiment_file, [], str(parallel), None, progress=False, stream=log,
                   parallel=RayOptions(workers=2))
    return serial, parallel, log.getvalue()


@pytest.mark.ray
@needs_mnist
def test_ray_sweep_gives_the_serial_results_and_resumes_after_a_kill(tmp_path, local_ray):
    path = write(tmp_path, attack_experiment())  # 2 points x 2 victims, 3 DLG/iDLG iterations each
    serial, parallel, log = serial_and_parallel(tmp_path, path)
    assert values(parallel) == values(serial) and len(values(serial)[1]) == 4
    assert table_lines(parallel) == table_lines(serial)
    progress = [line for line in log.splitlines() if "point(s) left" in line]
    assert len(progress) == 2 and all(" s; " in line and "ETA" in line for line in progress)  # a line per point
    assert not (parallel / FAILED).exists() and not (parallel / ".lock").exists()

    # killed after one run: its row is kept (not recomputed), a torn line and a half-written run directory are not
    lines = (serial / "results.csv").read_text().splitlines(keepends=True)
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copy(serial / "experiment.yaml", resumed)
    (resumed / "results.csv").write_text("".join(lines[:2]) + lines[2][:30])
    _, kept = read_rows(resumed)
    unfinished = resumed / read_rows(serial)[1][1]["run_dir"]
    unfinished.mkdir(parents=True)
    (unfinished / "left-over.txt").write_text("from the killed invocation")
    log = io.StringIO()
    run_experiment(path, [], str(resumed), None, progress=False, stream=log, parallel=RayOptions(workers=2))
    assert "1 already in results.csv, 3 to run" in log.getvalue()
    assert values(resumed) == values(serial)
    assert read_rows(resumed)[1][0] == kept[0]  # the finished row, timings included, untouched
    assert not (unfinished / "left-over.txt").exists() and (unfinished / "final.json").exists()


@pytest.mark.ray
@needs_mnist
def test_a_failing_run_is_recorded_the_others_finish_and_a_rerun_retries_it(tmp_path, local_ray):
    path = write(tmp_path, attack_experiment())
    out = tmp_path / "out"
    broken = out / "points" / load_experiment(path, out=out, check_data=False).points[1].point_id
    broken.parent.mkdir(parents=True)
    broken.write_text("a file where the point's run directories go")  # both runs of point 2 fail on the worker
    log = io.StringIO()
    with pytest.raises(RunsFailed, match=r"2 of 4 run\(s\) failed .* run the same command again"):
        run_experiment(path, [], str(out), None, progress=False, stream=log, parallel=RayOptions(workers=2))
    _, rows = read_rows(out)
    assert [(r["attack.name"], r["victim"]) for r in rows] == [("dlg", "0"), ("dlg", "1")]
    failures = [json.loads(line) for line in (out / FAILED).read_text().splitlines()]
    assert sorted(f["victim"] for f in failures) == [0, 1]
    assert all(f["point"] == "attack.name=idlg" and f["error"] and "Traceback" in f["traceback"] for f in failures)
    assert log.getvalue().count("FAILED point") == 2 and "2 FAILED" in log.getvalue()
    assert "2 run(s) failed, errors in failed.jsonl" in (out / "summary.md").read_text()

    broken.unlink()
    log = io.StringIO()
    run_experiment(path, [], str(out), None, progress=False, stream=log, parallel=RayOptions(workers=2))
    assert "2 already in results.csv, 2 to run" in log.getvalue()
    _, rows = read_rows(out)
    assert [(r["attack.name"], r["victim"]) for r in rows] == [("dlg", "0"), ("dlg", "1"), ("idlg", "0"), ("idlg", "1")]
    assert not (out / FAILED).exists() and "(finished)" in (out / "summary.md").read_text()


@pytest.mark.ray
@needs_mnist
def test_federation_points_run_their_clients_in_process_inside_a_ray_worker(tmp_path, local_ray):
    experiment = {
        "name": "fed", "mode": "federation", "sweep": {"training.lr": [0.05, 0.2]},
        "table": {"rows": "training.lr", "metrics": ["test_accuracy", "train_loss"]}, "profiles": {"quick": {}},
    }
    base = {**FEDERATION_BASE, "federation": {"num_clients": 2, "rounds": 1}}
    serial, parallel, _ = serial_and_parallel(tmp_path, write(tmp_path, experiment, base))
    assert values(parallel) == values(serial) and len(values(serial)[1]) == 2
    assert all(float(r["test_accuracy"]) >= 0 for r in read_rows(parallel)[1])


# ----------------------------------------------------------------------------- settings (no Ray started)


def test_run_resources_come_from_the_experiment_the_profile_or_the_command_line(tmp_path):
    profiles = {"quick": {}, "gpu": {"resources": {"gpus": 0.25}}}
    path = write(tmp_path, attack_experiment(resources={"cpus": 2}, profiles=profiles))
    quick = load_experiment(path, check_data=False)
    assert RayOptions(workers=2).per_run(quick) == (2, 0.0)
    assert RayOptions(workers=2, cpus=1, gpus=0.5).per_run(quick) == (1, 0.5)
    assert RayOptions().per_run(load_experiment(path, profile="gpu", check_data=False)) == (2, 0.25)
    for bad, match in (({"cpu": 1}, "unknown key 'experiment.resources.cpu'; did you mean 'experiment.resources.cpus'"),
                       ({"cpus": 0.5}, "whole number of CPUs"), ({"gpus": 1.5}, "fraction of one GPU")):
        with pytest.raises(ConfigError, match=match):
            load_experiment(write(tmp_path, attack_experiment(resources=bad)), check_data=False)


@needs_mnist
def test_bad_worker_options_are_clear_errors_before_anything_runs(tmp_path, capsys, monkeypatch):
    path = write(tmp_path, attack_experiment())
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="--workers 0"):
        run_experiment(path, [], str(out), None, progress=False, parallel=RayOptions(workers=0))
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        run_experiment(path, [], str(out), None, progress=False, parallel=RayOptions(workers=1, gpus=0.5))
    assert not (out / "results.csv").exists()
    assert cli_main(["run", str(path), "--cpus-per-run", "2"]) == 2
    assert "add --workers N" in capsys.readouterr().err
    assert cli_main(["run", "--workers", "2"]) == 2
    assert "spread the runs of an experiment file" in capsys.readouterr().err
