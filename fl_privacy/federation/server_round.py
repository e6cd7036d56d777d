"""What the curious server notes in a round, reply by reply: who answered, who failed, victims, train metrics.

Flower-free: the recording strategy (``strategies.recording``) reads each Flower
reply and hands the plain values here; the aggregation itself is the wrapped
strategy's job. Victim candidates are the only updates kept until the round ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from logging import INFO, WARNING, getLogger
from typing import Any

import torch

from fl_privacy.config import ExperimentConfig
from fl_privacy.defenses import dense_bytes
from fl_privacy.federation.aggregation import WeightedMean
from fl_privacy.federation.failures import RoundFailures
from fl_privacy.federation.recording import RecordedUpdate, UpdateRecorder, aggregate_update, public_num_examples

Tensors = dict[str, torch.Tensor]
ReplyProgress = Callable[[int, int, int, int], None]
"""Called after each reply with (round, clients done, failed, planned): progress lines."""

log = getLogger("flwr")  # the ServerApp's log, where Flower prints its own lines


@dataclass
class _OpenRound:
    """Running totals of the round being received."""

    failures: RoundFailures
    aggregate: WeightedMean | None
    """The mean of the replies, kept only when the round's aggregate is recorded (secure aggregation)."""
    pids: list[int] = field(default_factory=list)
    loss: float = 0.0
    loss_weight: float = 0.0
    examples: int = 0
    """What the server knows of the round's example count (withheld counts: the public ones)."""
    payload: float = 0.0
    candidates: dict[int, tuple[Tensors, int]] = field(default_factory=dict)


class RoundLedger:
    """Per-round bookkeeping of the curious server; ``round_info[r]`` feeds the round's record."""

    def __init__(self, config: ExperimentConfig, recorder: UpdateRecorder | None, param_names: list[str]) -> None:
        self.config, self.recorder, self.param_names = config, recorder, param_names
        self.round_info: dict[int, dict[str, Any]] = {}
        self.on_reply: ReplyProgress | None = None
        self.sent: Tensors = {}
        """The global model exactly as sent this round."""
        self._open: _OpenRound | None = None

    def begin(self, server_round: int, sent: Tensors, planned: list[int]) -> None:
        """A round starts: the model sent and the clients asked to train."""
        self.sent = sent
        failures = RoundFailures(sorted(planned))
        self.round_info[server_round] = {"started": time.time(), "failures_of_round": failures}
        keep_mean = self.recorder is not None and self.recorder.wants_aggregate(server_round)
        self._open = _OpenRound(failures, WeightedMean() if keep_mean else None)

    def wants(self, server_round: int, pid: int) -> bool:
        """Whether this client's update may be recorded (so the glue decodes it)."""
        return self.recorder is not None and self.recorder.wants(server_round, pid)

    def failed(self, server_round: int, pid: int | None, node: int, reason: str) -> None:
        """An error reply, by the partition its train message asked for (None: the reply names no message)."""
        opened = self._round()
        reason = opened.failures.add_error(pid, node, reason)
        who = f"client {pid}" if pid is not None else f"a client on node {node}"
        log.log(WARNING, "round %d: %s failed: %s", server_round, who, reason)
        self._report(server_round)

    def received(self, server_round: int, pid: int, reported: int | None, train_loss: float | None,
                 payload_bytes: float, weight: float, arrays: Callable[[], Tensors]) -> None:
        """A usable reply: its client, example count (None: withheld), loss, wire size, aggregation weight;
        ``arrays`` decodes what it sent (only called when the update is recorded)."""
        opened = self._round()
        if train_loss is not None:
            opened.loss, opened.loss_weight = opened.loss + weight * train_loss, opened.loss_weight + weight
        opened.pids.append(pid)
        public = public_num_examples(self.config, reported)
        opened.examples += public
        opened.payload += payload_bytes
        if opened.aggregate is not None:
            opened.aggregate.add(arrays(), weight)
        if self.wants(server_round, pid):
            assert self.recorder is not None
            opened.candidates[pid] = (arrays(), public)
            opened.candidates = self.recorder.keep_lowest(server_round, opened.candidates)
        self._report(server_round)

    def finish(self, server_round: int) -> dict[str, Any] | None:
        """The round's replies are in: record failures and victims (attacks run here); the train metrics,
        None when nobody answered."""
        opened, self._open = self._round(), None
        pids, info = opened.pids, self.round_info[server_round]
        failed = opened.failures.record(pids)
        log.log(INFO, "aggregate_train: %d replies, %d failures", len(pids), failed["failures"])
        info.update(clients=len(pids), partitions=sorted(pids), **failed)
        failed_victims = [self.recorder.record_failure(server_round, pid, opened.failures.reason(pid))
                          for pid in self._victims_among(server_round, failed["failed_partitions"])]
        if not pids:
            info.update(victims=failed_victims, recorded=[])
            return None
        recorded = self._record(server_round, opened)
        train_loss = opened.loss / opened.loss_weight if opened.loss_weight else None  # None: withheld
        info.update(
            train_loss=train_loss, recorded=[r["partition_id"] for r in recorded], victims=recorded + failed_victims,
            payload_kib=opened.payload / len(pids) / 1024,
            compression=dense_bytes({k: self.sent[k] for k in self.param_names}) * len(pids) / opened.payload,
        )
        return {"clients": len(pids), **({"train-loss": train_loss} if train_loss is not None else {})}

    def _record(self, server_round: int, opened: _OpenRound) -> list[dict[str, Any]]:
        """Store (and attack) the round's victims; they share the global model, so they are attacked together."""
        if self.recorder is None:
            return []
        recorded = self.recorder.record_round([
            RecordedUpdate.from_reply(self.config, server_round, pid, self.sent, received, self.param_names, weight)
            for pid, (received, weight) in sorted(opened.candidates.items())
        ])
        if opened.aggregate is not None:  # secure aggregation: the mean is all the server sees
            recorded.append(self.recorder.record(aggregate_update(
                self.config, server_round, self.sent, opened.aggregate.result(), self.param_names, opened.examples,
                opened.pids)))
        return recorded

    def _victims_among(self, server_round: int, failed: list[int]) -> list[int]:
        """Failed clients that would have been this round's victims (explicit ids, or the lowest planned)."""
        if self.recorder is None:
            return []
        planned = self.round_info[server_round]["failures_of_round"].planned
        wanted = [p for p in planned if self.recorder.wants(server_round, p)]
        if self.config.attack.victim_ids is None:
            wanted = sorted(wanted)[: self.config.attack.victims]
        return [p for p in wanted if p in failed]

    def _round(self) -> _OpenRound:
        if self._open is None:
            raise RuntimeError("no round is open: begin() was not called")
        return self._open

    def _report(self, server_round: int) -> None:
        if self.on_reply is not None and self._open is not None:
            failures = self._open.failures
            self.on_reply(server_round, len(self._open.pids), len(failures.errors), len(failures.planned))
