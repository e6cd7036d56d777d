"""The experiment file as a schema: one pydantic model per section, unknown keys refused.

This is the source of truth for what an experiment file may hold; the field descriptions are
what an error says a value must be. Rules that need more than one section (a profile's victims
merged over the file's, table keys that must be swept) are checked where those sections meet:
``victims``, ``profiles``, ``layout``. ``base`` is a run config and is checked by ``build_config``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from fl_privacy.experiments.spec.names import MODES, TABLE_STATS, close


def _listed(value: Any) -> Any:
    """One item where a list is expected is a list of one; nothing is an empty list."""
    if value is None:
        return []
    return [value] if isinstance(value, (str, int, Mapping)) and not isinstance(value, bool) else value


PositiveInt = Annotated[StrictInt, Field(ge=1)]
Keys = Annotated[list[str], BeforeValidator(_listed)]


class Section(BaseModel):
    """A section of an experiment file: every key it may hold is a field, any other key is named with a hint."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            allowed = list(cls.model_fields)
            for key in data:
                if key not in allowed:
                    raise PydanticCustomError("unknown_key", "unknown key '{key}'",
                                              {"key": str(key), "allowed": allowed})
        return data


class RandomIndices(Section):
    random: PositiveInt = Field(description="a positive integer (how many indices to draw)")
    seed: StrictInt = Field(0, description="an integer seed of the draw")


class Victims(Section):
    """``experiment.victims`` (mode attack) and a profile's changes to it; merged rules live in ``victims``."""

    split: Literal["train", "test"] | None = Field(None, description="'train' or 'test'")
    indices: Annotated[list[Annotated[StrictInt, Field(ge=0)]], Field(min_length=1)] | RandomIndices | None = Field(
        None, description="a non-empty list of sample indices or {random: N, seed: S}")
    group: PositiveInt | Literal["auto"] | None = Field(
        None, description="a positive integer or 'auto' (the images one update uses)")
    count: PositiveInt | None = Field(None, description="a positive integer (victims per point)")
    clients: list[StrictInt] | None = Field(None, min_length=1, description="a non-empty list of partition ids")


class Resources(Section):
    """What one run takes on a Ray worker (``fl-privacy run --workers``); the profile's win."""

    cpus: PositiveInt | None = Field(None, description="a whole number of CPUs >= 1 (the run's torch threads)")
    gpus: Annotated[StrictInt | StrictFloat, Field(ge=0)] | None = Field(
        None, description="a fraction of one GPU (0..1, e.g. 0.25) or a whole number of GPUs")

    @field_validator("gpus")
    @classmethod
    def _whole_above_one(cls, gpus: float | None) -> float | None:
        if gpus is not None and gpus > 1 and gpus != int(gpus):
            raise ValueError(f"must be a fraction of one GPU (0..1, e.g. 0.25) or a whole number of GPUs, not {gpus!r}")
        return gpus


class GeneratorChange(Section):
    """Arguments of ``fl_privacy.attacks.generators.train_generator`` an experiment's generator may set."""

    dataset: str | None = Field(None, description="the adversary's public data, e.g. cifar10")
    classes: list[Annotated[StrictInt, Field(ge=0)]] | None = Field(
        None, min_length=1, description="a non-empty list of class indices")
    split: Literal["train", "test"] | None = Field(None, description="'train' or 'test'")
    epochs: PositiveInt | None = Field(None, description="a positive integer")
    batch_size: PositiveInt | None = Field(None, description="a positive integer")
    nz: PositiveInt | None = Field(None, description="a positive integer")
    ngf: PositiveInt | None = Field(None, description="a positive integer")
    ndf: PositiveInt | None = Field(None, description="a positive integer")
    lr: StrictFloat | StrictInt | None = None
    beta1: StrictFloat | StrictInt | None = None
    conditional: StrictBool | None = None
    max_samples: PositiveInt | None = Field(None, description="a positive integer")
    max_steps: PositiveInt | None = Field(None, description="a positive integer")
    seed: StrictInt | None = None


GENERATOR_KEYS = tuple(GeneratorChange.model_fields)


class Table(Section):
    rows: Keys = Field(default_factory=list, description="a swept key or a list of them")
    columns: Keys = Field(default_factory=list, description="a swept key or a list of them")
    metrics: Keys = Field(default_factory=list, description="a metric name or a list of them")
    title: str | None = Field(None, description="a text")
    stats: Keys = Field(default_factory=lambda: ["mean"], description=f"one or more of {', '.join(TABLE_STATS)}")

    @field_validator("stats")
    @classmethod
    def _known_stats(cls, stats: list[str]) -> list[str]:
        if not stats or len(set(stats)) != len(stats) or any(s not in TABLE_STATS for s in stats):
            raise ValueError(f"{stats!r}: choose from {', '.join(TABLE_STATS)} (each once)")
        return stats


class Figure(Section):
    kind: Literal["line", "bar", "scatter"] = Field(
        "line", description="line (x a swept key), bar (x a swept key, SoK Fig. 13) or scatter (x a metric, "
                            "one point per setting: SoK Fig. 15's privacy-utility plot)")
    error: Literal["ci95", "std"] = Field(
        "ci95", description="ci95 (95% BCa bootstrap CI of the mean, as the tables) or std")
    x: str | None = Field(None, description="one swept key (or round in mode federation); a metric for kind scatter")
    y: Keys = Field(default_factory=list, description="a metric name or a list of them")
    hue: Keys = Field(default_factory=list, description="a swept key or a list of them")
    title: str | None = Field(None, description="a text")
    name: str | None = Field(None, description="a text (the figure's file name)")
    logx: StrictBool = Field(False, description="true or false")
    logy: StrictBool = Field(False, description="true or false")


Seeds = Annotated[list[StrictInt], BeforeValidator(_listed), Field(min_length=1)]


def _unique_seeds(seeds: list[int] | None) -> list[int] | None:
    if seeds is not None and len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {seeds} repeats a seed")
    return seeds


class Profile(Section):
    """A named set of changes (``--profile``): config overrides and replacements of experiment settings."""

    description: str | None = Field(None, description="a text")
    set: dict[str, Any] | None = Field(None, description="config keys (flat or nested) applied to every point")
    victims: Victims | None = None
    sweep: dict[str, Any] | None = Field(None, description="new values for keys swept in experiment.sweep")
    seeds: Seeds | None = Field(None, description="a non-empty list of integers")
    generators: dict[str, GeneratorChange | None] | None = None
    resources: Resources | None = None

    _seeds = field_validator("seeds")(_unique_seeds)


class ExperimentSection(Section):
    """The ``experiment`` section: what to sweep, how often, whom to attack, and how to report it."""

    name: str | None = Field(None, description="a text (the runs' name and the output folder's)")
    question: str | None = Field(None, description="a text")
    paper: str | None = Field(None, description="a text")
    notes: Annotated[list[str], BeforeValidator(_listed)] = Field(default_factory=list,
                                                                  description="a text or a list of texts")
    mode: str = Field("attack", description=f"one of {', '.join(MODES)}")
    victims: Victims | None = None
    sweep: dict[str, Any] | None = Field(None, description="config key -> list of values, or axis -> labelled sets")
    seeds: Seeds = Field(default_factory=lambda: [0], description="a non-empty list of integers")
    table: Annotated[list[Table], BeforeValidator(_listed)] = Field(default_factory=list)
    figure: Annotated[list[Figure], BeforeValidator(_listed)] = Field(default_factory=list)
    generators: dict[str, GeneratorChange] | None = None
    profiles: dict[str, Profile | None] | None = None
    comparisons: list[Any] | None = Field(None, description="a list of comparisons")
    resources: Resources | None = None
    batch_victims: StrictBool = Field(
        True, description="true or false (attack mode: a point x seed's victims attacked as one batched problem "
                          "when the attack can)")

    _seeds = field_validator("seeds")(_unique_seeds)

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, mode: str) -> str:
        if mode not in MODES:
            raise ValueError(f"'{mode}' is not a mode{close(mode, MODES)} (allowed: {', '.join(MODES)})")
        return mode


EXPERIMENT_KEYS = tuple(ExperimentSection.model_fields)
