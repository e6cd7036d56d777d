"""Experiment files and the sweep runner: validation, grid order, results.csv, resume, summary, figures."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from fl_privacy.audit import oneshot
from fl_privacy.config import ConfigError
from fl_privacy.experiments import is_experiment_file, load_experiment
from fl_privacy.experiments import units as units_module
from fl_privacy.experiments.spec.names import ATTACK_METRICS, FEDERATION_METRICS
from fl_privacy.launch.runs import run_experiment
from tests.conftest import needs_mnist

REPO = Path(__file__).resolve().parents[1]


ATTACK_BASE = {
    "data": {"dataset": "mnist", "normalize": False},
    "model": {"name": "lenet"},
    "training": {"algorithm": "fedsgd", "batch_size": 1},
    "attack": {"name": "dlg", "gia": {"iterations": 3}},
    "resources": {"device": "cpu"},
}

FEDERATION_BASE = {
    "data": {"dataset": "mnist", "partition": "iid", "samples_per_client": 16},
    "model": {"name": "small_cnn", "width": 4},
    "federation": {"num_clients": 2, "rounds": 2},
    "training": {"algorithm": "fedsgd", "batch_size": 4},
    "evaluation": {"test_samples": 50},
    "resources": {"device": "cpu"},
}


def attack_experiment(**changes) -> dict:
    experiment = {
        "name": "tiny",
        "question": "Does iDLG beat DLG on LeNet?",
        "mode": "attack",
        "victims": {"split": "test", "indices": [0, 1, 2, 3], "group": 1, "count": 2},
        "sweep": {"attack.name": ["dlg", "idlg"]},
        "seeds": [0],
        "table": {"rows": "attack.name", "metrics": ["ssim_mean", "psnr_mean"]},
        "figure": {"x": "attack.name", "y": "ssim_mean"},
        "profiles": {"quick": {}, "full": {"set": {"attack.gia.iterations": 4}}},
    }
    experiment.update(changes)
    return experiment


def write(tmp_path: Path, experiment: dict, base: dict | None = None, name: str | None = None) -> Path:
    """A new experiment file (a fresh name each call unless ``name`` is given)."""
    path = tmp_path / (name or f"exp{len(list(tmp_path.glob('exp*.yaml')))}.yaml")
    path.write_text(yaml.safe_dump({"experiment": experiment, "base": base or ATTACK_BASE}, sort_keys=False))
    return path


def read_rows(root: Path) -> tuple[list[str], list[dict[str, str]]]:
    with (root / "results.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def counting(monkeypatch, fail_after: int | None = None) -> list[int]:
    """Count calls of attack_once made by the runner (optionally crash after ``fail_after`` calls)."""
    calls: list[int] = []
    real = oneshot.attack_once

    def wrapper(*args, **kwargs):
        if fail_after is not None and len(calls) >= fail_after:
            raise RuntimeError("simulated crash")
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(units_module, "attack_once", wrapper)
    return calls


# ----------------------------------------------------------------------------- files and validation


def test_is_experiment_file(tmp_path):
    assert is_experiment_file(write(tmp_path, attack_experiment()))
    assert is_experiment_file(REPO / "experiments" / "example_quick.yaml")
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(ATTACK_BASE))
    assert not is_experiment_file(plain)
    assert not is_experiment_file(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("experiment: [unclosed")
    assert not is_experiment_file(broken) and not is_experiment_file(None)


def test_unknown_keys_are_named_with_what_is_allowed(tmp_path):
    experiment = attack_experiment()
    experiment["sweeep"] = experiment.pop("sweep")
    with pytest.raises(ConfigError, match=r"unknown key 'experiment.sweeep'; did you mean 'experiment.sweep'\? "
                                          r"\(allowed in experiment: name, question"):
        load_experiment(write(tmp_path, experiment), check_data=False)
    with pytest.raises(ConfigError, match=r"unknown key 'experiment.victims.cont'; did you mean "
                                          r"'experiment.victims.count'"):
        load_experiment(write(tmp_path, attack_experiment(victims={"indices": [0], "cont": 1})), check_data=False)
    path = tmp_path / "top.yaml"
    path.write_text(yaml.safe_dump({"experiment": attack_experiment(), **ATTACK_BASE}, sort_keys=False))
    with pytest.raises(ConfigError, match="unknown top-level key 'data'.*go under base"):
        load_experiment(path, check_data=False)


def test_bad_sweep_key_or_value_names_the_point(tmp_path):
    bad_key = attack_experiment(sweep={"attack.name": ["dlg"], "training.lrr": [0.1, 0.2]})
    with pytest.raises(ConfigError, match=r"sweep point 1 of 2 \(attack.name=dlg, training.lrr=0.1\), seed 0: "
                                          r"unknown config key 'training.lrr'; did you mean 'training.lr'"):
        load_experiment(write(tmp_path, bad_key), check_data=False)
    bad_value = attack_experiment(sweep={"training.algorithm": ["fedsgd", "sgd"]},
                                  table={"rows": "training.algorithm", "metrics": ["ssim_mean"]}, figure=None)
    with pytest.raises(ConfigError, match=r"(?s)sweep point 2 of 2 \(training.algorithm=sgd\).*training.algorithm"):
        load_experiment(write(tmp_path, bad_value), check_data=False)
    not_a_list = attack_experiment(sweep={"training.lr": 0.1})
    with pytest.raises(ConfigError, match=r"experiment.sweep.training.lr: the values .* must be a list"):
        load_experiment(write(tmp_path, not_a_list), check_data=False)


def test_profiles_unknown_missing_quick_and_conflicts(tmp_path):
    path = write(tmp_path, attack_experiment())
    with pytest.raises(ConfigError, match=r"unknown profile 'fulll'; did you mean 'full'\? \(available: quick, full\)"):
        load_experiment(path, profile="fulll", check_data=False)
    with pytest.raises(ConfigError, match="must define 'quick'"):
        load_experiment(write(tmp_path, attack_experiment(profiles={"full": {}})), check_data=False)
    with pytest.raises(ConfigError, match="--set sets 'attack.name', which the sweep sets too"):
        load_experiment(path, ["attack.name=idlg"], check_data=False)
    with pytest.raises(ConfigError, match=r"--set: unknown config key 'training.lrr'; did you mean 'training.lr'"):
        load_experiment(path, ["training.lrr=0.1"], check_data=False)
    sweeps_unswept = attack_experiment(profiles={"quick": {"sweep": {"training.lr": [0.1]}}})
    with pytest.raises(ConfigError, match="'training.lr' is not swept in experiment.sweep"):
        load_experiment(write(tmp_path, sweeps_unswept), check_data=False)
    full = load_experiment(path, profile="full", check_data=False)
    assert full.overrides == {"attack.gia.iterations": 4}
    assert full.points[0].configs[0].attack.gia.iterations == 4
    quick = load_experiment(path, ["attack.gia.iterations=5"], check_data=False)
    assert quick.profile == "quick" and quick.profile_defaulted
    assert quick.points[1].configs[0].attack.gia.iterations == 5 and quick.points[1].configs[0].attack.name == "idlg"


def test_table_figure_keys_must_be_swept_and_metrics_known(tmp_path):
    cases = [
        ({"table": {"rows": "training.batch_size", "metrics": ["ssim_mean"]}},
         r"experiment.table: 'training.batch_size' is not a swept key \(allowed: attack.name, seed, victim\)"),
        ({"table": {"rows": "attack.name", "metrics": ["ssim"]}}, r"unknown metric 'ssim'; did you mean 'ssim_mean'"),
        ({"table": {"rows": "attack.name", "metrics": ["test_accuracy"]}}, r"unknown metric 'test_accuracy'"),
        ({"figure": {"x": "round", "y": "ssim_mean"}}, r"'round' is not a swept key.*round needs mode federation"),
        ({"figure": {"x": "attack.name", "y": "ssim_mean", "colour": "x"}}, r"unknown key 'experiment.figure.colour'"),
        ({"mode": "simulate"}, r"experiment.mode: 'simulate' is not a mode"),
        ({"victims": None}, r"experiment.victims is required in mode 'attack'"),
        ({"seeds": [0, 0]}, r"repeats a seed"),
    ]
    for changes, message in cases:
        with pytest.raises(ConfigError, match=message):
            load_experiment(write(tmp_path, attack_experiment(**changes)), check_data=False)


def test_grid_expansion_order_ids_and_units(tmp_path):
    experiment = attack_experiment(
        sweep={
            "training.lr": [0.1, 0.2],
            "attack.threat.labels": [True, False],
            "defense": {"none": {"defenses": []}, "clip": {"defenses": [{"name": "clip", "max_norm": 1.0}]}},
        },
        seeds=[0, 1],
        table={"rows": "defense", "columns": "attack.threat.labels", "metrics": ["ssim_mean"]},
        figure={"x": "training.lr", "y": "ssim_mean", "hue": "defense"},
        profiles={"quick": {"sweep": {"defense": ["clip"]}}, "full": {}},
    )
    path = write(tmp_path, experiment)
    full = load_experiment(path, profile="full", check_data=False)
    assert [tuple(p.values.values()) for p in full.points] == [
        (0.1, True, "none"), (0.1, True, "clip"), (0.1, False, "none"), (0.1, False, "clip"),
        (0.2, True, "none"), (0.2, True, "clip"), (0.2, False, "none"), (0.2, False, "clip"),
    ]
    assert full.points[1].overrides == {"training.lr": 0.1, "attack.threat.labels": True,
                                        "defenses": [{"name": "clip", "max_norm": 1.0}]}
    config = full.points[1].configs[1]
    assert config.seed == 1 and config.training.lr == 0.1 and config.defenses[0].name == "clip"
    assert len({p.point_id for p in full.points}) == 8
    # units: points x seeds x victims, in that nesting
    assert len(full.units) == 8 * 2 * 2 and len({u.row_id for u in full.units}) == 32
    assert [(u.point.index, u.seed, u.victim.index) for u in full.units[:5]] == [
        (0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1), (1, 0, 0)]
    assert full.units[1].victim.indices == (1,)
    # the swept key the table does not name becomes an extra row key (never averaged over)
    assert full.tables[0].rows == ("defense", "training.lr")
    assert full.figures[0].hue == ("defense", "attack.threat.labels")
    # ids are stable across loads and do not depend on the profile; the quick profile keeps one label
    again = load_experiment(path, profile="full", check_data=False)
    assert [p.point_id for p in again.points] == [p.point_id for p in full.points]
    quick = load_experiment(path, check_data=False)
    assert [p.values["defense"] for p in quick.points] == ["clip"] * 4
    assert {p.point_id for p in quick.points} < {p.point_id for p in full.points}


def test_victim_groups_follow_the_batch(tmp_path):
    experiment = attack_experiment(victims={"split": "test", "indices": list(range(8)), "group": "auto"},
                                   sweep={"training.batch_size": [1, 2, 4]},
                                   table={"rows": "training.batch_size", "metrics": ["ssim_mean"]}, figure=None)
    loaded = load_experiment(write(tmp_path, experiment), check_data=False)
    assert [len(p.victims) for p in loaded.points] == [8, 4, 2]
    assert [v.indices for v in loaded.points[2].victims] == [(0, 1, 2, 3), (4, 5, 6, 7)]
    experiment["victims"]["group"] = 2
    with pytest.raises(ConfigError, match=r"sweep point 1 of 3 \(training.batch_size=1\): one update would use "
                                          r"only 1 of each victim's victims.group=2"):
        load_experiment(write(tmp_path, experiment), check_data=False)


@needs_mnist
def test_data_checks_run_before_anything(tmp_path):
    bad = attack_experiment(victims={"split": "test", "indices": [0, 10**6], "group": 1})
    with pytest.raises(ConfigError, match=r"sweep point 1 of 2 \(attack.name=dlg\), seed 0: victims.indices "
                                          r"\[1000000\] outside the test split"):
        run_experiment(write(tmp_path, bad), out=str(tmp_path / "never"), progress=False)
    assert not (tmp_path / "never").exists()
    idlg_batch = attack_experiment(victims={"split": "test", "indices": [0, 1, 2, 3], "group": "auto"},
                                   sweep={"training.batch_size": [1, 2]},
                                   table={"rows": "training.batch_size", "metrics": ["ssim_mean"]}, figure=None)
    with pytest.raises(ConfigError, match=r"sweep point 2 of 2 \(training.batch_size=2\).*iDLG label inference handles one image"):
        load_experiment(write(tmp_path, idlg_batch, {**ATTACK_BASE, "attack": {"name": "idlg"}}))
    example = load_experiment(REPO / "experiments" / "example_quick.yaml", profile="full")
    assert len(example.points) == 6 and example.seeds == [0, 1, 2]


def test_default_output_directory_resumes_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("FL_PRIVACY_RUNS_DIR", str(tmp_path))
    loaded = load_experiment(write(tmp_path, attack_experiment()), profile="full", check_data=False)
    assert loaded.default_out() == tmp_path / "tiny-full"  # FL_PRIVACY_RUNS_DIR replaces the default runs/


# ----------------------------------------------------------------------------- running


@needs_mnist
def test_attack_mode_rows_summary_figure_and_resume(tmp_path, monkeypatch, capsys):
    path = write(tmp_path, attack_experiment())
    out = tmp_path / "out"
    assert run_experiment(path, [], str(out), None, progress=False) == out.resolve()
    assert "profile quick (the default" in capsys.readouterr().out
    header, rows = read_rows(out)
    assert header == ["row_id", "point_id", "attack.name", "seed", "victim", "victim_images",
                      *ATTACK_METRICS, "run_dir"]
    assert [(r["attack.name"], r["victim"], r["victim_images"]) for r in rows] == [
        ("dlg", "0", "0"), ("dlg", "1", "1"), ("idlg", "0", "0"), ("idlg", "1", "1")]
    assert all(r["iterations"] == "3" and r["images"] == "1" and float(r["wall_seconds"]) > 0 for r in rows)
    assert all((out / r["run_dir"] / "final.json").exists() for r in rows)
    assert all((out / r["run_dir"]).parent.name == r["point_id"] for r in rows)
    summary = (out / "summary.md").read_text()
    assert "Does iDLG beat DLG on LeNet?" in summary and "profile: `quick`" in summary
    assert "| attack.name | ssim_mean | psnr_mean |" in summary
    table_rows = [line for line in summary.splitlines() if line.startswith(("| dlg", "| idlg"))]
    assert len(table_rows) == 2 and all(line.count(" ± ") == 2 for line in table_rows)
    assert "runs: 4 of 4 (finished)" in summary and f"--out {out.resolve()}" in summary
    assert (out / "ssim_mean_vs_attack.name.png").stat().st_size > 1000
    assert "![ssim_mean_vs_attack.name](ssim_mean_vs_attack.name.png)" in summary
    resolved = yaml.safe_load((out / "experiment.yaml").read_text())
    assert resolved["profile"] == "quick" and resolved["sweep"] == {"attack.name": ["dlg", "idlg"]}

    # a second runner on the same directory is refused while the first holds it
    (out / ".lock").write_text(f"{socket.gethostname()} {os.getpid()}")
    with pytest.raises(ConfigError, match="another fl-privacy run .* is writing to"):
        run_experiment(path, [], str(out), None, progress=False)
    gone = subprocess.Popen(["true"])
    gone.wait()
    (out / ".lock").write_text(f"{socket.gethostname()} {gone.pid}")  # left by a dead process: taken over

    # resume: nothing left to do, the attack is not called again
    calls = counting(monkeypatch)
    run_experiment(path, [], str(out), None, progress=False)
    assert calls == [] and read_rows(out)[1] == rows and not (out / ".lock").exists()

    # the last row lost: exactly that one is recomputed
    lines = (out / "results.csv").read_text().splitlines(keepends=True)
    (out / "results.csv").write_text("".join(lines[:-1]))
    run_experiment(path, [], str(out), None, progress=False)
    assert len(calls) == 1
    _, again = read_rows(out)
    assert [r["row_id"] for r in again] == [r["row_id"] for r in rows]

    # another experiment in the same directory is refused; a new table is not a new experiment
    with pytest.raises(ConfigError, match=r"holds results of a different experiment \(changed: seeds"):
        run_experiment(write(tmp_path, attack_experiment(seeds=[0, 1])), [], str(out), None, progress=False)
    with pytest.raises(ConfigError, match=r"changed: profile, overrides"):
        run_experiment(path, [], str(out), "full", progress=False)
    run_experiment(path, ["resources.threads=1"], str(out), None, progress=False)  # resources: same experiment
    assert len(calls) == 1
    retabled = attack_experiment(table={"rows": "attack.name", "metrics": ["label_acc"]}, question="New wording?")
    run_experiment(write(tmp_path, retabled), [], str(out), None, progress=False)
    assert len(calls) == 1 and "| attack.name | label_acc |" in (out / "summary.md").read_text()


@needs_mnist
def test_crash_mid_run_keeps_finished_rows(tmp_path, monkeypatch):
    path = write(tmp_path, attack_experiment())
    out = tmp_path / "out"
    calls = counting(monkeypatch, fail_after=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_experiment(path, [], str(out), None, progress=False)
    _, rows = read_rows(out)
    assert len(rows) == 3 and "stopped early" in (out / "summary.md").read_text()
    (out / "results.csv").write_text((out / "results.csv").read_text() + rows[0]["row_id"][:5])  # torn last line
    calls = counting(monkeypatch)
    run_experiment(path, [], str(out), None, progress=False)
    _, rows = read_rows(out)
    assert len(calls) == 1 and len(rows) == 4 and len({r["row_id"] for r in rows}) == 4


@needs_mnist
def test_federation_mode_rows_per_round_and_per_run(tmp_path):
    gaussian = {"name": "gaussian", "clip": 1.0, "epsilon": 8, "delta": 1.0e-5, "rounds": 2, "sample_rate": 1.0}
    experiment = {
        "name": "fed",
        "question": "Accuracy per round with and without DP",
        "mode": "federation",
        "sweep": {"defense": {"none": {"defenses": []}, "dp": {"defenses": [gaussian]}}},
        "table": {"rows": "round", "columns": "defense", "metrics": ["test_accuracy"]},
        "figure": {"x": "round", "y": ["test_accuracy", "epsilon"], "hue": "defense"},
        "profiles": {"quick": {}},
    }
    out = tmp_path / "fed"
    run_experiment(write(tmp_path, experiment, FEDERATION_BASE), [], str(out), None, progress=False)
    header, rows = read_rows(out)
    assert header == ["row_id", "point_id", "defense", "seed", "round", *FEDERATION_METRICS, "run_dir"]
    assert [(r["defense"], r["round"]) for r in rows] == [("none", "0"), ("none", "1"), ("none", "2"),
                                                          ("dp", "0"), ("dp", "1"), ("dp", "2")]
    assert all(0 <= float(r["test_accuracy"]) <= 1 for r in rows)
    assert [r["epsilon"] == "" for r in rows] == [True, True, True, True, False, False]
    assert float(rows[4]["epsilon"]) < float(rows[5]["epsilon"]) <= 8.0 + 1e-6
    assert all(float(r["payload_kib"]) > 0 for r in rows if r["round"] != "0")
    summary = (out / "summary.md").read_text()
    assert "| round | defense=none | defense=dp |" in summary
    assert (out / "test_accuracy_vs_round.png").exists() and (out / "epsilon_vs_round.png").exists()

    # without `round` in the report: one row per run, final accuracy and the run's epsilon
    experiment.update(name="fed_final", table={"rows": "defense", "metrics": ["test_accuracy", "epsilon"]},
                      figure=None)
    out = tmp_path / "final"
    run_experiment(write(tmp_path, experiment, FEDERATION_BASE, "final.yaml"), ["federation.rounds=1"], str(out),
                   None, progress=False)
    header, rows = read_rows(out)
    assert "round" not in header and [r["defense"] for r in rows] == ["none", "dp"]
    assert rows[0]["epsilon"] == "" and float(rows[1]["epsilon"]) > 0
    assert (out / "points" / rows[0]["point_id"] / "seed0" / "rounds.jsonl").exists()


# ----------------------------------------------------------------------------- random victims and generators


@needs_mnist
def test_random_victim_indices_are_seeded_distinct_and_checked(tmp_path):
    experiment = attack_experiment(victims={"split": "test", "indices": {"random": 6, "seed": 3}, "group": 2},
                                   base_batch=2)
    experiment.pop("base_batch")
    base = {**ATTACK_BASE, "training": {"algorithm": "fedsgd", "batch_size": 2}}
    first = load_experiment(write(tmp_path, experiment, base), check_data=False)
    again = load_experiment(write(tmp_path, experiment, base), check_data=False)
    drawn = [i for v in first.points[0].victims for i in v.indices]
    assert len(drawn) == len(set(drawn)) == 6
    assert drawn == [i for v in again.points[0].victims for i in v.indices]
    assert drawn != list(range(drawn[0], drawn[0] + 6))  # a draw, not a block
    other = load_experiment(write(tmp_path, attack_experiment(
        victims={"split": "test", "indices": {"random": 6, "seed": 4}, "group": 2}), base), check_data=False)
    assert [i for v in other.points[0].victims for i in v.indices] != drawn
    with pytest.raises(ConfigError, match=r"asks for 1000000 random images, the test split has"):
        load_experiment(write(tmp_path, attack_experiment(
            victims={"split": "test", "indices": {"random": 10**6}, "group": 1})), check_data=False)
    with pytest.raises(ConfigError, match=r"unknown key 'experiment.victims.indices.count'"):
        load_experiment(write(tmp_path, attack_experiment(
            victims={"split": "test", "indices": {"count": 4}, "group": 1})), check_data=False)


GIAL_BASE = {**ATTACK_BASE, "attack": {"name": "ggl", "threat": {"labels": True}, "gia": {"iterations": 2}}}
TINY_GENERATOR = {"dataset": "mnist", "classes": [0, 1], "conditional": False, "epochs": 1, "max_steps": 2,
                  "max_samples": 32, "batch_size": 8, "ngf": 4, "ndf": 4, "nz": 4}


def generator_experiment(**changes) -> dict:
    settings = {
        "victims": {"split": "test", "indices": [0], "group": 1},
        "generators": {"public": TINY_GENERATOR, "other": {**TINY_GENERATOR, "classes": [5, 6]}},
        "sweep": {"prior": {"own": {"attack.generator": "generator:public"},
                            "ood": {"attack.generator": "generator:other"}}},
        "table": {"rows": "prior", "metrics": ["ssim_mean"]}, "figure": None}
    return attack_experiment(**{**settings, **changes})


def test_generator_references_are_resolved_under_the_output_and_checked(tmp_path):
    path = write(tmp_path, generator_experiment(), GIAL_BASE)
    loaded = load_experiment(path, out=tmp_path / "out", check_data=False)
    assert set(loaded.generators) == {"public", "other"}
    assert [p.configs[0].attack.generator for p in loaded.points] == [
        str(tmp_path / "out" / "generators" / "public.pt"), str(tmp_path / "out" / "generators" / "other.pt")]
    # the fingerprint does not depend on where the output lives, but on the generators' settings
    assert load_experiment(path, out=tmp_path / "elsewhere", check_data=False).fingerprint() == loaded.fingerprint()
    changed = generator_experiment(profiles={"quick": {"generators": {"public": {"epochs": 2}}}, "full": {}})
    assert load_experiment(write(tmp_path, changed, GIAL_BASE), out=tmp_path / "out",
                           check_data=False).fingerprint() != loaded.fingerprint()
    unknown = generator_experiment(sweep={"prior": {"own": {"attack.generator": "generator:publik"}}})
    with pytest.raises(ConfigError, match=r"'generator:publik' names no generator.*did you mean 'public'"):
        load_experiment(write(tmp_path, unknown, GIAL_BASE), check_data=False)
    bad_profile = generator_experiment(profiles={"quick": {"generators": {"nope": {"epochs": 1}}}, "full": {}})
    with pytest.raises(ConfigError, match=r"profiles.quick.generators: 'nope' is not defined"):
        load_experiment(write(tmp_path, bad_profile, GIAL_BASE), check_data=False)
    bad_key = generator_experiment(generators={"public": {**TINY_GENERATOR, "epoch": 1}})
    with pytest.raises(ConfigError, match=r"unknown key 'experiment.generators.public.epoch'; did you mean"):
        load_experiment(write(tmp_path, bad_key, GIAL_BASE), check_data=False)


@needs_mnist
def test_generators_are_trained_once_before_the_attacks_and_reused(tmp_path, monkeypatch):
    from fl_privacy.audit import auxiliary as generators_module

    trained: list[list[int]] = []
    real = generators_module.train_generator

    def counting_train(**kwargs):
        trained.append(kwargs["classes"])
        return real(**kwargs)

    monkeypatch.setattr(generators_module, "train_generator", counting_train)
    path = write(tmp_path, generator_experiment(), GIAL_BASE)
    out = run_experiment(path, out=tmp_path / "out", progress=False)
    assert sorted(trained) == [[0, 1], [5, 6]]
    assert (out / "generators" / "public.pt").exists() and (out / "generators" / "other.json").exists()
    _, rows = read_rows(out)
    assert [r["prior"] for r in rows] == ["own", "ood"] and all(r["ssim_mean"] for r in rows)
    summary = (out / "summary.md").read_text()
    assert "## Generators" in summary and "| public | mnist train classes [0,1] | 32 |" in summary
    run_experiment(path, out=tmp_path / "out", progress=False)  # resume: nothing retrained
    assert len(trained) == 2
    with pytest.raises(ConfigError, match=r"classes \[12\] do not occur in mnist"):
        bad = generator_experiment(generators={"public": {**TINY_GENERATOR, "classes": [12]},
                                               "other": TINY_GENERATOR})
        load_experiment(write(tmp_path, bad, GIAL_BASE), out=tmp_path / "x")


def test_table_statistics_mean_and_median(tmp_path):
    from fl_privacy.experiments.tables import cell

    assert cell("mse_mean", [1.0, 2.0, 9.0], "median") == cell("mse_mean", [2.0])
    assert "±" in cell("mse_mean", [1.0, 2.0, 9.0])
    loaded = load_experiment(write(tmp_path, attack_experiment(
        table={"rows": "attack.name", "metrics": ["mse_mean"], "stats": ["mean", "median"]})), check_data=False)
    assert loaded.tables[0].stats == ("mean", "median")
    with pytest.raises(ConfigError, match=r"stats: \['mode'\]: choose from mean, median"):
        load_experiment(write(tmp_path, attack_experiment(
            table={"rows": "attack.name", "metrics": ["mse_mean"], "stats": ["mode"]})), check_data=False)


def test_readme_names_every_key_of_the_experiment_schema():
    """The README's format table follows the schema (the source of truth)."""
    import re
    from pathlib import Path

    from fl_privacy.experiments.spec.schema import ExperimentSection, Figure, Profile, Table, Victims

    readme = Path(__file__).resolve().parents[1].joinpath("README.md").read_text()
    section = readme[readme.index("**The format.**"):readme.index("The research-question and paper-table files")]
    for model in (ExperimentSection, Victims, Table, Figure, Profile):
        missing = [key for key in model.model_fields if not re.search(rf"[`{{ ]{key}[`}},]", section)]
        assert not missing, f"README's experiment format table lacks {model.__name__} keys {missing}"
