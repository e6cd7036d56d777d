"""Sweep expansion: ``experiment.sweep`` (with the profile's values) -> axes -> points -> points x seeds x victims.

The first axis changes slowest, the last fastest; a point's id is a digest of its values and
overrides, a unit's (row's) id a digest of its point, seed and victim, so resumed runs find their rows.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from typing import Any

from fl_privacy.config import CONFIG_KEYS, ConfigError, build_config
from fl_privacy.experiments.spec.model import Axis, Point, Unit
from fl_privacy.experiments.spec.names import RESERVED_COLUMNS, close, digest, show


def resolve_axes(sweep: Mapping[str, Any], changes: Mapping[str, Any], profile: str) -> list[Axis]:
    """The axes of ``experiment.sweep`` after the profile replaced (or, for named axes, subset) some values."""
    sweep = dict(sweep)
    for key, value in changes.items():
        if key not in sweep:
            raise ConfigError(f"experiment.profiles.{profile}.sweep: '{key}' is not swept in experiment.sweep"
                              f"{close(key, list(sweep))} (swept: {', '.join(sweep) or 'nothing'}); "
                              f"a profile may only change the values of swept keys")
        sweep[key] = _profile_values(sweep[key], value, f"experiment.profiles.{profile}.sweep.{key}")
    return [axis(key, values) for key, values in sweep.items()]


def flat(data: Mapping[str, Any]) -> dict[str, Any]:
    """Profile ``set`` may be flat (``attack.gia.iterations: 100``) or nested; both become flat dotted keys."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and str(key) not in CONFIG_KEYS:
            for sub, v in flat(value).items():
                out[f"{key}.{sub}"] = v
        else:
            out[str(key)] = value
    return out


def overlaps(a: str, b: str) -> bool:
    """True when setting config key ``a`` also sets ``b`` (equal, or one is a section of the other)."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _is_config_key(key: str) -> bool:
    return key in CONFIG_KEYS or any(k.startswith(key + ".") for k in CONFIG_KEYS)


def axis(key: Any, values: Any) -> Axis:
    """One sweep entry: a config key with a list of values, or a named axis (label -> overrides)."""
    key = str(key)
    where = f"experiment.sweep.{key}"
    if key in ("round", "seed", "victim"):
        raise ConfigError(f"{where}: '{key}' is not sweepable here ('seed': use experiment.seeds; 'round' and "
                          f"'victim' are taken from the results)")
    if key in RESERVED_COLUMNS:
        raise ConfigError(f"{where}: '{key}' is a column of results.csv; name the axis differently")
    if isinstance(values, Mapping) and not _is_config_key(key):
        return _named_axis(key, values, where)
    if not isinstance(values, list):
        kind = "a config key" if _is_config_key(key) else "a config key (or a named axis: a mapping of labels)"
        raise ConfigError(f"{where}: the values of {kind} must be a list, e.g. [1, 2, 4]; got {values!r}")
    if not values:
        raise ConfigError(f"{where}: empty list of values")
    shown = [json.dumps(v, sort_keys=True, default=str) for v in values]
    if len(set(shown)) != len(shown):
        raise ConfigError(f"{where}: repeated value in {values}")
    return Axis(key, tuple(values), tuple({key: v} for v in values))


def _named_axis(key: str, values: Mapping[Any, Any], where: str) -> Axis:
    """A named axis: label -> overrides, e.g. defense: {none: {defenses: []}, topk: {defenses: [...]}}."""
    if not values:
        raise ConfigError(f"{where}: no values")
    labels, sets = [], []
    for label, setting in values.items():
        if setting is not None and not isinstance(setting, Mapping):
            raise ConfigError(f"{where}.{label} must be a mapping of config keys, not {type(setting).__name__} "
                              f"({setting!r})")
        labels.append(label)
        sets.append(flat(setting or {}))
    return Axis(key, tuple(labels), tuple(sets), named=True)


def _profile_values(current: Any, new: Any, where: str) -> Any:
    """A profile replaces an axis' values; for a named axis a list of labels keeps a subset."""
    if isinstance(current, Mapping) and isinstance(new, list) and not isinstance(new, Mapping):
        missing = [label for label in new if label not in current]
        if missing:
            raise ConfigError(f"{where}: unknown label(s) {missing} (labels: {', '.join(map(str, current))})")
        return {label: current[label] for label in new}
    return new


def expand(axes: list[Axis]) -> list[Point]:
    """The cartesian product in file order: the first axis changes slowest, the last fastest."""
    points = []
    for index, combo in enumerate(itertools.product(*[range(len(a.values)) for a in axes])):
        values = {a.key: a.values[i] for a, i in zip(axes, combo)}
        positions = {a.key: i for a, i in zip(axes, combo)}
        overrides: dict[str, Any] = {}
        for a, i in zip(axes, combo):
            for key, value in a.overrides[i].items():
                if any(overlaps(key, k) for k in overrides):
                    raise ConfigError(f"experiment.sweep: '{a.key}' sets '{key}', which another swept key sets too")
                overrides[key] = value
        pid = digest({"values": {k: show(v) for k, v in values.items()}, "set": overrides}, 10)
        points.append(Point(index, values, positions, overrides, pid))
    return points


def build_configs(points: list[Point], seeds: list[int], resolved_base: dict[str, Any],
                  defaults: dict[str, Any] | None = None) -> None:
    """Each point's run config per seed; a bad key or value names the point.

    ``defaults``: ``attack.gia.*`` keys a profile sets only where the point's attack has that option."""
    for point in points:
        for seed in seeds:
            try:
                config = build_config(resolved_base, {**point.overrides, "seed": seed})
                extra = _supported(config, defaults or {})
                point.configs[seed] = build_config(resolved_base, {**point.overrides, **extra, "seed": seed}) \
                    if extra else config
            except ConfigError as err:
                raise ConfigError(f"sweep point {point.index + 1} of {len(points)} ({point.label()}), seed {seed}: "
                                  f"{err}") from None


def _supported(config: Any, defaults: dict[str, Any]) -> dict[str, Any]:
    """The ``attack.gia.<option>`` defaults the config's attack accepts and leaves unset."""
    from fl_privacy.attacks.registry import NO_ATTACK, get_attack

    name = getattr(config.attack, "name", None)
    if not defaults or not name or name == NO_ATTACK:
        return {}
    fields = get_attack(name).options_fields
    return {key: value for key, value in defaults.items()
            if key.startswith("attack.gia.") and key.split(".", 2)[2] in fields
            and getattr(config.attack.gia, key.split(".", 2)[2]) is None}


def units(points: list[Point], seeds: list[int]) -> list[Unit]:
    """Point x seed x victim in that order (a federation point has no victims: one unit per seed)."""
    out = []
    for point in points:
        for seed in seeds:
            for victim in point.victims or [None]:
                row_id = digest({"point": point.point_id, "seed": seed,
                                 "victim": victim.key() if victim else None}, 12)
                out.append(Unit(point, seed, victim, row_id))
    return out
