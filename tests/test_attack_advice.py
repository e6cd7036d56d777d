"""Known-degenerate attack settings are warned about, with the fix, in the log/CLI and the run's summary."""

from __future__ import annotations

from fl_privacy.audit.advice import degenerate_attack_warnings
from fl_privacy.config import build_config
from fl_privacy.models import build_model
from tests.conftest import needs_mnist


def _config(**overrides):
    base = {"attack.name": "inverting_gradients", "training.algorithm": "fedsgd", "training.batch_size": 1,
            "attack.threat.labels": True}
    return build_config({}, {**base, **overrides})


def _convnet():
    return build_model("convnet", num_classes=10, in_channels=1, image_size=28, width=4)


def test_train_mode_batchnorm_with_one_image_is_warned_with_the_fix():
    (warning,) = degenerate_attack_warnings(_config(), _convnet())
    assert "BatchNorm" in warning and "training.model_mode=eval" in warning
    assert degenerate_attack_warnings(_config(**{"training.model_mode": "eval"}), _convnet()) == []
    assert degenerate_attack_warnings(_config(**{"training.batch_size": 4}), _convnet()) == []
    no_bn = build_model("convnet", num_classes=10, in_channels=1, image_size=28, width=4, batchnorm=False)
    assert degenerate_attack_warnings(_config(), no_bn) == []


def test_mismatched_attacker_mode_and_large_dlg_batches_are_warned():
    eval_model = {"training.model_mode": "eval"}
    (mode,) = degenerate_attack_warnings(_config(**eval_model, **{"attack.gia.model_mode": "train"}), _convnet())
    assert "attack.gia.model_mode" in mode
    (dlg,) = degenerate_attack_warnings(_config(**eval_model, **{"attack.name": "dlg", "training.batch_size": 16}),
                                        _convnet())
    assert "inverting_gradients" in dlg
    assert degenerate_attack_warnings(_config(**{"attack.name": "none"}), _convnet()) == []


@needs_mnist
def test_attack_cli_prints_the_warning_and_the_summary_keeps_it(tmp_path, capsys):
    from fl_privacy.launch.cli import main

    sets = {"data.dataset": "mnist", "model.name": "convnet", "model.width": 4, "training.algorithm": "fedsgd",
            "training.batch_size": 1, "attack.name": "inverting_gradients", "attack.threat.labels": True,
            "attack.gia.iterations": 2, "attack.progress": False, "resources.device": "cpu"}
    argv = ["attack", *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")], "--split", "test",
            "--indices", "3", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    assert "warning: training.model_mode=train with one image per batch" in capsys.readouterr().err
    assert "**warning**: training.model_mode=train" in (tmp_path / "run" / "summary.md").read_text()
