"""Loading a run config: THE one YAML reader, dotted overrides, unknown-key suggestions, registry checks.

Every way the input can be wrong is one ``ConfigError`` that names the key, the bad value
and the fix. ``read_yaml_mapping`` is also the reader of experiment files.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from fl_privacy.config.schema import DefenseSpec, ExperimentConfig
from fl_privacy.errors import ConfigError, did_you_mean


def _all_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel) and sub is not DefenseSpec:
            keys += _all_keys(sub, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


CONFIG_KEYS: tuple[str, ...] = tuple(_all_keys(ExperimentConfig))


def _allowed_at(prefix: str) -> list[str]:
    """Names valid right after ``prefix`` (keys and section names)."""
    return sorted({k[len(prefix):].split(".")[0] for k in CONFIG_KEYS if k.startswith(prefix)})


def _check_known(data: Mapping[str, Any], prefix: str = "") -> None:
    """Unknown keys, with a suggestion, before pydantic's generic messages."""
    allowed = _allowed_at(prefix)
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in allowed:
            raise ConfigError(f"unknown config key '{full}'{did_you_mean(key, allowed, prefix)} (allowed here: {', '.join(allowed)})")
        if isinstance(value, Mapping) and full != "defenses" and full not in CONFIG_KEYS:
            _check_known(value, full + ".")


def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if p not in ("function-after",))
        value = e.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"{loc or 'config'}: {e['msg']}{shown}")
    return "invalid config:\n  " + "\n  ".join(lines)


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"data.dataset": x}`` -> ``{"data": {"dataset": x}}``."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config key '{key}' conflicts with a value set for '{p}'")
        node[leaf] = value
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["training.lr=0.1", "attack.rounds=[1,2]"]`` -> flat dict with YAML-typed values."""
    flat: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value (e.g. training.lr=0.1)")
        key, raw = item.split("=", 1)
        try:
            flat[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or "not a YAML value"
            raise ConfigError(f"override '{item}': the value {raw!r} is not a YAML value ({problem}); quote "
                              f"strings and close brackets, e.g. {key.strip()}=[1,2]") from None
    return flat


def build_config(data: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """Validate nested ``data`` with flat dotted ``overrides`` applied on top."""
    merged = _merge(dict(data or {}), unflatten(overrides or {}))
    _check_known(merged)
    try:
        config = ExperimentConfig.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None
    _check_registries(config)
    return config


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | list[str] | None = None) -> ExperimentConfig:
    """Read a YAML experiment (optional) and apply overrides (``key=value`` strings or a flat dict)."""
    data = read_yaml_mapping(path) if path else {}
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    return build_config(data, overrides)


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The sections of a YAML config file; every way the file can be wrong is a ``ConfigError`` naming it."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config '{p}' is a directory: give a YAML file (e.g. {p / 'experiment.yaml'})")
    if not p.is_file():
        raise ConfigError(f"config file '{p}' does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file '{p}' is not UTF-8 text (byte {err.start}): save it as UTF-8") from None
    except OSError as err:
        raise ConfigError(f"config file '{p}' cannot be read: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"config file '{p}' is not valid YAML: {err}") from None
    if data is None:
        raise ConfigError(f"config file '{p}' is empty: write the sections to change (see experiments/ for "
                          "examples), or omit the file to run the defaults")
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{p}' must hold a mapping of sections, not {type(data).__name__}")
    return data


def _check_registries(config: ExperimentConfig) -> None:
    """Names that live in registries (attacks, defenses), checked before any work starts."""
    from fl_privacy.attacks import get_attack, is_attack
    from fl_privacy.defenses import build_pipeline

    if not is_attack(config.attack.name):
        try:
            get_attack(config.attack.name)
        except ValueError as err:
            raise ConfigError(f"attack.name: {err}") from None
    try:
        build_pipeline(config.defenses)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"defenses: {err}") from None
    from fl_privacy.dp.guarantee import check_privacy

    check_privacy(config)  # bad DP settings fail here, before round 1
