"""The aggregation the recording server wraps, chosen by ``federation.strategy``."""

from __future__ import annotations

from typing import Any

from flwr.app import MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAdam, FedAvgM, FedProx, Strategy

from fl_privacy.config import ExperimentConfig
from fl_privacy.federation.server_update import ServerUpdate
from strategies.streaming_fedavg import StreamingFedAvg


def _no_metric_average(records: list[RecordDict], weighted_by_key: str) -> MetricRecord:
    """The recording server computes the train metrics itself."""
    return MetricRecord({})


def inner_strategy(config: ExperimentConfig, server: ServerUpdate) -> Strategy:
    """``fedavg``: this app's streaming FedAvg / FedSGD (defense server steps, central DP); the others are
    Flower's, with the config's hyperparameters (Flower's defaults for the rest)."""
    fed = config.federation
    if fed.strategy == "fedavg":
        return StreamingFedAvg(server)
    # the recording server samples and routes the clients itself: the inner strategy may sample every node
    common: dict[str, Any] = {"fraction_train": 1.0, "fraction_evaluate": 0.0, "min_train_nodes": 1,
                              "min_evaluate_nodes": 0, "min_available_nodes": 1,
                              "train_metrics_aggr_fn": _no_metric_average}
    if fed.strategy == "fedprox":
        return FedProx(**common, proximal_mu=fed.proximal_mu)
    if fed.strategy == "fedadam":
        return FedAdam(**common, **({"eta": fed.server_lr} if fed.server_lr is not None else {}))
    if fed.strategy == "fedavgm":
        return FedAvgM(**common, server_learning_rate=fed.server_lr if fed.server_lr is not None else 1.0,
                       server_momentum=fed.server_momentum)
    raise ValueError(f"unknown federation.strategy {fed.strategy!r}")
