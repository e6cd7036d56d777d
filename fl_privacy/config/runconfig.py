"""The config as Flower run-config values: flattening, the pyproject table, and reading it back.

``python -m fl_privacy.config`` prints the ``[tool.flwr.app.config]`` table of pyproject.toml.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fl_privacy.config.loading import load_config
from fl_privacy.config.schema import ExperimentConfig


def default_flat() -> dict[str, Any]:
    """Every key with its default, as Flower run-config values (no None, no lists)."""
    return default_flat_of(ExperimentConfig())


def from_run_config(run_config: Mapping[str, Any]) -> ExperimentConfig:
    """Flower's ``context.run_config`` -> config.

    ``config`` may name a YAML file (absolute path, or relative to the working
    directory). Run-config values equal to the pyproject defaults do not
    override the YAML file; the others do.
    """
    run_config = dict(run_config)
    path = run_config.pop("config", "") or None
    defaults = default_flat()
    overrides = {k: v for k, v in run_config.items() if k not in defaults or defaults[k] != v}
    return load_config(path, overrides)


def shadowed_defaults(run_config: Mapping[str, Any]) -> list[str]:
    """Run-config keys left at their default while the YAML file named by ``config`` sets another value.

    Flower hands the ServerApp the merged run config, so a ``--run-config`` value equal to the pyproject
    default cannot be told from no value: the YAML's value wins. One sentence per such key, to warn.
    """
    path = run_config.get("config") or None
    if not path:
        return []
    defaults = default_flat()
    yaml_flat = default_flat_of(load_config(path))
    return [f"run config {key}={defaults[key]!r} equals its default, so the YAML file's {key}={yaml_flat[key]!r} "
            f"is used (to use {defaults[key]!r}, set it in {path})"
            for key in defaults if key in run_config and run_config[key] == defaults[key]
            and key in yaml_flat and yaml_flat[key] != defaults[key]]


def default_flat_of(config: ExperimentConfig) -> dict[str, Any]:
    """``config`` flattened as Flower run-config values: no None (""), lists comma-separated, defenses as JSON."""
    flat: dict[str, Any] = {}

    def walk(obj: Any, prefix: str) -> None:
        for key, value in obj.items():
            full = f"{prefix}{key}"
            if full == "defenses":
                flat[full] = json.dumps(value) if value else "[]"
            elif isinstance(value, dict):
                walk(value, full + ".")
            elif value is None:
                flat[full] = ""
            elif isinstance(value, list):
                flat[full] = ",".join(str(v) for v in value)
            else:
                flat[full] = value

    walk(config.model_dump(), "")
    return flat


def run_config_toml() -> str:
    """The ``[tool.flwr.app.config]`` table for pyproject.toml (``python -m fl_privacy.config``)."""
    lines = ["[tool.flwr.app.config]", 'config = ""']
    for key, value in default_flat().items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = json.dumps(value)
        else:
            text = repr(value)
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"
