"""Typed records of a run: an attack's outcome on one victim, a victim entry, a round record.

They are written as JSON lines (``victims.jsonl``, ``rounds.jsonl``) with the
keys and order of ``to_json``; ``from_json`` reads them back, so run
directories written before these types existed still load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fl_privacy.metrics.catalog import ATTACK_PREFIX, RECONSTRUCTION, SCALE_FREE, VICTIM_SCORES, numeric_values


@dataclass
class AttackOutcome:
    """One reconstruction scored against the victim's ground truth, and where its pictures are."""

    attack: str
    images: int
    scores: dict[str, Any]
    """``VICTIM_SCORES`` of the catalog, in its order (None where a score is unavailable)."""
    lpips: str
    """``alex`` or ``unavailable`` (no pretrained backbone)."""
    psnr: list[float]
    ssim: list[float]
    ssim_window: Any
    labels_true: list[int]
    labels_used: list[int]
    objective: float
    iterations: int
    iterations_used: int
    seconds_per_iteration: float
    restarts: int
    notes: list[str]
    corr_mean: float
    aggregated_clients: int | None
    grid: str
    trace: str | None
    seconds: float | None = None
    """Wall time of the (possibly batched) attack; set by the caller that timed it."""
    victims_batched: int | None = None

    def to_json(self) -> dict[str, Any]:
        out = {"attack": self.attack, "images": self.images, **{k: self.scores.get(k) for k in VICTIM_SCORES},
               "lpips": self.lpips, "psnr": self.psnr, "ssim": self.ssim, "ssim_window": self.ssim_window,
               "labels_true": self.labels_true, "labels_used": self.labels_used, "objective": self.objective,
               "iterations": self.iterations, "iterations_used": self.iterations_used,
               "seconds_per_iteration": self.seconds_per_iteration, "restarts": self.restarts, "notes": self.notes,
               SCALE_FREE: self.corr_mean, "aggregated_clients": self.aggregated_clients, "grid": self.grid,
               "trace": self.trace}
        if self.seconds is not None:
            out.update(seconds=self.seconds, victims_batched=self.victims_batched)
        return out


_PLACE = ("num_examples", "update_file", "split", "indices")


@dataclass
class VictimEntry:
    """One victim of a round: which update, and what the analyses (inversion, MIA) found in it.

    A federation victim names its recorded update (``num_examples``, ``update_file``);
    a one-shot victim its samples (``split``, ``indices``). A failed client's entry
    has ``failed`` and ``reason`` and nothing else.
    """

    round: int
    partition_id: int
    num_examples: int | None = None
    update_file: str | None = None
    split: str | None = None
    indices: list[int] | None = None
    failed: bool = False
    reason: str | None = None
    analyses: dict[str, Any] = field(default_factory=dict)
    """The attack outcome's and the MIA's values, flat, in the order they were added."""
    warnings: list[str] = field(default_factory=list)

    def add(self, outcome: AttackOutcome | dict[str, Any] | None) -> VictimEntry:
        """Add an analysis' values (an attack outcome or a plain mapping); returns self."""
        if isinstance(outcome, AttackOutcome):
            outcome = outcome.to_json()
        self.analyses.update(outcome or {})
        return self

    @property
    def attacked(self) -> bool:
        """An inversion was scored on this victim (reports list these)."""
        return "psnr_mean" in self.analyses

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"round": self.round, "partition_id": self.partition_id}
        if self.failed:
            return {**out, "failed": True, "reason": self.reason}
        out.update({k: getattr(self, k) for k in _PLACE if getattr(self, k) is not None})
        out.update(self.analyses)
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VictimEntry:
        known = {"round", "partition_id", "failed", "reason", "warnings", *_PLACE}
        return cls(round=data["round"], partition_id=data["partition_id"],
                   **{k: data[k] for k in _PLACE if k in data}, failed=bool(data.get("failed", False)),
                   reason=data.get("reason"), warnings=list(data.get("warnings", [])),
                   analyses={k: v for k, v in data.items() if k not in known})


@dataclass
class RoundRecord:
    """One line of ``rounds.jsonl``: the round, its victims and the round's metrics (flat)."""

    round: int
    victims: list[VictimEntry] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of_one_victim(cls, entry: VictimEntry) -> RoundRecord:
        """A one-shot attack's round: its victim and the victim's scores as ``attack_*``."""
        return cls(entry.round, [entry], numeric_values(entry.analyses, RECONSTRUCTION, ATTACK_PREFIX))

    def to_json(self) -> dict[str, Any]:
        return {"round": self.round, "victims": [v.to_json() for v in self.victims], **self.metrics}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RoundRecord:
        return cls(round=data["round"], victims=[VictimEntry.from_json(v) for v in data.get("victims") or []],
                   metrics={k: v for k, v in data.items() if k not in ("round", "victims")})
