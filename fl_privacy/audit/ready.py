"""A run ready to start: data prepared (``federation.run_setup.prepare``) and every pre-flight check passed.

The checks themselves live in ``fl_privacy.audit.preflight``; this module applies them to a
prepared run, with the attack settings the run will use (``run_attacks.gia_config``).
"""

from __future__ import annotations

from fl_privacy.audit.preflight import check_attack_size, check_generator_fits
from fl_privacy.audit.run_attacks import gia_config
from fl_privacy.config import ExperimentConfig
from fl_privacy.federation.run_setup import RunSetup, images_per_update, prepare


def check_run(setup: RunSetup) -> None:
    """Every pre-flight check that a prepared run's sizes allow: attack size, label method, generator shape."""
    config = setup.config
    gia = None
    if config.attack.name != "none":
        gia = gia_config(config)  # preset, overrides and the knowledge they need
    check_attack_size(config, [images_per_update(config, len(p)) for p in setup.partitions], gia)
    check_generator_fits(config, setup.train.shape)


def prepare_checked(config: ExperimentConfig) -> RunSetup:
    """``prepare`` (data, partitions, model) and then ``check_run``: what a run does before round 1."""
    setup = prepare(config)
    check_run(setup)
    return setup
