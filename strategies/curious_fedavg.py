"""FedAvg that aggregates honestly but records what chosen victims sent.

The strategy sees every reply exactly as the server receives it (after the
client's defenses), folds it into a running weighted mean, stores the victims'
updates through the ``UpdateRecorder`` and forgets the rest.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from logging import INFO
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fl_privacy.aggregation import WeightedMean
from fl_privacy.config import ExperimentConfig
from fl_privacy.defenses import build_pipeline, dense_bytes
from fl_privacy.recording import RecordedUpdate, UpdateRecorder
from fl_privacy.training import apply_gradient

Tensors = dict[str, torch.Tensor]
CONFIG_KEY = "fl-privacy-config"
PARTITION_KEY = "partition-id"
"""Set in a train message when SuperNodes host several clients: the partition to train."""


def _no_metric_average(records: list, weighted_by_key: str) -> MetricRecord:  # noqa: ARG001
    """Flower would average partition ids too; the strategy computes its own train metrics."""
    return MetricRecord({})


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
        self.pipeline = build_pipeline(config.defenses)
        """SuperNode id -> its ``partition-id`` (from its node config, asked once at start)."""
        self._sent: Tensors = {}
        self.round_info: dict[int, dict[str, Any]] = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._sent = arrays.to_torch_state_dict()  # the global model exactly as sent
        self.round_info[server_round] = {"started": time.time()}
        config[CONFIG_KEY] = self.config.to_json()  # clients read the run's resolved config from here
        config["server-round"] = server_round
        if len(self.node_partitions) == self.config.federation.num_clients:  # one SuperNode per client
            return super().configure_train(server_round, arrays, config, grid)
        return self._virtual_clients(server_round, arrays, config)

    def _server_step(self, aggregated: Tensors, num_clients: int) -> Tensors:
        """Server-side help of defenses that need it (GradDefense's compensation), on the aggregated update."""
        if not self.pipeline.needs_server:
            return aggregated
        if self.config.training.algorithm == "fedsgd":
            update = {k: aggregated[k] for k in self.param_names}
        else:
            update = {k: aggregated[k] - self._sent[k] for k in self.param_names}
        update = self.pipeline.server_step(update, num_clients)
        if self.config.training.algorithm == "fedavg":
            update = {k: self._sent[k] + v for k, v in update.items()}
        return {**aggregated, **update}

    def _virtual_clients(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord) -> list[Message]:
        """More clients than SuperNodes: client ``p`` trains on the node whose partition-id is ``p mod N``.

        Each message names the partition it must train; a node hosts the same
        clients every round, so client state (error feedback) stays on one node.
        Sampling is seeded by (seed, round).
        """
        host = {partition: node for node, partition in self.node_partitions.items()}
        nodes = len(host)
        fed = self.config.federation
        count = max(int(fed.num_clients * fed.fraction_train), fed.min_train_clients)
        rng = np.random.default_rng([self.config.seed, server_round])
        chosen = sorted(int(p) for p in rng.choice(fed.num_clients, size=count, replace=False))
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
        mean, loss, pids, failures, payload = WeightedMean(), 0.0, [], 0, 0.0
        candidates: dict[int, tuple[Tensors, int]] = {}
        for message in replies:
            if message.has_error():
                failures += 1
                log(INFO, "aggregate_train: error from node %d: %s", message.metadata.src_node_id,
                    message.error.reason)
                continue
            metrics = message.content["metrics"]
            pid, weight = int(metrics["partition-id"]), float(metrics["num-examples"])
            received = message.content["arrays"].to_torch_state_dict()
            del message
            if received.keys() != self._sent.keys():
                raise ValueError(f"client {pid} sent arrays whose keys differ from the global model's")
            mean.add(received, weight)
            loss += weight * float(metrics["train-loss"])
            pids.append(pid)
            payload += float(metrics["payload-bytes"])
            if self.recorder.wants(server_round, pid):
                candidates[pid] = (received, int(weight))
                candidates = self.recorder.keep_lowest(server_round, candidates)
        log(INFO, "aggregate_train: %d replies, %d failures", len(pids), failures)
        if not pids:
            return None, None
        recorded = self.recorder.record_round([  # the round's victims share the global model: attacked together
            RecordedUpdate.from_reply(self.config, server_round, pid, self._sent, received, self.param_names, weight)
            for pid, (received, weight) in sorted(candidates.items())
        ])
        aggregated = self._server_step(mean.result(), len(pids))
        if self.config.training.algorithm == "fedsgd":  # clients sent gradients: the server takes the SGD step
            aggregated = {**apply_gradient(self._sent, aggregated, self.config.training.lr),
                          **{k: v for k, v in aggregated.items() if k not in self.param_names}}
        aggregated = {k: aggregated[k] for k in self._sent}
        train_loss = loss / mean.total
        self.round_info[server_round].update(
            train_loss=train_loss, clients=len(pids), failures=failures, partitions=sorted(pids),
            recorded=[r["partition_id"] for r in recorded], victims=recorded,
            payload_kib=payload / len(pids) / 1024,
            compression=dense_bytes({k: self._sent[k] for k in self.param_names}) * len(pids) / payload,
        )
        return ArrayRecord(aggregated), MetricRecord({"train-loss": train_loss, "clients": len(pids)})
