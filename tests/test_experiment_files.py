"""The research-question experiment files in ``experiments/``: header, validation of every profile, smoke runs.

Every ``experiments/*.yaml``:

- starts with a comment header naming the question, the paper, what differs offline and the command;
- loads and validates (config, data, victims, attack knowledge: ``load_experiment`` with its preflight) for
  each profile it defines; a profile whose datasets are not in ``$FL_PRIVACY_DATA_DIR`` is skipped;
- has a ``smoke`` profile (the example template excepted) that runs end to end in seconds and leaves
  ``results.csv`` with one row per run and ``summary.md``.

The smoke profiles are what keeps the files honest when the config or the runner changes; they are not
results. Keep each one to a few seconds (one or two points, one victim, a few iterations, tiny models).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import yaml

from fl_privacy.data.skimage_data import DATASETS as SKIMAGE_DATASETS
from fl_privacy.experiments import load_experiment
from fl_privacy.launch.runs import run_experiment
from tests.conftest import require_data

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((REPO / "experiments").glob("*.yaml"))
HEADER_FIELDS = ("Question", "Paper", "Offline", "Command")
NO_SMOKE = {"example_quick.yaml"}
"""Files allowed without a ``smoke`` profile (the annotated template of the format)."""

DATA_FILES = {"cifar10": "cifar10-jpeg.tar.gz", "mnist": "mnist-subset.npz"}
"""Offline copies in $FL_PRIVACY_DATA_DIR (tests/conftest.py's needs_cifar / needs_mnist)."""
BUNDLED_DATASETS = set(SKIMAGE_DATASETS)
"""Datasets shipped inside scikit-image: always available."""


def _profiles(path: Path) -> list[str]:
    data = yaml.safe_load(path.read_text()) or {}
    return list(((data.get("experiment") or {}).get("profiles") or {}).keys())


def _header(path: Path) -> list[str]:
    """The comment block before the first YAML line."""
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            lines.append(line)
        else:
            break
    return lines


def _skip_without_data(path: Path, profile: str) -> None:
    """Skip when a dataset of this profile's points is not available offline (no download in the tests)."""
    experiment = load_experiment(path, [], profile, check_data=False)
    datasets = {c.data.dataset for p in experiment.points for c in p.configs.values()}
    for dataset in sorted(datasets):
        if dataset in BUNDLED_DATASETS:
            continue
        name = DATA_FILES.get(dataset)
        if name is None:
            pytest.skip(f"{path.name} [{profile}]: dataset {dataset} has no offline copy the tests know of")
        require_data(name, why=f"{path.name} [{profile}]")


def _file_profiles() -> list:
    return [pytest.param(path, profile, id=f"{path.stem}-{profile}")
            for path in EXPERIMENTS for profile in _profiles(path)]


def _smoke_files() -> list:
    return [pytest.param(path, id=path.stem) for path in EXPERIMENTS if "smoke" in _profiles(path)]


def test_experiment_files_exist():
    assert EXPERIMENTS, "no experiments/*.yaml found"
    names = {p.name for p in EXPERIMENTS}
    for expected in ("rq1_local_updates.yaml", "rq1_minibatch_schedule.yaml", "rq2_dimensions.yaml",
                     "rq5_architecture.yaml", "rq6_post_processing.yaml", "trustworthiness_compression.yaml",
                     "trustworthiness_mia.yaml", "quantization_dlg.yaml", "quantization_accuracy.yaml", "graddefense.yaml",
                     "rq3_content_ood.yaml",
                     "rq4_training_stage.yaml"):
        assert expected in names, f"experiments/{expected} is missing"


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in EXPERIMENTS])
def test_header_names_question_paper_offline_and_command(path):
    header = _header(path)
    text = "\n".join(header)
    assert header and header[0].startswith("# "), f"{path.name}: start with a '# <title>' comment line"
    for field in HEADER_FIELDS:
        assert re.search(rf"^# {field}\s*:", text, re.MULTILINE), f"{path.name}: header lacks a '# {field} :' line"
    assert f"experiments/{path.name}" in text, f"{path.name}: the Command lines should name the file itself"
    profiles = _profiles(path)
    assert "quick" in profiles and "full" in profiles, f"{path.name}: define profiles quick and full"
    if path.name not in NO_SMOKE:
        assert "smoke" in profiles, f"{path.name}: add a 'smoke' profile (seconds) for the test suite"


@pytest.mark.parametrize(("path", "profile"), _file_profiles())
def test_every_profile_validates(path, profile):
    _skip_without_data(path, profile)
    experiment = load_experiment(path, [], profile)  # with the preflight: data, models, victims, knowledge
    assert experiment.profile == profile
    assert experiment.units, f"{path.name} [{profile}]: nothing to run"
    assert experiment.tables and all(t.metrics for t in experiment.tables)


@pytest.mark.parametrize("path", _smoke_files())
def test_smoke_profile_runs_end_to_end(path, tmp_path):
    _skip_without_data(path, "smoke")
    experiment = load_experiment(path, [], "smoke")
    assert len(experiment.units) <= 4, f"{path.name}: keep the smoke profile to a few runs"
    out = run_experiment(path, [], out=tmp_path / path.stem, profile="smoke", progress=False)
    with (out / "results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows, f"{path.name}: smoke run wrote no rows"
    assert {r["row_id"] for r in rows} == {u.row_id for u in experiment.units}
    metric = "ssim_mean" if experiment.mode == "attack" else "test_accuracy"
    assert all(r[metric] != "" for r in rows), f"{path.name}: empty {metric} in results.csv"
    if experiment.mode == "federation" and any(c.attack.name != "none" for p in experiment.points
                                               for c in p.configs.values()):
        assert all(r["attack_ssim_mean"] != "" or r["probe_ssim_mean"] != "" for r in rows), \
            f"{path.name}: the attack left no score"
    summary = (out / "summary.md").read_text()
    assert summary.startswith(f"# {experiment.name}"), summary[:200]
    assert f"runs: {len(experiment.units)} of {len(experiment.units)} (finished)" in summary, summary[:1500]
    assert "no results yet" not in summary, summary[:1500]
    if experiment.figures:
        assert list(out.glob("*.png")), f"{path.name}: no figure written"
