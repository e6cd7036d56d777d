"""Reading and resolving an experiment file: schema, profile, ``--set``, sweep, victims, report, pre-flight.

Everything is resolved and validated here, before anything runs: the profile is applied, every
sweep point x seed is built with ``build_config`` (a bad key or value names the point), table and
figure keys are checked against the sweep, metrics against the mode's metric names, and (with
``check_data``) each point's data and victims are checked. Only ``yaml`` and pydantic are imported
at module level so ``is_experiment_file`` stays cheap for the CLI.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from fl_privacy.config import ConfigError
from fl_privacy.experiments.spec import layout, profiles
from fl_privacy.experiments.spec.errors import validate
from fl_privacy.experiments.spec.model import Experiment, Point, default_out
from fl_privacy.experiments.spec.names import METRICS, RUNNER_DEFAULTS, close, show
from fl_privacy.experiments.spec.schema import ExperimentSection
from fl_privacy.experiments.spec.sweep import build_configs, expand, resolve_axes, units
from fl_privacy.experiments.spec.victims import victims_for, victims_spec

TOP_KEYS = ("experiment", "base")


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The file's top-level mapping; the run config's reader, so both report a bad file the same way."""
    from fl_privacy.config import read_yaml_mapping

    return read_yaml_mapping(path)  # directories, encodings, empty files: one clear error each


def is_experiment_file(path: str | os.PathLike | None) -> bool:
    """True when ``path`` is a YAML file with an ``experiment`` (or a misplaced top-level ``sweep``) section.

    Plain config files, missing files and unreadable YAML give False (the normal
    config loader then reports them)."""
    if not path:
        return False
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and ("experiment" in data or "sweep" in data)


def load_experiment(
    path: str | os.PathLike,
    overrides: list[str] | Mapping[str, Any] | None = None,
    profile: str | None = None,
    check_data: bool = True,
    out: str | os.PathLike | None = None,
) -> Experiment:
    """Read, resolve (profile, ``--set``) and validate an experiment file; nothing runs.

    ``check_data`` also loads each point's data split and builds its model (fast
    failures on missing datasets, out-of-range victim indices, batch sizes).
    ``out``: the output directory (default ``default_out``); generators named with
    ``generator:<name>`` resolve to files under it."""
    path = Path(path)
    raw, base, section = _read(path)
    name = str(section.name or path.stem)
    profile_name, chosen = profiles.choose(section, profile)
    axes = resolve_axes(section.sweep or {}, chosen.sweep or {}, profile_name)
    seeds = list(chosen.seeds if chosen.seeds is not None else section.seeds)
    profile_set, cli = profiles.overrides(chosen, profile_name, overrides, axes)
    defaults = profiles.early_stopping_default(profile_name, base or {}, profile_set, cli, axes)
    # runs are named after the experiment unless base names them
    resolved_base = profiles.apply({"name": name, **profiles.merge_base(RUNNER_DEFAULTS, base)}, profile_set, cli)
    root = Path(out).expanduser().resolve() if out is not None else \
        default_out(resolved_base, name, profile_name).expanduser().resolve()
    chosen_raw = dict((raw.get("profiles") or {}).get(profile_name) or {})
    generators = profiles.generators(raw, chosen_raw, profile_name)
    used_generators: set[str] = set()
    resolved_base = profiles.resolve_generator_refs(resolved_base, generators, root, used_generators, "base")
    victims = victims_spec(section.victims, chosen.victims, section.mode)
    points = _points(axes, seeds, resolved_base, victims, section.mode,
                     lambda data, where: profiles.resolve_generator_refs(data, generators, root, used_generators, where),
                     defaults)
    keys = [a.key for a in axes]
    tables = layout.tables(section.table, section.mode, keys)
    figures = layout.figures(section.figure, section.mode, keys)
    used = {k for t in tables for k in (*t.rows, *t.columns)} | {k for f in figures for k in (f.x, *f.hue)}
    per_round = section.mode == "federation" and "round" in used
    experiment = Experiment(
        path=path, name=name, question=(section.question or "").strip(), paper=section.paper or "",
        notes=list(section.notes), mode=section.mode, profile=profile_name, profile_defaulted=profile is None,
        profile_description=chosen.description or "", profiles=tuple(map(str, section.profiles or {})),
        axes=axes, seeds=seeds, victims_spec=victims,
        tables=tables, figures=figures, base=base, resolved_base=resolved_base,
        overrides={**profile_set, **cli, **defaults},
        cli_overrides=cli, points=points, units=units(points, seeds),
        per_round=per_round, root=root,
        generators={k: v for k, v in generators.items() if k in used_generators},
        comparisons=_comparisons(raw, section, axes, points, per_round),
        run_resources=profiles.run_resources(section, chosen),
        batch_victims=section.batch_victims,
    )
    if check_data:
        from fl_privacy.experiments.spec.preflight import preflight

        preflight(experiment)
    return experiment


def _read(path: Path) -> tuple[dict[str, Any], dict[str, Any], ExperimentSection]:
    """The raw ``experiment`` mapping, the ``base`` mapping and the validated experiment section."""
    data = read_yaml(path)
    if "experiment" not in data:
        hint = " (put 'sweep' inside the 'experiment' section)" if "sweep" in data else ""
        raise ConfigError(f"{path}: no 'experiment' section{hint}; a plain config runs with `fl-privacy run` as is")
    for key in data:
        if key not in TOP_KEYS:
            raise ConfigError(f"{path}: unknown top-level key '{key}'{close(key, TOP_KEYS)}: an experiment file has "
                              f"'experiment' and 'base' (config sections such as data, model, training go under base)")
    base = data.get("base")
    if base is not None and not isinstance(base, Mapping):
        raise ConfigError(f"base must be a mapping of config sections, not {type(base).__name__} ({base!r})")
    section = validate(ExperimentSection, data["experiment"], "experiment")
    return dict(data["experiment"] or {}), dict(base or {}), section


def _points(axes: list[Any], seeds: list[int], resolved_base: dict[str, Any], victims: dict[str, Any], mode: str,
            resolve_refs: Callable[[dict[str, Any], str], dict[str, Any]], defaults: dict[str, Any]) -> list[Point]:
    """The grid's points with their configs per seed and their victims (ids from the unresolved settings)."""
    points = expand(axes)
    for point in points:
        point.overrides = resolve_refs(point.overrides, f"experiment.sweep ({point.label()})")
    build_configs(points, seeds, resolved_base, defaults)
    for point in points:
        point.victims = victims_for(point, victims, mode, len(points))
    return points


def _comparisons(raw: dict[str, Any], section: ExperimentSection, axes: list[Any], points: list[Point],
                 per_round: bool) -> list[Any]:
    """``experiment.comparisons`` checked against every value any profile sweeps, and for a paired design."""
    from fl_privacy.experiments.comparisons import check_paired, parse_comparisons, sweep_values

    every_profile = {str(k): dict(v or {}) for k, v in (raw.get("profiles") or {}).items()}
    comparisons = parse_comparisons(section.comparisons, axes, sweep_values(dict(raw.get("sweep") or {}),
                                    every_profile, show), METRICS[section.mode], show, per_round)
    check_paired(comparisons, points, show)
    return comparisons
