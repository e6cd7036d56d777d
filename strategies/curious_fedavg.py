"""FedAvg that aggregates honestly but records what chosen victims sent.

The strategy sees every reply exactly as the server receives it (after the
client's defenses), folds it into a running weighted mean, stores the victims'
updates through the ``UpdateRecorder`` and forgets the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from logging import INFO, WARNING
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fl_privacy.config import ExperimentConfig
from fl_privacy.defenses import dense_bytes
from fl_privacy.dp.guarantee import client_sampling, release_policy
from fl_privacy.dp.release import central_stage, client_pipeline
from fl_privacy.federation.aggregation import WeightedMean
from fl_privacy.federation.failures import RoundFailures
from fl_privacy.federation.protocol import CONFIG_KEY, PARTITION_KEY
from fl_privacy.federation.recording import RecordedUpdate, UpdateRecorder, aggregate_update, public_num_examples
from fl_privacy.sgd import apply_gradient

Tensors = dict[str, torch.Tensor]


def _no_metric_average(records: list, weighted_by_key: str) -> MetricRecord:  # noqa: ARG001
    """Flower would average partition ids too; the strategy computes its own train metrics."""
    return MetricRecord({})


def sample_clients(config: ExperimentConfig, server_round: int) -> list[int]:
    """The clients of a round, seeded by (seed, round): a fixed-size draw without replacement, or Poisson
    (each client independently with probability ``fraction_train``: what central DP's amplification assumes)."""
    fed = config.federation
    rng = np.random.default_rng([config.seed, server_round])
    if fed.sampling == "poisson":
        return [int(p) for p in np.flatnonzero(rng.random(fed.num_clients) < fed.fraction_train)]
    count = max(int(fed.num_clients * fed.fraction_train), fed.min_train_clients)
    return sorted(int(p) for p in rng.choice(fed.num_clients, size=count, replace=False))


class CuriousFedAvg(FedAvg):
    """Honest FedAvg / FedSGD aggregation plus recording of victim updates."""

    def __init__(
        self, config: ExperimentConfig, recorder: UpdateRecorder, param_names: list[str], node_partitions: dict[int, int]
    ) -> None:
        fed = config.federation
        super().__init__(
            fraction_train=fed.fraction_train, fraction_evaluate=0.0, min_train_nodes=fed.min_train_clients,
            min_evaluate_nodes=0, min_available_nodes=1, train_metrics_aggr_fn=_no_metric_average,
        )
        self.config, self.recorder = config, recorder
        self.param_names = param_names
        self.node_partitions = node_partitions
        self.pipeline = client_pipeline(config)
        """The clients' pipeline (with the DP mechanism's stage): its server steps run here."""
        self.central = central_stage(self.pipeline)
        """Central DP: clients clip, the server noises the uniformly weighted aggregate."""
        self._sent: Tensors = {}
        self.round_info: dict[int, dict[str, Any]] = {}
        self.round_offset = 0
        """Rounds finished before a resume: Flower counts from 1 again, the records keep the run's numbers."""
        self.on_reply: Callable[[int, int, int, int], None] | None = None
        """Called after each reply with (round, clients done, failed, planned): progress lines."""

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        server_round += self.round_offset
        self._sent = arrays.to_torch_state_dict()  # the global model exactly as sent
        self.round_info[server_round] = {"started": time.time()}
        config[CONFIG_KEY] = self.config.to_json()  # clients read the run's resolved config from here
        config["server-round"] = server_round
        # seeded client sampling (Flower's samples with Python's global random state): runs and resumes repeat
        messages = self._virtual_clients(server_round, arrays, config)
        planned = [int(m.content[self.configrecord_key][PARTITION_KEY]) for m in messages]
        self.round_info[server_round]["failures_of_round"] = RoundFailures(sorted(planned))
        return messages

    def _report(self, server_round: int, done: int, failures: RoundFailures) -> None:
        if self.on_reply is not None:
            self.on_reply(server_round, done, len(failures.errors), len(failures.planned))

    def _victims_among(self, server_round: int, failed: list[int]) -> list[int]:
        """Failed partitions that would have been this round's victims (explicit ids, or the lowest planned)."""
        planned = self.round_info[server_round]["failures_of_round"].planned
        wanted = [p for p in planned if self.recorder.wants(server_round, p)]
        if self.config.attack.victim_ids is None:
            wanted = sorted(wanted)[: self.config.attack.victims]
        return [p for p in wanted if p in failed]

    def _server_step(self, aggregated: Tensors, num_clients: int, server_round: int = 0) -> Tensors:
        """Server-side help of defenses that need it (GradDefense's compensation, central DP noise), on the
        aggregated update."""
        if not self.pipeline.needs_server:
            return aggregated
        fedsgd = self.config.training.algorithm == "fedsgd"
        update = {k: aggregated[k] if fedsgd else aggregated[k] - self._sent[k] for k in self.param_names}
        changes: list[str] = []  # buffer changes the clients clipped and noised with their update
        if self.central is not None:  # the clipped sum over a fixed denominator (McMahan et al. 2018)
            if release_policy(self.config)[0] == "noise":
                changes = [k for k, v in aggregated.items() if k not in update and v.is_floating_point()]
                update.update({k: aggregated[k] - self._sent[k] for k in changes})
            denominator = client_sampling(self.config)[2] or 1
            update = {k: v * (num_clients / denominator) for k, v in update.items()}
            self.central.start_round(self.config.seed, server_round, denominator)
        update = self.pipeline.server_step(update, num_clients)
        update = {k: v if (fedsgd and k not in changes) else self._sent[k] + v for k, v in update.items()}
        return {**aggregated, **update}

    def _noise_only(self, server_round: int) -> ArrayRecord | None:
        """Central DP with nobody sampled (Poisson): the mechanism still releases its noise on an empty sum."""
        if self.central is None:
            return None
        fedsgd = self.config.training.algorithm == "fedsgd"
        empty = {k: torch.zeros_like(v) if (fedsgd and k in self.param_names) else v.clone()
                 for k, v in self._sent.items()}
        aggregated = self._server_step(empty, 0, server_round)
        if fedsgd:
            aggregated = {**apply_gradient(self._sent, aggregated, self.config.training.lr),
                          **{k: v for k, v in aggregated.items() if k not in self.param_names}}
        return ArrayRecord({k: aggregated[k] for k in self._sent})

    def _virtual_clients(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord) -> list[Message]:
        """Client ``p`` trains on the node whose partition-id is ``p mod N`` (its own node with one per client).

        Each message names the partition it must train; a node hosts the same
        clients every round, so client state (error feedback) stays on one node.
        Sampling is seeded by (seed, round).
        """
        host = {partition: node for node, partition in self.node_partitions.items()}
        nodes = len(host)
        fed = self.config.federation
        chosen = sample_clients(self.config, server_round)
        count = len(chosen)
        log(INFO, "configure_train: %d of %d clients on %d SuperNodes", count, fed.num_clients, nodes)
        messages = []
        for pid in chosen:
            per_client = ConfigRecord({**dict(config), PARTITION_KEY: pid})
            content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: per_client})
            messages.append(Message(content, host[pid % nodes], MessageType.TRAIN))
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Fold replies into a running weighted mean one at a time (``replies`` may be a stream).

        Victim candidates (at most ``attack.victims`` of them, lowest partition ids
        first) are the only updates kept until the stream ends.
        """
        server_round += self.round_offset
        mean, loss, loss_weight, pids, payload = WeightedMean(), 0.0, 0.0, [], 0.0
        examples = 0  # what the server knows of the round's example count (withheld counts: the public ones)
        round_failures: RoundFailures = self.round_info[server_round]["failures_of_round"]
        candidates: dict[int, tuple[Tensors, int]] = {}
        for message in replies:
            if message.has_error():
                node = message.metadata.src_node_id
                hosted = len(self.node_partitions) == self.config.federation.num_clients
                pid = self.node_partitions.get(node) if hosted else None
                reason = round_failures.add_error(pid, node, message.error.reason)
                who = f"client {pid}" if pid is not None else f"a client on node {node}"
                log(WARNING, "round %d: %s failed: %s", server_round, who, reason)
                self._report(server_round, len(pids), round_failures)
                continue
            metrics = message.content["metrics"]
            pid = int(metrics["partition-id"])
            reported = int(metrics["num-examples"]) if "num-examples" in metrics else None  # withheld under DP
            weight = 1.0 if (reported is None or self.central is not None) else float(reported)
            received = message.content["arrays"].to_torch_state_dict()
            del message
            if received.keys() != self._sent.keys():
                raise ValueError(f"client {pid} sent arrays whose keys differ from the global model's")
            mean.add(received, weight)
            if "train-loss" in metrics:
                loss, loss_weight = loss + weight * float(metrics["train-loss"]), loss_weight + weight
            pids.append(pid)
            examples += public_num_examples(self.config, reported)
            payload += float(metrics["payload-bytes"])
            if self.recorder.wants(server_round, pid):
                candidates[pid] = (received, public_num_examples(self.config, reported))
                candidates = self.recorder.keep_lowest(server_round, candidates)
            self._report(server_round, len(pids), round_failures)
        failed = round_failures.record(pids)
        log(INFO, "aggregate_train: %d replies, %d failures", len(pids), failed["failures"])
        self.round_info[server_round].update(clients=len(pids), partitions=sorted(pids), **failed)
        failed_victims = [self.recorder.record_failure(server_round, pid, round_failures.reason(pid))
                          for pid in self._victims_among(server_round, failed["failed_partitions"])]
        if not pids:
            self.round_info[server_round].update(victims=failed_victims, recorded=[])
            return self._noise_only(server_round), None
        recorded = self.recorder.record_round([  # the round's victims share the global model: attacked together
            RecordedUpdate.from_reply(self.config, server_round, pid, self._sent, received, self.param_names, weight)
            for pid, (received, weight) in sorted(candidates.items())
        ])
        mean_state = mean.result()
        if self.recorder.wants_aggregate(server_round):  # secure aggregation: the mean is all the server sees
            recorded.append(self.recorder.record(aggregate_update(
                self.config, server_round, self._sent, mean_state, self.param_names, examples, pids)))
        aggregated = self._server_step(mean_state, len(pids), server_round)
        if self.config.training.algorithm == "fedsgd":  # clients sent gradients: the server takes the SGD step
            aggregated = {**apply_gradient(self._sent, aggregated, self.config.training.lr),
                          **{k: v for k, v in aggregated.items() if k not in self.param_names}}
        aggregated = {k: aggregated[k] for k in self._sent}
        train_loss = loss / loss_weight if loss_weight else None  # None: clients withheld their loss
        self.round_info[server_round].update(
            train_loss=train_loss, recorded=[r["partition_id"] for r in recorded], victims=recorded + failed_victims,
            payload_kib=payload / len(pids) / 1024,
            compression=dense_bytes({k: self._sent[k] for k in self.param_names}) * len(pids) / payload,
        )
        metrics = {"clients": len(pids), **({"train-loss": train_loss} if train_loss is not None else {})}
        return ArrayRecord(aggregated), MetricRecord(metrics)
