"""Experiment files: one YAML per research question, a sweep over config keys.

An experiment file is a normal config file (its ``base`` section) plus an
``experiment`` section that says what to sweep, how often to repeat it, which
victims to attack and which table and figure answer the question::

    experiment:
      name: rq1_minibatch_schedule
      question: Does knowing the mini-batch schedule help the attacker?
      mode: attack                      # attack | federation
      victims: {split: test, indices: [3, 10, 21, 30], group: 1, count: 4}
      sweep:
        training.local_steps: [1, 2, 4]
        attack.threat.schedule: [true, false]
      seeds: [0]
      table: {rows: training.local_steps, columns: attack.threat.schedule, metrics: [ssim_mean]}
      figure: {x: training.local_steps, y: ssim_mean, hue: attack.threat.schedule}
      profiles:
        quick: {set: {attack.gia.iterations: 100}, victims: {count: 1}}
        full: {}
    base:
      data: {dataset: cifar10}

Everything is resolved and validated here, before anything runs: the profile
is applied, every sweep point x seed is built with ``build_config`` (a bad key
or value names the point), table and figure keys are checked against the sweep,
metrics against the mode's metric names, and each point's data and victims are
checked (dataset present, indices inside the split, batch sizes, the attack's
knowledge). Only ``yaml`` is imported at module level so ``is_experiment_file``
stays cheap for the CLI.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fl_privacy.config import (
    CONFIG_KEYS,
    ConfigError,
    ExperimentConfig,
    _check_known,
    _merge,
    build_config,
    parse_overrides,
    unflatten,
)

# ----------------------------------------------------------------------------- names

TOP_KEYS = ("experiment", "base")
EXPERIMENT_KEYS = ("name", "question", "paper", "notes", "mode", "victims", "sweep", "seeds", "table", "figure",
                   "generators", "profiles", "comparisons", "resources")
VICTIM_KEYS = ("split", "indices", "group", "count", "clients")
TABLE_KEYS = ("rows", "columns", "metrics", "title", "stats")
TABLE_STATS = ("mean", "median")
"""Cell statistics: ``mean`` = mean ± sample std, ``median`` = median over victims/seeds."""
FIGURE_KEYS = ("x", "y", "hue", "title", "name", "logx", "logy")
PROFILE_KEYS = ("description", "set", "victims", "sweep", "seeds", "generators", "resources")
RUN_RESOURCE_KEYS = ("cpus", "gpus")
"""``experiment.resources`` (or a profile's): what one run takes on a Ray worker (``fl-privacy run --workers``)."""
GENERATOR_KEYS = ("dataset", "classes", "split", "epochs", "batch_size", "nz", "ngf", "ndf", "lr", "beta1",
                  "conditional", "max_samples", "max_steps", "seed")
"""Arguments of ``fl_privacy.attacks.generators.train_generator`` an experiment's generator may set."""
GENERATOR_REF = "generator:"
"""``attack.generator: generator:<name>`` points at the generator ``<name>`` of ``experiment.generators``."""
MODES = ("attack", "federation")
DEFAULT_PROFILE = "quick"

ATTACK_METRICS = ("psnr_mean", "ssim_mean", "mse_mean", "lpips_mean", "label_acc", "images", "iterations",
                  "seconds", "seconds_per_iteration", "objective", "wall_seconds", "ssim_uniform7_mean",
                  "corr_mean")
"""Per-victim values of ``attack_once``'s entry (``seconds``: the attack alone; ``wall_seconds``: the whole row;
``ssim_mean``: Gaussian 11x11 window, ``ssim_uniform7_mean``: skimage's 7x7 uniform window)."""

FEDERATION_METRICS = ("test_accuracy", "test_loss", "train_loss", "attack_psnr_mean", "attack_ssim_mean",
                      "attack_mse_mean", "attack_lpips_mean", "attack_label_acc", "payload_kib", "compression",
                      "epsilon", "delta", "igsa", "probe_psnr_mean", "probe_ssim_mean", "probe_mse_mean",
                      "probe_lpips_mean", "mia_auc_confidence", "mia_auc_loss", "mia_auc_entropy",
                      "mia_auc_modified_entropy", "mia_auc_lira_offline", "mia_auc_rmia_offline", "wall_seconds",
                      "attack_corr_mean")
"""Per run (or per round with ``round`` in the table/figure) from rounds.jsonl and final.json."""

METRICS = {"attack": ATTACK_METRICS, "federation": FEDERATION_METRICS}
RESERVED_COLUMNS = frozenset(("row_id", "point_id", "victim_images", "run_dir", *ATTACK_METRICS, *FEDERATION_METRICS))
PSEUDO_KEYS = {"attack": ("seed", "victim"), "federation": ("seed", "round")}
"""Keys a table or figure may use besides the swept ones: taken from each results row."""

RUNNER_DEFAULTS: dict[str, Any] = {"attack": {"progress": False}}
"""Applied under ``base``: the runner's own progress bar replaces the attack's per-iteration bar."""

_NOT_FINGERPRINTED = ("name", "out_dir", "resources")
"""Config parts that do not change what is computed (a sweep may resume on another device)."""


def _close(word: str, allowed: tuple[str, ...] | list[str]) -> str:
    match = difflib.get_close_matches(str(word), list(allowed), n=1)
    return f"; did you mean '{match[0]}'?" if match else ""


def _check_keys(data: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in data:
        if key not in allowed:
            match = difflib.get_close_matches(str(key), list(allowed), n=1)
            hint = f"; did you mean '{where}.{match[0]}'?" if match else ""
            raise ConfigError(f"unknown key '{where}.{key}'{hint} (allowed in {where}: {', '.join(allowed)})")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping, not {type(value).__name__} ({value!r})")
    return dict(value)


def _str_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"{where} must be a key or a list of keys, not {value!r}")


def show(value: Any) -> str:
    """A value as a table cell / CSV field / label: YAML-style scalars, compact JSON for lists and maps."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def _digest(payload: Any, size: int) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:size]


# ----------------------------------------------------------------------------- resolved pieces


@dataclass(frozen=True)
class Axis:
    """One sweep dimension: a config key with a list of values, or a named axis of labelled override sets."""

    key: str
    values: tuple[Any, ...]
    overrides: tuple[dict[str, Any], ...]
    named: bool = False

    def describe(self) -> Any:
        if self.named:
            return {show(v): o for v, o in zip(self.values, self.overrides)}
        return list(self.values)


@dataclass(frozen=True)
class Victim:
    """One attacked client update: ``indices`` of ``split`` (its own batch), or client ``client``'s partition."""

    index: int
    split: str
    indices: tuple[int, ...] | None = None
    client: int | None = None

    def describe(self) -> str:
        if self.indices is not None:
            return " ".join(str(i) for i in self.indices)
        return f"client {self.client}"

    def key(self) -> Any:
        return {"split": self.split, "indices": list(self.indices)} if self.indices is not None else \
            {"client": self.client}


@dataclass
class Point:
    """One setting of the grid: a value per axis and the flat config overrides they make."""

    index: int
    values: dict[str, Any]
    positions: dict[str, int]
    overrides: dict[str, Any]
    point_id: str = ""
    configs: dict[int, ExperimentConfig] = field(default_factory=dict, repr=False)
    victims: list[Victim] = field(default_factory=list)

    def label(self) -> str:
        return ", ".join(f"{k}={show(v)}" for k, v in self.values.items()) or "(single point)"


@dataclass(frozen=True)
class Unit:
    """One row (attack mode) or one run (federation mode) of the experiment: point x seed x victim."""

    point: Point
    seed: int
    victim: Victim | None
    row_id: str

    def run_dir(self, root: Path) -> Path:
        name = f"seed{self.seed}" + (f"-victim{self.victim.index}" if self.victim is not None else "")
        return root / "points" / self.point.point_id / name


@dataclass(frozen=True)
class TableSpec:
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    metrics: tuple[str, ...]
    title: str | None = None
    stats: tuple[str, ...] = ("mean",)


@dataclass(frozen=True)
class FigureSpec:
    x: str
    y: tuple[str, ...]
    hue: tuple[str, ...]
    title: str | None = None
    name: str | None = None
    logx: bool = False
    logy: bool = False


@dataclass
class Experiment:
    """A resolved, validated experiment: what to run, in which order, and how to report it."""

    path: Path
    name: str
    question: str
    paper: str
    notes: list[str]
    mode: str
    profile: str
    profile_defaulted: bool
    profile_description: str
    profiles: tuple[str, ...]
    axes: list[Axis]
    seeds: list[int]
    victims_spec: dict[str, Any]
    tables: list[TableSpec]
    figures: list[FigureSpec]
    base: dict[str, Any]
    resolved_base: dict[str, Any]
    overrides: dict[str, Any]
    cli_overrides: dict[str, Any]
    points: list[Point]
    units: list[Unit]
    per_round: bool
    root: Path = Path(".")
    generators: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Generators the experiment trains before its first run (GIA-L's auxiliary knowledge): name -> spec."""
    comparisons: list[Any] = field(default_factory=list)
    """The paper's claims as paired comparisons (``fl_privacy.experiments.comparisons.Comparison``)."""
    run_resources: dict[str, float] = field(default_factory=dict)
    """CPUs / GPU fraction one run takes on a Ray worker (``--workers``, ``--ray-address``); not fingerprinted."""

    def generator_path(self, name: str) -> Path:
        """Where generator ``name`` is kept: ``DIR/generators/<name>.pt`` (trained once, reused on resume)."""
        return generator_path(self.root, name)

    def generators_needed(self, units: list[Unit] | None = None) -> set[str]:
        """Names of the generators that GIA-L runs among ``units`` (default: all) search; others are not trained."""
        from fl_privacy.attacks import needs_generator

        paths = {str(self.generator_path(name)): name for name in self.generators}
        return {paths[c.attack.generator] for u in (self.units if units is None else units)
                for c in [u.point.configs[u.seed]] if needs_generator(c.attack.name) and c.attack.generator in paths}

    @property
    def axis_keys(self) -> list[str]:
        return [a.key for a in self.axes]

    @property
    def metrics(self) -> tuple[str, ...]:
        return METRICS[self.mode]

    def fingerprint(self) -> str:
        """What decides the results: the same fingerprint means rows of one experiment (resume); else refuse to mix.

        Made of the experiment's inputs (mode, victims, sweep, seeds, base, profile settings and --set), not of
        the presentation (question, table, figure) nor of settings that do not change what is computed
        (run names, output folder, resources: a sweep may resume on another device)."""
        def keep(key: str) -> bool:
            return key.split(".")[0] not in _NOT_FINGERPRINTED and key != "attack.progress"

        base = {k: v for k, v in self.base.items() if keep(k)}
        if isinstance(base.get("attack"), dict):
            base["attack"] = {k: v for k, v in base["attack"].items() if k != "progress"}
        inputs = {
            "mode": self.mode, "victims": self.victims_spec, "sweep": {a.key: a.describe() for a in self.axes},
            "seeds": self.seeds, "base": base, "overrides": {k: v for k, v in self.overrides.items() if keep(k)},
            "rows_per_round": self.per_round,
        }
        if self.generators:
            inputs["generators"] = self.generators  # by name and settings, not by file: a moved DIR still resumes
        return _digest(inputs, 16)

    def resolved(self) -> dict[str, Any]:
        """The experiment after the profile and ``--set``: written to ``DIR/experiment.yaml``."""
        return {
            "name": self.name,
            "question": self.question,
            "paper": self.paper,
            "profile": self.profile,
            "source": str(self.path),
            "mode": self.mode,
            "victims": self.victims_spec,
            "sweep": {a.key: a.describe() for a in self.axes},
            "seeds": list(self.seeds),
            "table": [dict(rows=list(t.rows), columns=list(t.columns), metrics=list(t.metrics),
                           **({"title": t.title} if t.title else {}),
                           **({"stats": list(t.stats)} if t.stats != ("mean",) else {})) for t in self.tables],
            "figure": [dict(x=f.x, y=list(f.y), hue=list(f.hue), **({"title": f.title} if f.title else {}),
                            **({"name": f.name} if f.name else {})) for f in self.figures],
            "overrides": dict(self.overrides),
            "rows_per_round": self.per_round,
            **({"generators": self.generators} if self.generators else {}),
            **({"comparisons": [c.spec.model_dump(exclude_none=True) for c in self.comparisons]}
               if self.comparisons else {}),
            "base": self.base,
            "points": [{"id": p.point_id, **{k: show(v) for k, v in p.values.items()}} for p in self.points],
            "fingerprint": self.fingerprint(),
        }

    def plan(self) -> str:
        """What will run, in one line: points x seeds x victims = runs."""
        victims = {len(p.victims) for p in self.points}
        per = (f" x {victims.pop()} victim(s)" if len(victims) == 1 else " x 1..n victim(s)") \
            if self.mode == "attack" else ""
        return f"{len(self.points)} point(s) x {len(self.seeds)} seed(s){per} = {len(self.units)} run(s)"

    def default_out(self) -> Path:
        """``<out_dir>/<name>-<profile>`` (``out_dir`` from the base config, under $FL_PRIVACY_RUNS_DIR when set):
        the same command resumes into the same directory."""
        return default_out(self.resolved_base, self.name, self.profile)


def default_out(resolved_base: dict[str, Any], name: str, profile: str) -> Path:
    """The output directory of an experiment when ``--out`` is not given (see ``Experiment.default_out``)."""
    from fl_privacy.reporting.run_dir import runs_base

    return runs_base(build_config(resolved_base).out_dir) / f"{name}-{profile}"


def generator_path(root: Path, name: str) -> Path:
    return root / "generators" / f"{name}.pt"


# ----------------------------------------------------------------------------- reading


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
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
    data = read_yaml(path)
    if "experiment" not in data:
        hint = " (put 'sweep' inside the 'experiment' section)" if "sweep" in data else ""
        raise ConfigError(f"{path}: no 'experiment' section{hint}; a plain config runs with `fl-privacy run` as is")
    for key in data:
        if key not in TOP_KEYS:
            raise ConfigError(f"{path}: unknown top-level key '{key}'{_close(key, TOP_KEYS)}: an experiment file has "
                              f"'experiment' and 'base' (config sections such as data, model, training go under base)")
    raw = _mapping(data["experiment"], "experiment")
    _check_keys(raw, EXPERIMENT_KEYS, "experiment")
    base = _merge(RUNNER_DEFAULTS, _mapping(data.get("base"), "base"))

    # -------------------------------------------------------------- profile
    profiles = _mapping(raw.get("profiles"), "experiment.profiles")
    if DEFAULT_PROFILE not in profiles:
        raise ConfigError(f"experiment.profiles must define '{DEFAULT_PROFILE}' (CPU-sized settings that run in "
                          f"minutes); found: {', '.join(map(str, profiles)) or 'none'}")
    defaulted = profile is None
    profile = DEFAULT_PROFILE if profile is None else profile
    if profile not in profiles:
        raise ConfigError(f"unknown profile '{profile}'{_close(profile, list(map(str, profiles)))} "
                          f"(available: {', '.join(map(str, profiles))})")
    chosen = _mapping(profiles[profile], f"experiment.profiles.{profile}")
    _check_keys(chosen, PROFILE_KEYS, f"experiment.profiles.{profile}")

    mode = raw.get("mode", "attack")
    if mode not in MODES:
        raise ConfigError(f"experiment.mode: '{mode}' is not a mode{_close(mode, MODES)} (allowed: {', '.join(MODES)})")
    name = str(raw.get("name") or path.stem)

    sweep_raw = _mapping(raw.get("sweep"), "experiment.sweep")
    for key, value in _mapping(chosen.get("sweep"), f"experiment.profiles.{profile}.sweep").items():
        if key not in sweep_raw:
            raise ConfigError(f"experiment.profiles.{profile}.sweep: '{key}' is not swept in experiment.sweep"
                              f"{_close(key, list(sweep_raw))} (swept: {', '.join(sweep_raw) or 'nothing'}); "
                              f"a profile may only change the values of swept keys")
        sweep_raw[key] = _profile_values(sweep_raw[key], value, f"experiment.profiles.{profile}.sweep.{key}")
    axes = [_axis(key, values) for key, values in sweep_raw.items()]
    keys = [a.key for a in axes]

    seeds = chosen.get("seeds", raw.get("seeds", [0]))
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise ConfigError(f"experiment.seeds must be a non-empty list of integers, not {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"experiment.seeds {seeds} repeats a seed")

    # -------------------------------------------------------------- overrides (profile set, then --set)
    profile_set = _flat(_mapping(chosen.get("set"), f"experiment.profiles.{profile}.set"))
    cli = parse_overrides(list(overrides)) if isinstance(overrides, list) else dict(overrides or {})
    for key in cli:
        if key.split(".")[0] in ("experiment", "base"):
            raise ConfigError(f"--set {key}: --set takes config keys (e.g. training.lr=0.1) applied to every point; "
                              f"experiment settings come from the file or a profile")
    for source, flat in ((f"experiment.profiles.{profile}.set", profile_set), ("--set", cli)):
        try:
            _check_known(unflatten(flat))
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None
        for key in flat:
            if key == "seed":
                raise ConfigError(f"{source}: 'seed' is set by experiment.seeds")
            clash = [k for a in axes for o in a.overrides for k in o if _overlaps(k, key)]
            if clash:
                raise ConfigError(f"{source} sets '{key}', which the sweep sets too ('{clash[0]}'): change the swept "
                                  f"values instead (a profile may replace them under 'sweep')")
    for a in axes:
        for o in a.overrides:
            if any(_overlaps(k, "seed") for k in o):
                raise ConfigError(f"experiment.sweep.{a.key}: sweep seeds with experiment.seeds, not the config key")
    flat_overrides = {**profile_set, **cli}
    resolved_base = {"name": name, **base}  # runs are named after the experiment unless base names them
    for flat in (profile_set, cli):
        resolved_base = _merge(resolved_base, unflatten(flat))

    # -------------------------------------------------------------- generators (trained by the runner, under DIR)
    root = Path(out).expanduser().resolve() if out is not None else \
        default_out(resolved_base, name, profile).expanduser().resolve()
    generators = _generators(raw, chosen, profile)
    used_generators: set[str] = set()
    resolved_base = _resolve_generator_refs(resolved_base, generators, root, used_generators, "base")

    # -------------------------------------------------------------- points (ids from the unresolved settings)
    points = expand(axes)
    for point in points:
        point.overrides = _resolve_generator_refs(point.overrides, generators, root, used_generators,
                                                  f"experiment.sweep ({point.label()})")
    for point in points:
        for seed in seeds:
            try:
                point.configs[seed] = build_config(resolved_base, {**point.overrides, "seed": seed})
            except ConfigError as err:
                raise ConfigError(f"sweep point {point.index + 1} of {len(points)} ({point.label()}), seed {seed}: "
                                  f"{err}") from None

    # -------------------------------------------------------------- victims
    victims_spec = _victims_spec(raw, chosen, mode, profile)
    for point in points:
        point.victims = _victims_for(point, victims_spec, mode, len(points))

    # -------------------------------------------------------------- report
    tables = [_table(t, i, mode, keys) for i, t in enumerate(_listed(raw.get("table"), "experiment.table"))]
    figures = [_figure(f, i, mode, keys) for i, f in enumerate(_listed(raw.get("figure"), "experiment.figure"))]
    if not tables:
        metric = "ssim_mean" if mode == "attack" else "test_accuracy"
        tables = [TableSpec(tuple(keys[:1]), tuple(keys[1:2]), (metric,))]
    used = {k for t in tables for k in (*t.rows, *t.columns)} | {k for f in figures for k in (f.x, *f.hue)}
    per_round = mode == "federation" and "round" in used

    notes = raw.get("notes") or []
    notes = [notes] if isinstance(notes, str) else [str(n) for n in notes]
    from fl_privacy.experiments.comparisons import check_paired, parse_comparisons, sweep_values

    comparisons = parse_comparisons(raw.get("comparisons"), axes, sweep_values(_mapping(raw.get("sweep"), "sweep"),
                                    profiles, show), METRICS[mode], show)
    check_paired(comparisons, points, show)
    units = []
    for point in points:
        for seed in seeds:
            for victim in point.victims or [None]:
                row_id = _digest({"point": point.point_id, "seed": seed,
                                  "victim": victim.key() if victim else None}, 12)
                units.append(Unit(point, seed, victim, row_id))
    experiment = Experiment(
        path=path, name=name, question=str(raw.get("question") or "").strip(), paper=str(raw.get("paper") or ""),
        notes=notes, mode=mode, profile=profile, profile_defaulted=defaulted,
        profile_description=str(chosen.get("description") or ""), profiles=tuple(map(str, profiles)),
        axes=axes, seeds=list(seeds), victims_spec=victims_spec, tables=tables, figures=figures,
        base=_mapping(data.get("base"), "base"), resolved_base=resolved_base, overrides=flat_overrides,
        cli_overrides=cli,
        points=points, units=units, per_round=per_round, root=root,
        generators={k: v for k, v in generators.items() if k in used_generators},
        comparisons=comparisons,
        run_resources=run_resources(raw, chosen, profile),
    )
    if check_data:
        preflight(experiment)
    return experiment


def _generators(raw: dict[str, Any], chosen: dict[str, Any], profile: str) -> dict[str, dict[str, Any]]:
    """``experiment.generators`` with the profile's changes merged in (a profile may not add new names)."""
    specs = {str(k): _mapping(v, f"experiment.generators.{k}")
             for k, v in _mapping(raw.get("generators"), "experiment.generators").items()}
    changes = _mapping(chosen.get("generators"), f"experiment.profiles.{profile}.generators")
    for name, change in changes.items():
        if name not in specs:
            raise ConfigError(f"experiment.profiles.{profile}.generators: '{name}' is not defined in "
                              f"experiment.generators{_close(name, list(specs))} (defined: {', '.join(specs) or 'none'})")
        specs[name] = {**specs[name], **_mapping(change, f"experiment.profiles.{profile}.generators.{name}")}
    for name, spec in specs.items():
        where = f"experiment.generators.{name}"
        if not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"{where}: a generator name may hold letters, digits, '_' and '-' only")
        _check_keys(spec, GENERATOR_KEYS, where)
        if "dataset" not in spec:
            raise ConfigError(f"{where}.dataset is required (the adversary's public data, e.g. cifar10)")
        for key in ("epochs", "batch_size", "nz", "ngf", "ndf", "max_samples", "max_steps"):
            value = spec.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{where}.{key} must be a positive integer, not {value!r}")
        classes = spec.get("classes")
        if classes is not None and not (isinstance(classes, list) and classes and
                                        all(isinstance(c, int) and c >= 0 for c in classes)):
            raise ConfigError(f"{where}.classes must be a non-empty list of class indices, not {classes!r}")
        if spec.get("split", "train") not in ("train", "test"):
            raise ConfigError(f"{where}.split must be 'train' or 'test', not {spec['split']!r}")
    return specs


def run_resources(raw: dict[str, Any], chosen: dict[str, Any], profile: str) -> dict[str, float]:
    """``experiment.resources`` with the profile's on top: ``cpus`` (whole CPUs = torch threads of the run) and
    ``gpus`` (a fraction of one GPU, or whole GPUs) per run when runs are spread over Ray workers."""
    merged: dict[str, Any] = {}
    for where, value in (("experiment.resources", raw.get("resources")),
                         (f"experiment.profiles.{profile}.resources", chosen.get("resources"))):
        spec = _mapping(value, where)
        _check_keys(spec, RUN_RESOURCE_KEYS, where)
        merged.update(spec)
    cpus, gpus = merged.get("cpus", 1), merged.get("gpus", 0)
    if isinstance(cpus, bool) or not isinstance(cpus, int) or cpus < 1:
        raise ConfigError(f"experiment.resources.cpus must be a whole number of CPUs >= 1 (the run's torch threads), "
                          f"not {cpus!r}")
    if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or gpus < 0 or (gpus > 1 and gpus != int(gpus)):
        raise ConfigError(f"experiment.resources.gpus must be a fraction of one GPU (0..1, e.g. 0.25) or a whole "
                          f"number of GPUs, not {gpus!r}")
    return {"cpus": cpus, "gpus": float(gpus)}


def _resolve_generator_refs(data: dict[str, Any], generators: dict[str, dict[str, Any]], root: Path,
                            used: set[str], where: str) -> dict[str, Any]:
    """Replace ``generator:<name>`` in ``attack.generator`` (nested or flat key) by the file under ``root``."""
    def resolve(value: Any) -> Any:
        if not (isinstance(value, str) and value.startswith(GENERATOR_REF)):
            return value
        name = value[len(GENERATOR_REF):]
        if name not in generators:
            raise ConfigError(f"{where}: attack.generator '{value}' names no generator of experiment.generators"
                              f"{_close(name, list(generators))} (defined: {', '.join(generators) or 'none'})")
        used.add(name)
        return str(generator_path(root, name))

    out = dict(data)
    if "attack.generator" in out:
        out["attack.generator"] = resolve(out["attack.generator"])
    attack = out.get("attack")
    if isinstance(attack, Mapping) and "generator" in attack:
        out["attack"] = {**attack, "generator": resolve(attack["generator"])}
    return out


def _flat(data: Mapping[str, Any]) -> dict[str, Any]:
    """Profile ``set`` may be flat (``attack.gia.iterations: 100``) or nested; both become flat dotted keys."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and str(key) not in CONFIG_KEYS:
            for sub, v in _flat(value).items():
                out[f"{key}.{sub}"] = v
        else:
            out[str(key)] = value
    return out


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _is_config_key(key: str) -> bool:
    return key in CONFIG_KEYS or any(k.startswith(key + ".") for k in CONFIG_KEYS)


def _axis(key: Any, values: Any) -> Axis:
    key = str(key)
    where = f"experiment.sweep.{key}"
    if key in ("round", "seed", "victim"):
        raise ConfigError(f"{where}: '{key}' is not sweepable here ('seed': use experiment.seeds; 'round' and "
                          f"'victim' are taken from the results)")
    if key in RESERVED_COLUMNS:
        raise ConfigError(f"{where}: '{key}' is a column of results.csv; name the axis differently")
    if isinstance(values, Mapping) and not _is_config_key(key):
        # A named axis: label -> overrides, e.g. defense: {none: {defenses: []}, topk: {defenses: [...]}}.
        if not values:
            raise ConfigError(f"{where}: no values")
        labels, sets = [], []
        for label, setting in values.items():
            setting = _mapping(setting, f"{where}.{label}")
            labels.append(label)
            sets.append(_flat(setting))
        return Axis(key, tuple(labels), tuple(sets), named=True)
    if not isinstance(values, list):
        kind = "a config key" if _is_config_key(key) else "a config key (or a named axis: a mapping of labels)"
        raise ConfigError(f"{where}: the values of {kind} must be a list, e.g. [1, 2, 4]; got {values!r}")
    if not values:
        raise ConfigError(f"{where}: empty list of values")
    shown = [json.dumps(v, sort_keys=True, default=str) for v in values]
    if len(set(shown)) != len(shown):
        raise ConfigError(f"{where}: repeated value in {values}")
    return Axis(key, tuple(values), tuple({key: v} for v in values))


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
                if any(_overlaps(key, k) for k in overrides):
                    raise ConfigError(f"experiment.sweep: '{a.key}' sets '{key}', which another swept key sets too")
                overrides[key] = value
        pid = _digest({"values": {k: show(v) for k, v in values.items()}, "set": overrides}, 10)
        points.append(Point(index, values, positions, overrides, pid))
    return points


def _victims_spec(raw: dict[str, Any], chosen: dict[str, Any], mode: str, profile: str) -> dict[str, Any]:
    spec = _mapping(raw.get("victims"), "experiment.victims")
    extra = _mapping(chosen.get("victims"), f"experiment.profiles.{profile}.victims")
    if mode == "federation":
        if spec or extra:
            raise ConfigError("experiment.victims is for mode 'attack'; in a federation the server attacks "
                              "attack.victims / attack.victim_ids in attack.rounds (set them under base)")
        return {}
    _check_keys(spec, VICTIM_KEYS, "experiment.victims")
    _check_keys(extra, VICTIM_KEYS, f"experiment.profiles.{profile}.victims")
    spec.update(extra)
    if not spec:
        raise ConfigError("experiment.victims is required in mode 'attack', e.g. "
                          "{split: test, indices: [3, 10, 21, 30], group: 1}")
    if spec.get("clients") is not None:
        clients = spec["clients"]
        if not (isinstance(clients, list) and clients and all(isinstance(c, int) for c in clients)):
            raise ConfigError(f"experiment.victims.clients must be a list of partition ids, not {clients!r}")
        if spec.get("indices") is not None:
            raise ConfigError("experiment.victims: give either 'indices' (images of a split) or 'clients' "
                              "(partitions of the train split), not both")
        if spec.setdefault("split", "train") != "train":
            raise ConfigError("experiment.victims.clients attacks client partitions of the train split: "
                              "drop victims.split or set it to train")
        count = spec.get("count")
        if count is not None and not (isinstance(count, int) and 1 <= count <= len(clients)):
            raise ConfigError(f"experiment.victims.count={count!r} must be 1..{len(clients)} (the clients listed)")
        return {"split": "train", "clients": list(clients), **({"count": count} if count is not None else {})}
    indices = spec.get("indices")
    if isinstance(indices, Mapping):
        _check_keys(indices, ("random", "seed"), "experiment.victims.indices")
        n, seed = indices.get("random"), indices.get("seed", 0)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1 or isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"experiment.victims.indices: {{random: N, seed: S}} needs a positive integer N and an "
                              f"integer S, not {dict(indices)!r}")
        indices = {"random": n, "seed": seed}
    elif not (isinstance(indices, list) and indices and all(isinstance(i, int) and i >= 0 for i in indices)):
        raise ConfigError(f"experiment.victims.indices must be a non-empty list of sample indices or "
                          f"{{random: N, seed: S}}, not {indices!r}")
    elif len(set(indices)) != len(indices):
        raise ConfigError(f"experiment.victims.indices repeats an index: {indices}")
    split = spec.get("split", "test")
    if split not in ("train", "test"):
        raise ConfigError(f"experiment.victims.split must be 'train' or 'test', not {split!r}")
    group = spec.get("group", 1)
    if not (group == "auto" or (isinstance(group, int) and not isinstance(group, bool) and group >= 1)):
        raise ConfigError(f"experiment.victims.group must be a positive integer or 'auto' (the images one "
                          f"update uses), not {group!r}")
    count = spec.get("count")
    if count is not None and not (isinstance(count, int) and not isinstance(count, bool) and count >= 1):
        raise ConfigError(f"experiment.victims.count must be a positive integer, not {count!r}")
    return {"split": split, "indices": indices if isinstance(indices, dict) else list(indices), "group": group, **({"count": count} if count else {})}


def _victims_for(point: Point, spec: dict[str, Any], mode: str, total: int) -> list[Victim]:
    if mode != "attack":
        return []
    if "clients" in spec:
        clients = spec["clients"][: spec.get("count", len(spec["clients"]))]
        return [Victim(i, "train", client=c) for i, c in enumerate(clients)]
    from fl_privacy.federation.run_setup import images_per_update

    where = f"sweep point {point.index + 1} of {total} ({point.label()})"
    config = next(iter(point.configs.values()))
    indices = _indices(spec, config, where)
    group = spec["group"]
    t = config.training
    if group == "auto":
        if t.algorithm == "fedavg" and not t.local_steps:
            raise ConfigError(f"{where}: victims.group 'auto' needs FedSGD or training.local_steps (FedAvg over whole "
                              f"epochs uses every image it is given): set victims.group to a number")
        group = images_per_update(config, len(indices) + 10**9)
    if t.batch_size > group:
        raise ConfigError(f"{where}: training.batch_size={t.batch_size} is larger than victims.group={group} images "
                          f"per victim: lower the batch size or raise victims.group (or use victims.group: auto)")
    used = images_per_update(config, group)
    if used < group:
        raise ConfigError(f"{where}: one update would use only {used} of each victim's victims.group={group} images "
                          f"({t.algorithm}, batch {t.batch_size}, local_steps {t.local_steps}): make them match "
                          f"(victims.group: auto does)")
    available = len(indices) // group
    count = spec.get("count", available)
    if available == 0 or count > available:
        need = max(count, 1) * group
        raise ConfigError(f"{where}: {max(count, 1)} victim(s) of {group} image(s) need {need} indices, "
                          f"victims.indices has {len(indices)}: add indices or lower victims.count / victims.group")
    return [Victim(v, spec["split"], indices=tuple(indices[v * group:(v + 1) * group])) for v in range(count)]


def _indices(spec: dict[str, Any], config: ExperimentConfig, where: str) -> list[int]:
    """The victims' sample indices: the listed ones, or ``{random: N, seed: S}``, N distinct indices of the split
    drawn with numpy's seeded generator (in draw order, so consecutive groups mix classes even when a dataset
    file is sorted by class, as the offline CIFAR-10 archive is)."""
    indices = spec["indices"]
    if not isinstance(indices, Mapping):
        return list(indices)
    import numpy as np

    from fl_privacy.federation.run_setup import load_split

    try:
        size = len(load_split(config, spec["split"]))
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from None
    if indices["random"] > size:
        raise ConfigError(f"{where}: victims.indices asks for {indices['random']} random images, the "
                          f"{spec['split']} split has {size}")
    return np.random.default_rng(indices["seed"]).choice(size, indices["random"], replace=False).tolist()


def _listed(value: Any, where: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [dict(value)]
    if isinstance(value, list) and all(isinstance(v, Mapping) for v in value):
        return [dict(v) for v in value]
    raise ConfigError(f"{where} must be a mapping or a list of mappings, not {value!r}")


def _check_axis_keys(used: list[str], mode: str, keys: list[str], where: str) -> None:
    allowed = [*keys, *PSEUDO_KEYS[mode]]
    for key in used:
        if key not in allowed:
            raise ConfigError(f"{where}: '{key}' is not a swept key{_close(key, allowed)} (allowed: "
                              f"{', '.join(allowed)}{'; round needs mode federation' if key == 'round' else ''})")
    if len(set(used)) != len(used):
        raise ConfigError(f"{where}: a key is used twice in {used}")


def _check_metrics(metrics: list[str], mode: str, where: str) -> None:
    if not metrics:
        raise ConfigError(f"{where}: name at least one metric (known in mode {mode}: {', '.join(METRICS[mode])})")
    for m in metrics:
        if m not in METRICS[mode]:
            raise ConfigError(f"{where}: unknown metric '{m}'{_close(m, METRICS[mode])} (known in mode {mode}: "
                              f"{', '.join(METRICS[mode])})")


def _table(raw: dict[str, Any], index: int, mode: str, keys: list[str]) -> TableSpec:
    where = f"experiment.table[{index}]" if index else "experiment.table"
    _check_keys(raw, TABLE_KEYS, where)
    rows = _str_list(raw.get("rows"), f"{where}.rows")
    columns = _str_list(raw.get("columns"), f"{where}.columns")
    metrics = _str_list(raw.get("metrics"), f"{where}.metrics")
    _check_axis_keys(rows + columns, mode, keys, where)
    _check_metrics(metrics, mode, where)
    # Swept keys the table does not name become extra row keys: a cell never averages over a swept setting.
    rows += [k for k in keys if k not in rows and k not in columns]
    stats = _str_list(raw.get("stats", ["mean"]), f"{where}.stats")
    bad = [st for st in stats if st not in TABLE_STATS]
    if bad or not stats or len(set(stats)) != len(stats):
        raise ConfigError(f"{where}.stats: {stats!r}: choose from {', '.join(TABLE_STATS)} (each once)")
    return TableSpec(tuple(rows), tuple(columns), tuple(metrics), raw.get("title"), tuple(stats))


def _figure(raw: dict[str, Any], index: int, mode: str, keys: list[str]) -> FigureSpec:
    where = f"experiment.figure[{index}]" if index else "experiment.figure"
    _check_keys(raw, FIGURE_KEYS, where)
    if not raw.get("x"):
        raise ConfigError(f"{where}.x is required (a swept key{' or round' if mode == 'federation' else ''})")
    x = raw["x"]
    if not isinstance(x, str):
        raise ConfigError(f"{where}.x must be one key, not {x!r}")
    y = _str_list(raw.get("y"), f"{where}.y")
    hue = _str_list(raw.get("hue"), f"{where}.hue")
    _check_axis_keys([x, *hue], mode, keys, where)
    _check_metrics(y, mode, where)
    # Other swept keys split lines too (one line per combination), never averaged away.
    hue += [k for k in keys if k != x and k not in hue]
    for flag in ("logx", "logy"):
        if not isinstance(raw.get(flag, False), bool):
            raise ConfigError(f"{where}.{flag} must be true or false")
    return FigureSpec(x, tuple(y), tuple(hue), raw.get("title"), raw.get("name"), bool(raw.get("logx")),
                      bool(raw.get("logy")))


# ----------------------------------------------------------------------------- data checks


def preflight(experiment: Experiment) -> None:
    """Data, models, victims and attack knowledge of every point x seed, before the first run."""
    from fl_privacy.attacks import needs_generator
    from fl_privacy.audit.run_attacks import gia_config
    from fl_privacy.federation.run_setup import build_model_for, images_per_update, load_split, prepare

    models_checked: set[str] = set()
    for point in experiment.points:
        for seed, config in point.configs.items():
            where = f"sweep point {point.index + 1} of {len(experiment.points)} ({point.label()}), seed {seed}"
            try:
                if experiment.mode == "federation":
                    prepare(config)
                    continue
                if config.attack.name == "none":
                    raise ConfigError("attack.name is 'none': mode 'attack' needs an attack (e.g. attack.name: "
                                      "inverting_gradients)")
                # the preset exists and the threat level grants what it needs (generators trained later may be absent)
                gia = gia_config(config, pending_generators={str(experiment.generator_path(g))
                                                             for g in experiment.generators})
                if needs_generator(config.attack.name):
                    _check_generator_data(experiment, config)
                if point.victims and point.victims[0].client is not None:
                    setup = prepare(config)
                    bad = [v.client for v in point.victims if not 0 <= v.client < len(setup.partitions)]
                    if bad:
                        raise ConfigError(f"victims.clients {bad} outside 0..{len(setup.partitions) - 1}")
                    images = max(images_per_update(config, len(setup.partitions[v.client])) for v in point.victims)
                    _check_label_method(gia, images)
                    continue
                data = load_split(config, experiment.victims_spec["split"])
                bad = sorted({i for v in point.victims for i in v.indices or () if i >= len(data)})
                if bad:
                    raise ConfigError(f"victims.indices {bad} outside the {experiment.victims_spec['split']} split "
                                      f"(0..{len(data) - 1})")
                images = len(point.victims[0].indices or ())
                _check_label_method(gia, images)
                if images > config.attack.max_images:
                    raise ConfigError(f"{images} images per victim is more than attack.max_images="
                                      f"{config.attack.max_images}")
                model_key = json.dumps([config.data.model_dump(), config.model.model_dump()], default=str)
                if model_key not in models_checked:
                    build_model_for(config, data)
                    models_checked.add(model_key)
            except ConfigError as err:
                raise ConfigError(f"{where}: {err}") from None
            except (FileNotFoundError, ValueError) as err:
                raise ConfigError(f"{where}: {err}") from None


def _check_generator_data(experiment: Experiment, config: ExperimentConfig) -> None:
    """An experiment's generator must exist as data and make images of the victims' shape."""
    import numpy as np

    from fl_privacy.data import load_dataset

    for name, spec in experiment.generators.items():
        if config.attack.generator != str(experiment.generator_path(name)):
            continue
        public = load_dataset(spec["dataset"], spec.get("split", "train"), config.data.data_dir)
        victims = load_dataset(config.data.dataset, "train", config.data.data_dir, path=config.data.path)
        if public.images.shape[1:] != victims.images.shape[1:]:
            raise ConfigError(f"experiment.generators.{name}: {spec['dataset']} images are "
                              f"{tuple(public.images.shape[1:])}, the victims' {config.data.dataset} images "
                              f"{tuple(victims.images.shape[1:])}: the generator must make images of the victims' shape")
        classes = spec.get("classes")
        present = set(int(c) for c in np.unique(public.labels)) if classes else set()
        missing = sorted(set(classes or ()) - present)
        if missing:
            raise ConfigError(f"experiment.generators.{name}.classes {missing} do not occur in {spec['dataset']} "
                              f"(classes 0..{max(present)})")


def _check_label_method(gia: Any, images: int) -> None:
    """iDLG's analytic label works for one image only; it would fail after the update is built."""
    if gia.labels == "infer" and gia.label_method == "idlg" and images > 1:
        raise ConfigError(f"label inference 'idlg' handles one image, each victim update here uses {images}: "
                          f"set attack.gia.label_method (yin, llg, llg+), grant attack.threat.labels, or use batch 1")
