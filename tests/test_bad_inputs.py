"""Every case of the bad-input battery (tests/battery) is a clear one-line error before work starts."""

from __future__ import annotations

import pytest

from tests.battery.cases import CASES, run_case
from tests.conftest import needs_mnist


@needs_mnist
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_a_clear_error(case, tmp_path, monkeypatch):
    monkeypatch.setenv("FL_PRIVACY_RUNS_DIR", str(tmp_path / "runs-default"))
    category, text = run_case(case, tmp_path / "case")
    assert category == "clear", f"{case.name}: {category}\n{text}"
    assert "Traceback" not in text


@needs_mnist
def test_code_carrying_checkpoint_is_refused_without_running_it(tmp_path, capsys):
    from fl_privacy.launch.cli import main
    from tests.battery.cases import CodeCarrier, _generator_dict, _gia_l

    argv = _gia_l(tmp_path, {**_generator_dict(), "extra": CodeCarrier()})
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert "code from a checkpoint ran" not in out + err
    assert "weights_only" not in out + err  # never advises loading it unsafely
    assert "refused" in err and not (tmp_path / "out").exists()


def test_reused_out_with_force_replaces_the_old_run(tmp_path, tiny_overrides):
    from fl_privacy.launch.cli import main

    sets = [arg for k, v in tiny_overrides.items() for arg in ("--set", f"{k}={v}")] + ["--set", "federation.rounds=1"]
    out = str(tmp_path / "run")
    assert main(["run", *sets, "--out", out]) == 0
    assert main(["run", *sets, "--out", out]) == 2
    assert main(["run", *sets, "--out", out, "--force"]) == 0
    rounds = (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()
    assert len(rounds) == 2  # rounds 0 and 1 once, nothing appended to the first run's records
