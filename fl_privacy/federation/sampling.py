"""Which clients train in a round and which node hosts each: the server's routing and the node's check of it
(Flower-free; the glue builds and reads the messages)."""

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
    count = fed.clients_per_round()
    return sorted(int(p) for p in rng.choice(fed.num_clients, size=count, replace=False))


def host_nodes(chosen: list[int], node_partitions: dict[int, int]) -> list[tuple[int, int]]:
    """(client, node) pairs: client ``p`` trains on the node whose partition-id is ``p mod N``.

    With one node per client that is its own node; a node hosts the same clients
    every round, so client state (error feedback) stays on one node."""
    host = {partition: node for node, partition in node_partitions.items()}
    return [(pid, host[pid % len(host)]) for pid in chosen]


def partition_of_reply(reply_to: str, node: int, sent: list[tuple[str, int, int]]) -> int | None:
    """The client an error reply (it has no content) stands for: the partition of the train message it answers.

    ``sent`` is the round's routing, (message id, node, partition) per train message; a reply names
    its message by id, so two failing clients on one node stay two. Without a known id, the only client
    its node was sent this round; None when the node was sent several."""
    for message_id, _, partition in sent:
        if message_id and message_id == reply_to:
            return partition
    on_node = [partition for _, dst, partition in sent if dst == node]
    return on_node[0] if len(on_node) == 1 else None


def client_partition(node_config: dict, assigned: int | None, num_clients: int) -> int:
    """The partition this message trains: the node's own, or one it hosts (client ``p`` on node ``p mod N``)."""
    node, nodes = node_partition(node_config)
    if assigned is None:
        if nodes != num_clients:
            raise ValueError(f"{nodes} SuperNodes but federation.num_clients={num_clients} and no partition assigned")
        return node
    if int(assigned) % nodes != node:
        raise ValueError(f"client {assigned} is hosted by node {int(assigned) % nodes}, not by node {node}")
    return int(assigned)


def node_partition(node_config: dict) -> tuple[int, int]:
    """This SuperNode's ``partition-id`` and ``num-partitions``, or an error that says how to start it."""
    missing = [key for key in ("partition-id", "num-partitions") if key not in node_config]
    if missing:
        raise ValueError(
            f"this SuperNode has no {' and no '.join(missing)} in its node config: start each SuperNode with "
            f'--node-config "partition-id=<i> num-partitions=<N>" (i = 0..N-1, N = number of SuperNodes); '
            f"got node config {dict(node_config)}")
    node, nodes = int(node_config["partition-id"]), int(node_config["num-partitions"])
    if not 0 <= node < nodes:
        raise ValueError(f"node config partition-id={node} outside 0..{nodes - 1} (num-partitions={nodes}): "
                         f'use --node-config "partition-id=<i> num-partitions=<N>" with 0 <= i < N')
    return node, nodes
