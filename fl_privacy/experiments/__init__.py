"""Research-question experiments: one YAML per question, swept and reported by one runner.

    fl-privacy run experiments/<name>.yaml [--profile quick|full] [--set key=value ...] [--out DIR]

``is_experiment_file`` and ``load_experiment`` only need PyYAML and the config
module; ``run_experiment`` imports torch, Flower and the attack code when called.
See ``fl_privacy/experiments/spec/schema.py`` for the file format and
``fl_privacy/experiments/runner.py`` for the output directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fl_privacy.experiments.spec.load import is_experiment_file, load_experiment
from fl_privacy.experiments.spec.model import Experiment
from fl_privacy.experiments.spec.names import ATTACK_METRICS, DEFAULT_PROFILE, FEDERATION_METRICS


def run_experiment(
    path: str | os.PathLike,
    overrides: list[str] | Mapping[str, Any] | None = None,
    out: str | os.PathLike | None = None,
    profile: str | None = None,
    **kwargs: Any,
) -> Path:
    """Validate, then run (or resume) an experiment file; returns its output directory (see ``runner``)."""
    from fl_privacy.experiments.runner import run_experiment as _run

    return _run(path, overrides, out, profile, **kwargs)


__all__ = [
    "ATTACK_METRICS",
    "DEFAULT_PROFILE",
    "FEDERATION_METRICS",
    "Experiment",
    "is_experiment_file",
    "load_experiment",
    "run_experiment",
]
