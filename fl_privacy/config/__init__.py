"""One typed, validated experiment config: schema (``schema``, ``attack_schema``), loading (``loading``,
the one YAML reader) and Flower run-config values (``runconfig``; ``python -m fl_privacy.config``)."""

from fl_privacy.config.attack_schema import MIA_ATTACKS, AttackConfig, GIAOptions, ThreatConfig
from fl_privacy.config.loading import (
    CONFIG_KEYS,
    _check_known,
    _merge,
    build_config,
    load_config,
    parse_overrides,
    read_yaml_mapping,
    unflatten,
)
from fl_privacy.config.runconfig import (
    default_flat,
    default_flat_of,
    from_run_config,
    run_config_toml,
    shadowed_defaults,
)
from fl_privacy.config.schema import (
    DataConfig,
    DefenseSpec,
    EvaluationConfig,
    ExperimentConfig,
    FederationConfig,
    MIASection,
    ModelConfig,
    PrivacySection,
    ResourcesConfig,
    TrainingConfig,
)
from fl_privacy.errors import ConfigError

__all__ = [
    "CONFIG_KEYS", "MIA_ATTACKS", "AttackConfig", "ConfigError", "DataConfig", "DefenseSpec", "EvaluationConfig",
    "ExperimentConfig", "FederationConfig", "GIAOptions", "MIASection", "ModelConfig", "PrivacySection",
    "ResourcesConfig", "ThreatConfig", "TrainingConfig", "_check_known", "_merge", "build_config", "default_flat",
    "default_flat_of", "from_run_config", "load_config", "parse_overrides", "read_yaml_mapping", "run_config_toml",
    "shadowed_defaults", "unflatten",
]
