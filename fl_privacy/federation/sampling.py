"""Which clients train in a round, and which node hosts each (Flower-free; the glue builds the messages)."""

from __future__ import annotations

import numpy as np

from fl_privacy.config import ExperimentConfig


def sample_clients(config: ExperimentConfig, server_round: int) -> list[int]:
    """The clients of a round, seeded by (seed, round): a fixed-size draw without replacement, or Poisson
    (each client independently with probability ``fraction_train``: what central DP's amplification assumes).

    Seeded rather than Flower's node sampling (Python's global random state), so runs and resumes repeat."""
    fed = config.federation
    rng = np.random.default_rng([config.seed, server_round])
    if fed.sampling == "poisson":
        return [int(p) for p in np.flatnonzero(rng.random(fed.num_clients) < fed.fraction_train)]
    count = max(int(fed.num_clients * fed.fraction_train), fed.min_train_clients)
    return sorted(int(p) for p in rng.choice(fed.num_clients, size=count, replace=False))


def host_nodes(chosen: list[int], node_partitions: dict[int, int]) -> list[tuple[int, int]]:
    """(client, node) pairs: client ``p`` trains on the node whose partition-id is ``p mod N``.

    With one node per client that is its own node; a node hosts the same clients
    every round, so client state (error feedback) stays on one node."""
    host = {partition: node for node, partition in node_partitions.items()}
    return [(pid, host[pid % len(host)]) for pid in chosen]


def partition_of_node(node: int, node_partitions: dict[int, int], num_clients: int) -> int | None:
    """The client a failed reply came from, when each node hosts exactly one client (else unknown: None)."""
    hosted = len(node_partitions) == num_clients
    return node_partitions.get(node) if hosted else None
