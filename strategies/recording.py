"""The curious server: any Flower strategy aggregates, this wrapper records what that strategy receives.

It routes the seeded sample of clients to the nodes hosting them, notes every
reply as the server receives it (after the clients' defenses) in the Flower-free
``RoundLedger`` (failures, train metrics, victims), and hands the inner strategy
plain replies: the arrays and one ``num-examples`` weight. Under FedSGD an inner
strategy other than ``StreamingFedAvg`` gets the weights each gradient implies
(one SGD step at ``training.lr``), since Flower's strategies aggregate weights.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Iterator
from functools import cache
from logging import INFO

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, Metadata, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fl_privacy.config import ExperimentConfig
from fl_privacy.federation.protocol import CONFIG_KEY, NUM_EXAMPLES_KEY, PARTITION_KEY, PAYLOAD_KEY, TRAIN_LOSS_KEY
from fl_privacy.federation.sampling import host_nodes, partition_of_reply, sample_clients
from fl_privacy.federation.server_round import RoundLedger
from fl_privacy.federation.server_update import ServerUpdate
from fl_privacy.sgd import apply_gradient
from strategies.streaming_fedavg import StreamingFedAvg

Tensors = dict[str, torch.Tensor]


class RecordingStrategy(Strategy):
    """Wraps ``inner``: its aggregation and server state, this app's client routing and recording."""

    def __init__(self, inner: Strategy, config: ExperimentConfig, ledger: RoundLedger, server: ServerUpdate,
                 node_partitions: dict[int, int]) -> None:
        self.inner, self.config, self.ledger, self.server = inner, config, ledger, server
        self.node_partitions = node_partitions
        self.round_offset = 0
        """Rounds finished before a resume: Flower counts from 1 again, the records keep the run's numbers."""
        self._routed: list[tuple[Metadata, int]] = []
        """This round's train messages (their metadata: the grid fills in the id when it sends) -> partition."""

    def summary(self) -> None:
        log(INFO, "\t├──> Recording server around %s", type(self.inner).__name__)
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        server_round += self.round_offset
        chosen = sample_clients(self.config, server_round)
        self.ledger.begin(server_round, arrays.to_torch_state_dict(), chosen)
        config[CONFIG_KEY] = self.config.to_json()  # clients read the run's resolved config from here
        config["server-round"] = server_round
        shared = {**self._inner_config(server_round, arrays, config, grid), **dict(config)}
        log(INFO, "configure_train: %d of %d clients on %d SuperNodes", len(chosen), self.config.federation.num_clients,
            len(self.node_partitions))
        routing = host_nodes(chosen, self.node_partitions)
        messages = [Message(RecordDict({"arrays": arrays, "config": ConfigRecord({**shared, PARTITION_KEY: pid})}),
                            node, MessageType.TRAIN)
                    for pid, node in routing]
        self._routed = [(message.metadata, pid) for message, (pid, _) in zip(messages, routing, strict=True)]
        return messages

    def _inner_config(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> dict:
        """Let the inner strategy start its round (its state, its config keys such as FedProx's
        ``proximal-mu``); its own node sampling is dropped, and the Python random state it used restored."""
        state, flower_log = random.getstate(), logging.getLogger("flwr")
        level = flower_log.level
        flower_log.setLevel(max(level, logging.WARNING))  # its "Sampled N nodes" line would contradict the routing
        try:
            messages = list(self.inner.configure_train(server_round, arrays, ConfigRecord(dict(config)), grid))
        finally:
            random.setstate(state)
            flower_log.setLevel(level)
        if not messages:
            return {}
        return {k: v for record in messages[0].content.config_records.values() for k, v in record.items()}

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        server_round += self.round_offset
        plain = self._plain_replies(server_round, replies)
        arrays, _ = self.inner.aggregate_train(server_round, plain)
        for _ in plain:  # whatever the inner strategy left unread still counts (failures, victims)
            pass
        metrics = self.ledger.finish(server_round)
        self._routed = []
        if arrays is not None:
            arrays = self._like_sent(arrays)
        return arrays, (MetricRecord(metrics) if metrics is not None else None)

    def _plain_replies(self, server_round: int, replies: Iterable[Message]) -> Iterator[Message]:
        """Note each reply in the ledger as it arrives; yield what the inner strategy aggregates."""
        convert = self.config.training.algorithm == "fedsgd" and not isinstance(self.inner, StreamingFedAvg)
        sent = self.ledger.sent
        for message in replies:
            if message.has_error():
                node = message.metadata.src_node_id
                routing = [(m.message_id, m.dst_node_id, pid) for m, pid in self._routed]
                pid = partition_of_reply(message.metadata.reply_to_message_id, node, routing)
                self.ledger.failed(server_round, pid, node, message.error.reason)
                continue
            metrics, received = message.content["metrics"], message.content["arrays"]
            del message
            pid = int(metrics[PARTITION_KEY])
            if set(received.keys()) != set(sent):
                raise ValueError(f"client {pid} sent arrays whose keys differ from the global model's")
            reported = int(metrics[NUM_EXAMPLES_KEY]) if NUM_EXAMPLES_KEY in metrics else None  # withheld under DP
            weight = self.server.weight(reported)
            decoded = cache(received.to_torch_state_dict)
            loss = float(metrics[TRAIN_LOSS_KEY]) if TRAIN_LOSS_KEY in metrics else None
            self.ledger.received(server_round, pid, reported, loss, float(metrics[PAYLOAD_KEY]), weight, decoded)
            if convert:
                received = ArrayRecord(self._implied_weights(decoded()))
            yield Message(RecordDict({"arrays": received, "metrics": MetricRecord({NUM_EXAMPLES_KEY: weight})}),
                          0, MessageType.TRAIN)

    def _implied_weights(self, gradient_reply: Tensors) -> Tensors:
        """FedSGD reply -> the weights one SGD step on it gives (buffers as sent)."""
        sent, params = self.ledger.sent, self.server.param_names
        stepped = apply_gradient(sent, {k: gradient_reply[k] for k in params}, self.config.training.lr)
        return {k: stepped[k] if k in params else gradient_reply[k] for k in sent}

    def _like_sent(self, arrays: ArrayRecord) -> ArrayRecord:
        """The inner strategy's result in the global model's key order and dtypes (integer buffers rounded)."""
        state, sent = arrays.to_torch_state_dict(), self.ledger.sent
        if list(state) == list(sent) and all(state[k].dtype == v.dtype for k, v in sent.items()):
            return arrays
        return ArrayRecord({k: (state[k].to(v.dtype) if v.dtype.is_floating_point else state[k].round().to(v.dtype))
                            for k, v in sent.items()})

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return []  # evaluation is centralized (the ServerApp's evaluate_fn); clients only train

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return None
