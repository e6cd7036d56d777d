"""A resolved experiment: the grid's axes and points, the victims, the units that run, the report's tables.

These are the loader's output (plain dataclasses, built once and then only read); the file's
input format is ``schema``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fl_privacy.config import ExperimentConfig, build_config
from fl_privacy.experiments.spec.names import METRICS, digest, show

_NOT_FINGERPRINTED = ("name", "out_dir", "resources")
"""Config parts that do not change what is computed (a sweep may resume on another device)."""

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
    kind: str = "line"
    error: str = "ci95"


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
    batch_victims: bool = True
    """Attack mode: the victims of one point x seed attacked as one batched problem when the attack can (same
    results within float tolerance, so not fingerprinted)."""

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
        return digest(inputs, 16)

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
                            **({"name": f.name} if f.name else {}),
                            **({"kind": f.kind} if f.kind != "line" else {}),
                            **({"error": f.error} if f.error != "ci95" else {})) for f in self.figures],
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

