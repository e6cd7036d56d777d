"""The defense contract: a stage maps the shared update to what is actually sent.

A defense runs on the client after local training (``when = "update"``) and sees
only what the client has: its update, the global model, its own private batch
and its own persistent state (error feedback, warm starts). What it returns is
exactly what the server receives and records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel

from fl_privacy.defenses.params import validate_params

Update = dict[str, torch.Tensor]


@dataclass
class DefenseContext:
    """What a client-side defense may use besides the update itself."""

    kind: Literal["gradient", "delta"]
    """``gradient`` (FedSGD) or ``delta = w_local - w_global`` (FedAvg)."""
    model: torch.nn.Module | None = None
    """The global model as received (sensitivity-based defenses need it)."""
    inputs: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    """The client's own training samples (defenses run on the client)."""
    generator: torch.Generator = field(default_factory=torch.Generator)
    """Seeded per client and round, so that defended runs are reproducible."""
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    """Client state kept across rounds (error feedback); keys are namespaced per stage."""


class Defense:
    """Base class: subclasses set ``name``, declare ``Params`` and implement ``apply``."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel] | None] = None
    """The typed parameters (a ``DefenseParams``: unknown names refused, types strict), checked before the
    stage is built, so a bad config names the defense, the parameter and what it accepts. None: the
    constructor takes its keyword arguments unchecked (every built-in defense declares its ``Params``)."""
    when: ClassVar[Literal["update"]] = "update"
    needs_server: ClassVar[bool] = False
    """True when the server must help (e.g. compensation after aggregation)."""
    keeps_encoding: ClassVar[bool] = False
    """True when applying the stage after an encoding one keeps that encoding (e.g. clipping only rescales)."""
    reads_private_data: ClassVar[bool] = False
    """True when the stage reads the client's private batch (``context.inputs``/``labels``): after a DP stage
    it voids the guarantee, which holds only for post-processing (``fl_privacy.dp.guarantee``)."""

    def __init__(self, **params: Any) -> None:
        self.params = params

    @classmethod
    def validate(cls, **params: Any) -> Any:
        """``params`` checked against ``Params`` (a ``ValueError`` naming the defense and the parameter)."""
        return params if cls.Params is None else validate_params(cls.name, cls.Params, params)

    def apply(self, update: Update, context: DefenseContext) -> Update:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Exact parameters, recorded in the run report."""
        return {"name": self.name, **self.params}

    def payload_bytes(self, update: Update) -> int | None:
        """Bytes a client would send to encode ``update`` (this stage's output); None = dense float32."""
        return None

    def server_step(self, aggregated: Update, num_clients: int) -> Update:
        """Server-side help after aggregation (``needs_server`` defenses, e.g. GradDefense's compensation)."""
        return aggregated


DEFENSES: dict[str, type[Defense]] = {}


def register_defense(cls: type[Defense]) -> type[Defense]:
    """Class decorator: make a defense available by its ``name`` in configs; a name already taken is refused."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} must set a class attribute 'name'")
    if cls.name in DEFENSES:
        raise ValueError(f"defense '{cls.name}' is already registered ({DEFENSES[cls.name].__name__}): "
                         "choose another name")
    DEFENSES[cls.name] = cls
    return cls


class DefensePipeline:
    """Stages applied in config order; an empty pipeline sends the update unchanged."""

    def __init__(self, stages: list[Defense]) -> None:
        self.stages = stages

    def __call__(self, update: Update, context: DefenseContext) -> Update:
        for index, stage in enumerate(self.stages):
            prefix = f"{index}:{stage.name}/"  # each stage owns its slice of the client state
            own = {k[len(prefix):]: v for k, v in context.state.items() if k.startswith(prefix)}
            update = stage.apply(update, replace(context, state=own))
            context.state.update({prefix + k: v for k, v in own.items()})
        return update

    def __len__(self) -> int:
        return len(self.stages)

    def payload_bytes(self, update: Update) -> int:
        """Bytes on the wire for the final ``update``: the last encoding stage (sparse, low-rank, quantized)
        decides unless a later stage densifies it again (noise does; clipping keeps it); else dense float32."""
        size = dense_bytes(update)
        for stage in self.stages:
            encoded = stage.payload_bytes(update)
            if encoded is not None:
                size = int(encoded)
            elif not stage.keeps_encoding:
                size = dense_bytes(update)
        return size

    @property
    def needs_server(self) -> bool:
        return any(stage.needs_server for stage in self.stages)

    def server_step(self, aggregated: Update, num_clients: int) -> Update:
        for stage in self.stages:
            if stage.needs_server:
                aggregated = stage.server_step(aggregated, num_clients)
        return aggregated

    def describe(self) -> list[dict[str, Any]]:
        return [stage.describe() for stage in self.stages]


def dense_bytes(update: Update) -> int:
    """Size of the update sent as dense float32 (the baseline of compression ratios)."""
    return 4 * sum(v.numel() for v in update.values())


def build_pipeline(specs: list[Any] | None) -> DefensePipeline:
    """Build stages from config specs (``DefenseSpec`` or dicts with ``name`` and parameters)."""
    stages = []
    for spec in specs or []:
        params: Mapping[str, Any] = spec.model_dump() if hasattr(spec, "model_dump") else dict(spec)
        params = dict(params)
        name = params.pop("name", None)
        if name not in DEFENSES:
            available = ", ".join(sorted(DEFENSES)) or "none registered yet"
            raise ValueError(f"unknown defense '{name}' (available: {available})")
        DEFENSES[name].validate(**params)
        try:
            stages.append(DEFENSES[name](**params))
        except TypeError as err:
            raise ValueError(f"defense '{name}': {err}") from None
    return DefensePipeline(stages)

