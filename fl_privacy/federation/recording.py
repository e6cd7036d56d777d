"""What the curious server keeps: the updates of chosen victims, as it received them.

Only victims of attacked rounds are recorded (to disk, one file each), so
server memory does not grow with the number of clients or rounds. Ground truth
(the victim's sample indices) is written by the evaluator side into a separate
file that attacks never read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from fl_privacy.config import ExperimentConfig
from fl_privacy.reporting import RunDirectory
from fl_privacy.reporting.records import AttackOutcome, VictimEntry

Tensors = dict[str, torch.Tensor]


@dataclass
class RecordedUpdate:
    """The server's view of one client's update in one round (after the client's defenses)."""

    server_round: int
    partition_id: int
    kind: Literal["gradient", "delta"]
    """``gradient`` (FedSGD) or ``delta = w_client - w_global`` (FedAvg)."""
    global_state: Tensors
    """Parameters and buffers of the global model exactly as sent to the client."""
    update: Tensors
    """Per parameter: the gradient (FedSGD) or ``w_client - w_global`` (FedAvg)."""
    buffers: Tensors
    """Buffers the client sent back (BatchNorm running statistics after its training)."""
    num_examples: int
    metadata: dict[str, Any] = field(default_factory=dict)
    """Public metadata: the training settings the server announced and the defenses' descriptions."""

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(asdict(self), path)

    @classmethod
    def load(cls, path: Path) -> RecordedUpdate:
        return cls(**torch.load(path, weights_only=True))

    @classmethod
    def from_reply(
        cls, config: ExperimentConfig, server_round: int, partition_id: int, sent: Tensors, received: Tensors,
        param_names: list[str], num_examples: int,
    ) -> RecordedUpdate:
        """The server's view of one reply: the gradient or ``w_client - w_global``, and the buffers."""
        params = {k: received[k] for k in param_names}
        buffers = {k: v for k, v in received.items() if k not in params}
        if config.training.algorithm == "fedsgd":
            kind, update = "gradient", params
        else:
            kind, update = "delta", {k: v - sent[k] for k, v in params.items()}
        t = config.training
        return cls(
            server_round=server_round, partition_id=partition_id, kind=kind,
            global_state={k: v.clone() for k, v in sent.items()}, update=update, buffers=buffers,
            num_examples=num_examples,
            metadata={
                "algorithm": t.algorithm, "lr": t.lr, "local_epochs": t.local_epochs, "local_steps": t.local_steps,
                "batch_size": t.batch_size, "momentum": t.momentum, "weight_decay": t.weight_decay,
                "drop_last": t.drop_last, "model_mode": t.model_mode, "model": config.model.model_dump(), "dataset": config.data.dataset,
                "defenses": [d.model_dump() for d in config.defenses],
            },
        )


AGGREGATE_ID = -1
"""``partition_id`` of a round's aggregate (secure-aggregation threat level): no single client's."""


def aggregate_update(
    config: ExperimentConfig, server_round: int, sent: Tensors, mean: Tensors, param_names: list[str],
    num_examples: int, partitions: list[int],
) -> RecordedUpdate:
    """The server's view under secure aggregation: the round's weighted mean update, its size and who took part."""
    recorded = RecordedUpdate.from_reply(config, server_round, AGGREGATE_ID, sent, mean, param_names, num_examples)
    recorded.metadata["aggregated_partitions"] = sorted(partitions)
    return recorded


AttackHook = Callable[[RecordedUpdate], "AttackOutcome | dict[str, Any] | None"]


class RoundAttackHook:
    """An attack hook that can also take a whole round's victims at once (they share the global model, so
    an attack can batch them); calling it with one update attacks that one alone."""

    def __init__(self, attack_round: Callable[[list[RecordedUpdate]], list[dict[str, Any]]]) -> None:
        self.round = attack_round

    def __call__(self, recorded: RecordedUpdate) -> dict[str, Any]:
        return self.round([recorded])[0]


GroundTruthFn = Callable[[int, int], dict[str, Any]]
EntryFn = Callable[[RecordedUpdate, RunDirectory], VictimEntry]


def federation_entry(recorded: RecordedUpdate, run: RunDirectory) -> VictimEntry:
    """A federation victim's entry names its recorded update file and example count."""
    r, pid = recorded.server_round, recorded.partition_id
    return VictimEntry(r, pid, num_examples=recorded.num_examples,
                       update_file=str(run.update_path(r, pid).relative_to(run.root)))


class UpdateRecorder:
    """Chooses victims per round, stores their updates and ground truth, calls the attack hook.

    A federation and a one-shot attack share it; ``entry`` says how a victim is named in
    ``victims.jsonl`` (default: its update file, ``federation_entry``)."""

    def __init__(
        self,
        config: ExperimentConfig,
        run: RunDirectory,
        ground_truth: GroundTruthFn,
        attack: AttackHook | None = None,
        entry: EntryFn = federation_entry,
    ) -> None:
        self.config, self.run = config, run
        self.ground_truth = ground_truth
        self.attack = attack
        self.entry = entry
        self._chosen: set[int] = set()

    def wants(self, server_round: int, partition_id: int) -> bool:
        """Could this reply be a victim of this round? (None outside ``attack.rounds``; never under secure
        aggregation, where the server sees no single client's update.)"""
        cfg = self.config.attack
        if server_round not in cfg.rounds or not cfg.record_updates or cfg.threat.observes == "aggregate":
            return False
        return cfg.victim_ids is None or partition_id in cfg.victim_ids

    def wants_aggregate(self, server_round: int) -> bool:
        """Secure-aggregation level: record this round's aggregate (and nothing else)?"""
        cfg = self.config.attack
        return cfg.threat.observes == "aggregate" and cfg.record_updates and server_round in cfg.rounds

    def _ground_truth(self, recorded: RecordedUpdate) -> dict[str, Any]:
        """The evaluator's truth of one update; of an aggregate: every participant's, in partition order."""
        r, parts = recorded.server_round, recorded.metadata.get("aggregated_partitions")
        if parts is None:
            return self.ground_truth(r, recorded.partition_id)
        each = [self.ground_truth(r, p) for p in parts]
        return {"round": r, "partition_id": recorded.partition_id, "partitions": parts,
                "steps": [s for e in each for s in e["steps"]], "labels": [lab for e in each for lab in e["labels"]]}

    def keep_lowest(self, server_round: int, candidates: dict[int, Any]) -> dict[int, Any]:
        """With ``attack.victims = k`` (no explicit ids), keep the k lowest partition ids seen so far."""
        if self.config.attack.victim_ids is not None:
            return candidates
        keep = sorted(candidates)[: self.config.attack.victims]
        return {pid: candidates[pid] for pid in keep}

    def record_failure(self, server_round: int, partition_id: int, reason: str) -> dict[str, Any]:
        """A victim whose client failed or did not answer: reported as such, nothing attacked.

        Returns the entry as written to ``victims.jsonl`` (``VictimEntry.to_json``)."""
        entry = VictimEntry(server_round, partition_id, failed=True, reason=reason).to_json()
        self.run.append_jsonl("victims.jsonl", entry)
        return entry

    def record(self, recorded: RecordedUpdate) -> dict[str, Any]:
        """Store one victim's update and its ground truth; run the attack hook on it."""
        return self.record_round([recorded])[0]

    def record_round(self, recorded: list[RecordedUpdate]) -> list[dict[str, Any]]:
        """Store a round's victims; attack them together when the hook can (``RoundAttackHook``), else one by one.

        Returns the entries as written to ``victims.jsonl`` (``VictimEntry.to_json``), in the round record."""
        entries = []
        for rec in recorded:
            r, pid = rec.server_round, rec.partition_id
            rec.save(self.run.update_path(r, pid))
            self.run.write_json(str(self.run.ground_truth_path(r, pid).relative_to(self.run.root)),
                                self._ground_truth(rec))
            entries.append(self.entry(rec, self.run))
        if self.attack is not None and recorded:
            outcomes = self.attack.round(recorded) if isinstance(self.attack, RoundAttackHook) \
                else [self.attack(rec) for rec in recorded]
            for entry, outcome in zip(entries, outcomes):
                entry.add(outcome)
        written = [entry.to_json() for entry in entries]
        for entry in written:
            self.run.append_jsonl("victims.jsonl", entry)
        return written


def public_num_examples(config: ExperimentConfig, reported: int | None) -> int:
    """What the server knows of a client's example count: the reported one, else (withheld under DP)
    what the public config fixes: the FedSGD batch size; 0 = unknown (FedAvg)."""
    if reported is not None:
        return int(reported)
    return config.training.batch_size if config.training.algorithm == "fedsgd" else 0
