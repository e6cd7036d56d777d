"""report.html of a run and of an experiment: content, self-contained, and (with Chromium) rendered with every image."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from clients.client_app import app as client_app
from fl_privacy.config import build_config
from fl_privacy.launch.inprocess import InProcessGrid
from fl_privacy.reporting.redact import HIDDEN, redact, redact_argv, redact_text
from strategies.server_app import run_federation
from tests.browser import chromium, load_in_browser
from tests.conftest import needs_mnist

_EXPERIMENT = """
experiment:
  name: tiny_report
  question: Does the report page show a tiny attack?
  paper: none (a test)
  mode: attack
  victims: {split: test, indices: [0, 1], group: 1, count: 2}
  sweep: {training.batch_size: [1]}
  seeds: [0]
  table: {rows: training.batch_size, metrics: [ssim_mean, psnr_mean]}
  figure: {x: training.batch_size, y: [ssim_mean]}
  profiles: {quick: {description: test}}
base:
  data: {dataset: mnist, normalize: false}
  model: {name: lenet}
  training: {algorithm: fedsgd}
  attack: {name: inverting_gradients, threat: {labels: true}, gia: {iterations: 5}, progress: false}
  resources: {device: cpu}
"""
_RESULTS = """# Results

## Tiny — `tiny_report.yaml` (Paper Table 9)

Paper: SSIM 0.99 at batch 1.

## Another — `other.yaml`

Not this one.
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A 2-round federation with a DP defense, an attacked victim per round and an MIA audit."""
    overrides = {
        "data.dataset": "mnist", "data.partition": "iid", "data.samples_per_client": 40,
        "federation.num_clients": 2, "federation.rounds": 2, "training.algorithm": "fedsgd",
        "training.batch_size": 2, "training.model_mode": "eval", "evaluation.test_samples": 100,
        "model.name": "lenet", "resources.device": "cpu",
        "defenses": [{"name": "gaussian", "clip": 1.0, "epsilon": 50.0, "delta": 1e-5, "rounds": 2, "sample_rate": 1.0}],
        "attack.name": "inverting_gradients", "attack.rounds": [1, 2], "attack.gia.iterations": 5,
        "attack.progress": False, "mia.rounds": [2], "mia.audit_size": 20, "mia.reference_models": 1,
        "mia.reference_epochs": 1, "mia.reference_pool": 40, "mia.attacks": ["loss", "lira_offline"],
    }
    config = build_config({}, overrides)
    out = tmp_path_factory.mktemp("report") / "run"
    run_federation(InProcessGrid(client_app, 2), config, out=str(out))
    return out


@pytest.fixture(scope="module")
def experiment_dir(tmp_path_factory) -> Path:
    from fl_privacy.launch.runs import run_experiment

    folder = tmp_path_factory.mktemp("experiment")
    (folder / "tiny_report.yaml").write_text(_EXPERIMENT)
    (folder / "RESULTS.md").write_text(_RESULTS)
    return run_experiment(folder / "tiny_report.yaml", out=folder / "out", progress=False, stream=open("/dev/null", "w"))


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.references: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.images.append(attrs.get("src") or "")
        self.references += [v for k, v in attrs.items() if k in ("src", "href", "srcset", "data", "action") and v]


def _parse(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


@needs_mnist
def test_run_report_shows_threat_defenses_victims_mia_and_costs(run_dir):
    html = (run_dir / "report.html").read_text()
    records = [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]
    victims = [v for r in records for v in r.get("victims", [])]
    assert len(victims) == 2
    for heading in ("Threat model", "Defenses and privacy guarantee", "Rounds", "Membership inference", "Costs"):
        assert f"<h2>{heading}" in html
    assert "attack.threat.labels" in html and "not granted" in html  # labels were inferred
    assert html.count("originals (top) and reconstructions (bottom)</figcaption>") == 2
    assert html.count("Label inference") == 2
    final = json.loads((run_dir / "final.json").read_text())
    assert final["privacy"] and f"{final['privacy']['epsilon']:.4g}" in html  # the guarantee of what ran
    assert "ROC of round 2 (log axes)" in html and "TPR @ 0.1% FPR" in html
    assert "bytes sent per client per round" in html and "seconds per attack iteration" in html
    assert "finished in" in html


@needs_mnist
def test_experiment_report_shows_tables_figures_and_the_papers_numbers(experiment_dir):
    html = (experiment_dir / "report.html").read_text()
    assert "<table>" in html and "ssim_mean" in html  # the paper-shaped table of summary.md
    assert "ssim_mean_vs_training.batch_size" in html  # its figure
    assert "Paper: SSIM 0.99 at batch 1." in html and "Not this one." not in html
    assert "points/" in html and "report.html" in html  # links to each run's own page


@needs_mnist
@pytest.mark.parametrize("which", ["run_dir", "experiment_dir"])
def test_pages_are_self_contained(which, request):
    page = request.getfixturevalue(which) / "report.html"
    parsed = _parse(page)
    assert parsed.images and all(src.startswith("data:image/") for src in parsed.images)
    remote = [ref for ref in parsed.references if re.match(r"^\s*(https?:)?//", ref, re.IGNORECASE)]
    assert not remote, remote
    assert "script" not in parsed.tags and "link" not in parsed.tags  # nothing fetched, nothing run
    assert "@import" not in page.read_text() and "url(" not in page.read_text()


@needs_mnist
@pytest.mark.skipif(chromium() is None, reason="no chromium on PATH (Debian: apt-get install -y chromium; .ci/run "
                                                 "installs it)")
@pytest.mark.parametrize("which", ["run_dir", "experiment_dir"])
def test_pages_render_in_headless_chromium(which, request, tmp_path):
    page = request.getfixturevalue(which) / "report.html"
    result = load_in_browser(page, tmp_path)
    assert result.images, "no <img> on the page"
    broken = [i for i in result.images if not i["complete"] or i["width"] <= 0]
    assert not broken, broken
    assert result.distinct_colours > 50 and result.ink_fraction > 0.02, result  # a page, not a blank screen


def test_secrets_are_redacted_from_command_lines_and_records():
    argv = ["flwr-serverapp", "--serverappio-api-address", "127.0.0.1:9091", "--token", "s3cr3t",
            "--api-key=abc123", "--run-once"]
    assert redact_argv(argv) == ["flwr-serverapp", "--serverappio-api-address", "127.0.0.1:9091", "--token", HIDDEN,
                                 f"--api-key={HIDDEN}", "--run-once"]
    assert "hunter2" not in redact_text("flwr-serverapp --token hunter2 --password=hunter2 db_password=hunter2")
    record = redact({"argv": argv, "nested": {"AWS_SECRET_ACCESS_KEY": "k", "name": "run"}, "rounds": [1, 2]})
    assert "s3cr3t" not in json.dumps(record) and "abc123" not in json.dumps(record)
    assert record["nested"] == {"AWS_SECRET_ACCESS_KEY": HIDDEN, "name": "run"} and record["rounds"] == [1, 2]


def test_environment_json_never_stores_the_serverapp_token(tmp_path, monkeypatch):
    from fl_privacy.reporting.run_dir import RunDirectory

    monkeypatch.setattr("sys.argv", ["flwr-serverapp", "--token", "0123456789abcdef", "--insecure"])
    run = RunDirectory.create(build_config({}, {}), tmp_path / "run")
    text = (run.root / "environment.json").read_text()
    assert "0123456789abcdef" not in text and HIDDEN in text


@pytest.mark.skipif(chromium() is None, reason="no chromium on PATH")
def test_browser_check_catches_a_broken_image_and_a_blank_page(tmp_path):
    page = tmp_path / "blank.html"
    page.write_text('<!DOCTYPE html><html><body><img src="data:image/png;base64,AAAA" alt="broken"></body></html>')
    result = load_in_browser(page, tmp_path)
    assert [i["width"] for i in result.images] == [0]
    assert result.ink_fraction < 0.01


def test_a_page_that_cannot_be_rendered_is_logged_not_fatal(tmp_path, caplog):
    from fl_privacy.reporting.run_dir import RunDirectory
    from fl_privacy.reporting.run_report import write_run_report

    run = RunDirectory(tmp_path / "run")
    (run.root / "rounds.jsonl").write_text("{not json\n")
    with caplog.at_level("WARNING", logger="fl_privacy"):
        assert write_run_report(run) is None
    assert "report.html" in caplog.text and not (run.root / "report.html").exists()
