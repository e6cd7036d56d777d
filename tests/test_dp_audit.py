"""The canary audit: within the claim for the mechanism that runs, flags noise switched off and raw buffers."""

from __future__ import annotations

import math

import pytest
import torch

from fl_privacy.audit.dp_canaries import audit_dp, gdp_epsilon, steinke_lower_bound
from fl_privacy.config import build_config
from tests.conftest import needs_mnist

pytestmark = needs_mnist
TINY = {"data.dataset": "mnist", "data.samples_per_client": 20, "federation.num_clients": 10,
        "federation.rounds": 4, "model.width": 2, "training.batch_size": 8}
MECHANISMS = [("local", {}), ("central", {"federation.sampling": "poisson", "federation.fraction_train": 0.5}),
              ("sample", {})]


def _audit(mechanism, extra, canaries=100, **flat):
    from fl_privacy.federation.run_setup import prepare

    config = build_config({}, {**TINY, "privacy.mechanism": mechanism, "privacy.clip": 1.0,
                               "privacy.noise_multiplier": 2.0, **extra, **flat})
    return audit_dp(config, prepare(config).new_model(), canaries=canaries if mechanism != "sample" else 1000)


def test_gdp_and_steinke_bounds_against_known_values():
    # mu-GDP at mu = 1: epsilon(delta = 1e-5) is about 4.4 (Dong et al.'s conversion); monotone in mu
    assert 4.0 < gdp_epsilon(1.0, 1e-5) < 5.0 and gdp_epsilon(2.0, 1e-5) > gdp_epsilon(1.0, 1e-5)
    assert gdp_epsilon(0.0, 1e-5) == 0.0 and math.isinf(gdp_epsilon(math.inf, 1e-5))
    # all 100 guesses right: p^100 + m delta = 0.05 -> p = 0.04^(1/100) = 0.9683 -> eps = log(p / (1 - p)) = 3.42
    assert steinke_lower_bound(100, 100, 1000, 1e-5, 0.95) == pytest.approx(3.42, abs=0.01)
    assert steinke_lower_bound(50, 100, 1000, 1e-5, 0.95) == 0.0  # chance level proves nothing


@pytest.mark.parametrize("mechanism, extra", MECHANISMS)
def test_audit_stays_within_the_claim_for_the_mechanism_that_runs(mechanism, extra):
    result = _audit(mechanism, extra)
    low = result["interval"][0] if "interval" in result else result["empirical_epsilon"]
    assert low <= result["claimed_epsilon"] and not result["violation"]
    assert result["empirical_epsilon"] > 0  # the canaries are seen: the audit is not blind


@pytest.mark.parametrize("mechanism, extra", MECHANISMS)
def test_audit_flags_noise_switched_off(monkeypatch, mechanism, extra):
    from fl_privacy.defenses import noise
    from fl_privacy.dp import release

    def silent(shape, generator, like):
        return torch.zeros(tuple(shape), dtype=like.dtype, device=like.device)

    monkeypatch.setattr(noise, "standard_normal", silent)
    monkeypatch.setattr(release, "standard_normal", silent)
    result = _audit(mechanism, extra, **({"privacy.noise_multiplier": 8.0} if mechanism == "sample" else {}))
    assert result["violation"] and result["empirical_epsilon"] > result["claimed_epsilon"]


def test_audit_flags_buffers_sent_raw_and_not_withheld_ones():
    model = {"model.name": "convnet", "model.width": 2}
    raw = _audit("local", {**model, "privacy.buffers": "share", "privacy.proceed_without_guarantee": True},
                 canaries=60)
    assert raw["violation"] and raw["part"] == "buffers"
    withheld = _audit("local", {**model, "privacy.buffers": "withhold"}, canaries=60)
    assert not withheld["violation"]


def test_audit_dp_command_writes_claimed_and_empirical_epsilon(tmp_path, capsys):
    import json

    from fl_privacy.launch.cli import main as cli_main

    sets = [f"{k}={v}" for k, v in {**TINY, "privacy.mechanism": "local", "privacy.clip": 1.0,
                                    "privacy.noise_multiplier": 2.0}.items()]
    out = tmp_path / "audit.json"
    args = ["audit-dp", *[a for s in sets for a in ("--set", s)], "--canaries", "40", "--rounds", "2", "--out", str(out)]
    assert cli_main(args) == 0
    result = json.loads(out.read_text())
    assert result["claimed_epsilon"] > 0 and result["empirical_epsilon"] >= 0 and result["confidence"] == 0.95
    assert "claimed epsilon" in capsys.readouterr().out
    assert cli_main(["audit-dp", "--set", "data.dataset=mnist", "--out", str(out)]) == 2  # no mechanism: an error
