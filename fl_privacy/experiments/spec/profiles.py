"""Profile merging: the chosen profile's changes over the experiment section, then ``--set`` on top.

A profile may replace seeds, victims (merged key by key), the values of swept keys, generator
settings and run resources, and set config keys for every point; it may not set what the sweep
sets, nor the seed (``experiment.seeds`` does).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fl_privacy.config import ConfigError, _check_known, _merge, parse_overrides, unflatten
from fl_privacy.experiments.spec.errors import validate
from fl_privacy.experiments.spec.model import Axis, generator_path
from fl_privacy.experiments.spec.names import (
    DEFAULT_PROFILE,
    EARLY_STOP_KEY,
    EARLY_STOP_PROFILES,
    GENERATOR_REF,
    close,
)
from fl_privacy.experiments.spec.schema import ExperimentSection, GeneratorChange, Profile
from fl_privacy.experiments.spec.sweep import flat, overlaps


def choose(section: ExperimentSection, profile: str | None) -> tuple[str, Profile]:
    """The profile to apply (``quick`` unless named); every experiment defines ``quick``."""
    profiles = section.profiles or {}
    if DEFAULT_PROFILE not in profiles:
        raise ConfigError(f"experiment.profiles must define '{DEFAULT_PROFILE}' (CPU-sized settings that run in "
                          f"minutes); found: {', '.join(map(str, profiles)) or 'none'}")
    name = DEFAULT_PROFILE if profile is None else profile
    if name not in profiles:
        raise ConfigError(f"unknown profile '{name}'{close(name, list(map(str, profiles)))} "
                          f"(available: {', '.join(map(str, profiles))})")
    return name, profiles[name] or Profile()


def overrides(chosen: Profile, profile: str, cli_overrides: list[str] | Mapping[str, Any] | None,
              axes: list[Axis]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The profile's ``set`` and ``--set`` as flat config keys, each checked against the config and the sweep."""
    profile_set = flat(chosen.set or {})
    cli = parse_overrides(list(cli_overrides)) if isinstance(cli_overrides, list) else dict(cli_overrides or {})
    for key in cli:
        if key.split(".")[0] in ("experiment", "base"):
            raise ConfigError(f"--set {key}: --set takes config keys (e.g. training.lr=0.1) applied to every point; "
                              f"experiment settings come from the file or a profile")
    for source, values in ((f"experiment.profiles.{profile}.set", profile_set), ("--set", cli)):
        try:
            _check_known(unflatten(values))
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None
        for key in values:
            if key == "seed":
                raise ConfigError(f"{source}: 'seed' is set by experiment.seeds")
            clash = [k for a in axes for o in a.overrides for k in o if overlaps(k, key)]
            if clash:
                raise ConfigError(f"{source} sets '{key}', which the sweep sets too ('{clash[0]}'): change the swept "
                                  f"values instead (a profile may replace them under 'sweep')")
    for a in axes:
        for o in a.overrides:
            if any(overlaps(k, "seed") for k in o):
                raise ConfigError(f"experiment.sweep.{a.key}: sweep seeds with experiment.seeds, not the config key")
    return profile_set, cli


def early_stopping_default(profile: str, base: Mapping[str, Any], profile_set: Mapping[str, Any],
                           cli: Mapping[str, Any], axes: list[Axis]) -> dict[str, Any]:
    """``{EARLY_STOP_KEY: window}`` for a profile that stops early by default when nothing else sets the key.

    ``build_configs`` applies it to the points whose attack has that option (GIA-O); it is recorded with the
    experiment's overrides, so a directory of results without it is not resumed with it."""
    window = EARLY_STOP_PROFILES.get(profile)
    if window is None:
        return {}
    set_elsewhere = (EARLY_STOP_KEY in flat(dict(base)) or EARLY_STOP_KEY in profile_set or EARLY_STOP_KEY in cli
                     or any(overlaps(k, EARLY_STOP_KEY) for a in axes for o in a.overrides for k in o))
    return {} if set_elsewhere else {EARLY_STOP_KEY: window}


def apply(base: dict[str, Any], *flat_sets: dict[str, Any]) -> dict[str, Any]:
    """``base`` with each flat set of config keys merged on top, in order."""
    for values in flat_sets:
        base = _merge(base, unflatten(values))
    return base


def merge_base(runner_defaults: dict[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    """The file's ``base`` over the runner's defaults (nested sections merged key by key)."""
    return _merge(runner_defaults, base)


def generators(raw: Mapping[str, Any], chosen: Mapping[str, Any], profile: str) -> dict[str, dict[str, Any]]:
    """``experiment.generators`` with the profile's changes merged in (a profile may not add new names).

    ``raw`` and ``chosen`` are the file's mappings (already checked by the schema): values are kept as
    written, since they are passed on to the generator's training and its fingerprint."""
    specs = {str(k): dict(v or {}) for k, v in (raw.get("generators") or {}).items()}
    for name, change in (chosen.get("generators") or {}).items():
        if name not in specs:
            raise ConfigError(f"experiment.profiles.{profile}.generators: '{name}' is not defined in "
                              f"experiment.generators{close(name, list(specs))} (defined: {', '.join(specs) or 'none'})")
        specs[name] = {**specs[name], **(change or {})}
    for name, spec in specs.items():
        where = f"experiment.generators.{name}"
        if not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"{where}: a generator name may hold letters, digits, '_' and '-' only")
        validate(GeneratorChange, spec, where)
        if spec.get("dataset") is None:
            raise ConfigError(f"{where}.dataset is required (the adversary's public data, e.g. cifar10)")
    return specs


def run_resources(section: ExperimentSection, chosen: Profile) -> dict[str, float]:
    """``experiment.resources`` with the profile's on top: ``cpus`` (whole CPUs = torch threads of the run) and
    ``gpus`` (a fraction of one GPU, or whole GPUs) per run when runs are spread over Ray workers."""
    merged: dict[str, Any] = {}
    for resources in (section.resources, chosen.resources):
        if resources is not None:
            merged.update(resources.model_dump(exclude_none=True))
    return {"cpus": merged.get("cpus", 1), "gpus": float(merged.get("gpus", 0))}


def resolve_generator_refs(data: dict[str, Any], specs: dict[str, dict[str, Any]], root: Path,
                           used: set[str], where: str) -> dict[str, Any]:
    """Replace ``generator:<name>`` in ``attack.generator`` (nested or flat key) by the file under ``root``."""
    def resolve(value: Any) -> Any:
        if not (isinstance(value, str) and value.startswith(GENERATOR_REF)):
            return value
        name = value[len(GENERATOR_REF):]
        if name not in specs:
            raise ConfigError(f"{where}: attack.generator '{value}' names no generator of experiment.generators"
                              f"{close(name, list(specs))} (defined: {', '.join(specs) or 'none'})")
        used.add(name)
        return str(generator_path(root, name))

    out = dict(data)
    if "attack.generator" in out:
        out["attack.generator"] = resolve(out["attack.generator"])
    attack = out.get("attack")
    if isinstance(attack, Mapping) and "generator" in attack:
        out["attack"] = {**attack, "generator": resolve(attack["generator"])}
    return out
