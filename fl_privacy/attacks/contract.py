"""The attack contract: what every registered attack declares, takes and returns.

An attack is pure: it sees one ``Observation`` (what the threat model grants the server)
and its options, never the dataset loader or the federation, and returns an
``AttackResult``. The evaluator (``fl_privacy.audit``) scores that result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch

from fl_privacy.attacks.threat import Observation

Family = Literal["GIA-O", "GIA-L", "label", "MIA", "aggregate"]
"""GIA-O: pixel-space inversion; GIA-L: latent-space inversion (needs a generator); label: label inference;
MIA: membership inference; aggregate: unmixes an aggregated update (e.g. the Cocktail Party Attack)."""
UpdateKind = Literal["fedsgd", "fedavg"]
Observed = Literal["update", "aggregate"]


class AttackResult(Protocol):
    """What the evaluator reads from any attack's outcome (``GIAResult`` and ``CocktailPartyResult`` are ones)."""

    images: torch.Tensor
    labels: torch.Tensor
    trace: Sequence[float]
    objective: float
    iterations: int
    seconds_per_iteration: float
    restart_objectives: Sequence[float]


class Reconstruct(Protocol):
    """``reconstruct(observation, options, device, progress, **needs)``; ``needs`` holds what ``AttackSpec``
    declares beyond the observation (``generator=(module, info)`` for attacks with ``needs_generator``)."""

    def __call__(self, observation: Observation, options: Any, device: torch.device | str | None,
                 progress: bool, /, **needs: Any) -> AttackResult: ...


@dataclass(frozen=True)
class AttackSpec:
    """One registered attack: its name, family, what it needs, its options and how it runs."""

    name: str
    family: Family
    options: Callable[..., Any]
    """``options(**overrides)``: the attack's validated options (its preset with the overrides applied);
    unknown fields raise ``ValueError`` naming the allowed ones. The evaluator passes ``seed``,
    ``model_mode`` and the ``attack.gia.*`` overrides, and its shared pre-run checks read the options'
    ``labels`` and ``label_method`` ("none" for an attack that recovers no labels)."""
    reconstruct: Reconstruct
    summary: str = ""
    updates: frozenset[UpdateKind] = frozenset({"fedsgd", "fedavg"})
    """Which client updates it can attack (Dimitrov's attack simulates local epochs: FedAvg only)."""
    observes: frozenset[Observed] = frozenset({"update", "aggregate"})
    """Which threat observations it accepts (``attack.threat.observes``)."""
    needs_generator: bool = False
    """True when it searches a generator's latent space (``attack.generator``, passed as ``generator=``)."""
    reconstruct_batch: Callable[..., list[AttackResult]] | None = None
    """Optional: attack several victims of one global model as one problem (same results as one by one)."""
    options_fields: tuple[str, ...] = field(default=())
    """The option names ``options`` accepts (documentation and config help)."""
