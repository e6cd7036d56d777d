"""Which SuperNodes there are and which partition each holds (asked once, with a Flower query message)."""

from __future__ import annotations

import time
from logging import INFO

from flwr.app import Message, MessageType, RecordDict
from flwr.common import log
from flwr.serverapp import Grid

from fl_privacy.config import ConfigError, ExperimentConfig


def discover_nodes(grid: Grid, config: ExperimentConfig, wait: float = 30.0, settle: float = 3.0) -> dict[int, int]:
    """SuperNode id -> partition-id, asked from each node's config once (a Flower query message).

    Waits until every client has a SuperNode or the node count has not changed
    for ``settle`` s. With fewer nodes than clients, the node with partition-id
    ``i`` hosts clients ``p`` with ``p mod N == i``.
    """
    want = config.federation.num_clients
    deadline, last_change, count = time.time() + wait, time.time(), 0
    while time.time() < deadline:
        now = len(list(grid.get_node_ids()))
        if now != count:
            count, last_change = now, time.time()
        if count >= want or (count and time.time() - last_change >= settle):
            break
        time.sleep(0.2)
    if not count:
        raise ConfigError("no SuperNode connected: start the simulation with num-supernodes >= 1, or (Deployment "
                          "Engine) start SuperNodes with flower-supernode --superlink <host:port> --node-config ...")
    if count > want:
        raise ConfigError(f"{count} SuperNodes for federation.num_clients={want}: use at most {want} SuperNodes")
    queries = [Message(RecordDict(), node, MessageType.QUERY) for node in grid.get_node_ids()]
    mapping = {}
    timeout = config.federation.round_timeout
    for reply in grid.send_and_receive(queries, timeout=timeout):
        if reply.has_error():
            raise RuntimeError(f"SuperNode {reply.metadata.src_node_id} failed to describe itself: {reply.error.reason}")
        mapping[reply.metadata.src_node_id] = int(reply.content["node"]["partition-id"])
    if len(mapping) < count:
        raise ConfigError(f"only {len(mapping)} of {count} SuperNodes answered within federation.round_timeout="
                          f"{timeout:g} s (client processes may still be starting): raise federation.round_timeout")
    if sorted(mapping.values()) != list(range(len(mapping))):
        raise RuntimeError(f"SuperNodes report partition ids {sorted(mapping.values())}, expected 0..{len(mapping) - 1}")
    if count != want:
        log(INFO, "fl-privacy: %d clients on %d SuperNodes (client p trains on the node with partition-id p mod %d)",
            want, count, count)
    return mapping
