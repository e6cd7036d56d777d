"""Comparisons a paper states, declared in an experiment file and tested on paired results.

    experiment:
      comparisons:
        - name: schedule known vs unknown
          baseline: {attack.threat.schedule: false}
          treatment: {attack.threat.schedule: true}
          metric: ssim_mean
          paper_claim: higher          # the paper: treatment's metric is higher | lower | equal (needs margin)
          paper: "SoK Table II: known schedule keeps LPIPS lower as N grows"

``baseline`` and ``treatment`` name the same swept keys with one value each; every other swept key
is held fixed, so a comparison gives one paired test per combination of the other keys (e.g. per
attacker and E). Pairs are the same victim (and seed) attacked under both settings: the loader
refuses a comparison whose two cells attack different victims or datasets (not a paired design).
With ``baseline_metric`` the baseline side reads another metric, so two methods scored on the very same runs
(the same cell on both sides) are compared pair by pair. ``paired: false`` compares cells that hold different
victims as independent samples (Mann-Whitney U), stated in the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fl_privacy.config import ConfigError


class ComparisonSpec(BaseModel):
    """One claim of a paper: ``treatment``'s ``metric`` is higher / lower than / equal to ``baseline``'s."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    baseline: dict[str, Any] = Field(min_length=1)
    treatment: dict[str, Any] = Field(min_length=1)
    metric: str
    baseline_metric: str | None = Field(
        default=None, description="the baseline's metric when two methods are scored on the same runs (e.g. a "
                                  "multi-round MIA vs the one-update MIA on the same targets); default: metric")
    paired: bool = Field(default=True, description="false: the two cells hold different victims (e.g. batch sizes "
                                                    "with victims.group auto); compared as independent samples")
    paper_claim: Literal["higher", "lower", "equal"]
    margin: float | None = Field(default=None, ge=0, description="equal only: the largest difference that counts as equal")
    alpha: float = Field(default=0.05, gt=0, lt=1)
    paper: str | None = Field(default=None, description="where the paper states it, with its numbers")


@dataclass(frozen=True)
class Comparison:
    """A validated comparison: the keys it varies (shown as text) and the ones held fixed."""

    spec: ComparisonSpec
    keys: tuple[str, ...]
    baseline: dict[str, str]
    treatment: dict[str, str]
    active: bool
    """False when the chosen profile sweeps none of the baseline or treatment values (nothing to compare)."""


def parse_comparisons(raw: Any, axes: list[Any], all_values: dict[str, set[str]], metrics: tuple[str, ...],
                      show: Any, per_round: bool = False) -> list[Comparison]:
    """Validate ``experiment.comparisons`` against the swept keys, every value any profile sweeps, and metrics.

    ``per_round`` (federation rows per round): ``round`` may be compared too (round r vs round 0 of the same
    runs, pairs = seeds), e.g. "IGSA falls as training proceeds"."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(f"experiment.comparisons must be a list of comparisons, not {type(raw).__name__}")
    swept = {a.key: {show(v) for v in a.values} for a in axes}
    out = []
    for i, item in enumerate(raw):
        where = f"experiment.comparisons[{i}]"
        try:
            spec = ComparisonSpec.model_validate(item)
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(item)'}: {e['msg']}" for e in err.errors())
            raise ConfigError(f"{where}: {problems} (keys: name, baseline, treatment, metric, baseline_metric, "
                              f"paired, paper_claim, margin, alpha, paper)") from None
        where = f"{where} ('{spec.name}')"
        if set(spec.baseline) != set(spec.treatment):
            raise ConfigError(f"{where}: baseline and treatment must name the same swept keys "
                              f"({sorted(spec.baseline)} vs {sorted(spec.treatment)})")
        for metric in (spec.metric, spec.baseline_metric or spec.metric):
            if metric not in metrics:
                raise ConfigError(f"{where}: unknown metric '{metric}' (known: {', '.join(metrics)})")
        if spec.paper_claim == "equal" and spec.margin is None:
            raise ConfigError(f"{where}: paper_claim 'equal' needs a margin (the largest difference that counts as equal)")
        baseline = {k: show(v) for k, v in spec.baseline.items()}
        treatment = {k: show(v) for k, v in spec.treatment.items()}
        for side, chosen in (("baseline", baseline), ("treatment", treatment)):
            for key, value in chosen.items():
                if key == "round":
                    if not per_round or not value.isdigit():
                        raise ConfigError(f"{where}.{side}.round: a round number, in a federation experiment whose "
                                          f"table or figure has rows per round (got '{value}')")
                    continue
                if key not in all_values:
                    raise ConfigError(f"{where}.{side}: '{key}' is not a swept key (swept: {', '.join(all_values)})")
                if value not in all_values[key]:
                    raise ConfigError(f"{where}.{side}.{key}: '{value}' is not a value of the sweep "
                                      f"(values: {', '.join(sorted(all_values[key]))})")
        if baseline == treatment and spec.baseline_metric in (None, spec.metric):
            raise ConfigError(f"{where}: baseline and treatment are the same cell (compare two metrics of the same "
                              f"runs with baseline_metric)")
        if not spec.paired and spec.baseline_metric not in (None, spec.metric):
            raise ConfigError(f"{where}: baseline_metric compares two metrics of the same runs, which is paired")
        active = all(k == "round" or (k in swept and baseline[k] in swept[k] and treatment[k] in swept[k])
                     for k in baseline)
        out.append(Comparison(spec, tuple(spec.baseline), baseline, treatment, active))
    names = [c.spec.name for c in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"experiment.comparisons: repeated name in {names}")
    return out


def check_paired(comparisons: list[Comparison], points: list[Any], show: Any) -> None:
    """Each baseline cell and its treatment cell must attack the same victims on the same data (paired design)."""
    for comparison in comparisons:
        if not comparison.active or not comparison.spec.paired:
            continue
        for base, treat in matched_points(comparison, points, show):
            where = (f"experiment.comparisons '{comparison.spec.name}': baseline ({base.label()}) and treatment "
                     f"({treat.label()})")
            base_victims = [v.key() for v in base.victims]
            if base_victims != [v.key() for v in treat.victims]:
                raise ConfigError(f"{where} attack different victims ({_victims(base)} vs {_victims(treat)}): a paired "
                                  f"comparison needs the same victims in both cells (fix victims.group instead of "
                                  f"'auto', or compare settings that use the same images)")
            if not _same_data(base, treat):
                raise ConfigError(f"{where} use different datasets: the same victim indices are different images, "
                                  f"so the comparison is not paired")


def _same_data(base: Any, treat: Any) -> bool:
    """The same dataset (or the same bundled photographs at another size: the same images, resized)."""
    from fl_privacy.data.skimage_data import same_content

    a = {(c.data.dataset, c.data.path) for c in base.configs.values()}
    b = {(c.data.dataset, c.data.path) for c in treat.configs.values()}
    if a == b:
        return True
    return len(a) == len(b) == 1 and next(iter(a))[1] is None and next(iter(b))[1] is None and \
        same_content(next(iter(a))[0], next(iter(b))[0])


def _victims(point: Any) -> str:
    text = "; ".join(v.describe() for v in point.victims[:3])
    return text + ("; ..." if len(point.victims) > 3 else "")


def matched_points(comparison: Comparison, points: list[Any], show: Any) -> list[tuple[Any, Any]]:
    """(baseline point, treatment point) pairs that agree on every swept key the comparison does not name."""
    def settings(point: Any, chosen: dict[str, str]) -> tuple | None:
        if any(k in point.values and show(point.values[k]) != v for k, v in chosen.items()):  # round: every point
            return None
        return tuple((k, show(v)) for k, v in point.values.items() if k not in chosen)

    treatments = {s: p for p in points if (s := settings(p, comparison.treatment)) is not None}
    return [(p, treatments[s]) for p in points
            if (s := settings(p, comparison.baseline)) is not None and s in treatments]


def sweep_values(sweep: dict[str, Any], profiles: dict[str, Any], show: Any) -> dict[str, set[str]]:
    """Every value (label) each swept key takes in the file or in any profile: a comparison may name a value that
    only some profiles run (it is inactive in the others) but not one no profile has (a typo)."""
    values: dict[str, set[str]] = {}

    def add(key: str, given: Any) -> None:
        seen = values.setdefault(str(key), set())
        if isinstance(given, dict):
            seen.update(show(label) for label in given)
        elif isinstance(given, list):
            seen.update(show(v) for v in given)

    for key, given in (sweep or {}).items():
        add(key, given)
    for profile in (profiles or {}).values():
        for key, given in ((profile or {}).get("sweep") or {}).items():
            add(key, given)
    return values
