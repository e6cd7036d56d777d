"""The ClientApp: train locally on this node's partition, defend, share.

The partition comes from the node config (``partition-id``, ``num-partitions``),
or, when SuperNodes host several clients, from the message (client ``p`` is
hosted by node ``p mod N``). The run's resolved config arrives with every train
message.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fl_privacy.config import ExperimentConfig
from fl_privacy.federation.client import client_update
from fl_privacy.federation.protocol import CONFIG_KEY, NUM_EXAMPLES_KEY, PARTITION_KEY, PAYLOAD_KEY, TRAIN_LOSS_KEY
from fl_privacy.federation.run_setup import cached_setup, resolve_device, victim_steps
from fl_privacy.federation.sampling import client_partition, node_partition

STATE_KEY = "fl-privacy-defense-state"

app = ClientApp()


@lru_cache(maxsize=2)
def _config(text: str) -> ExperimentConfig:
    return ExperimentConfig.from_json(text)


@app.train()
def train(msg: Message, context: Context) -> Message:
    received = msg.content["config"]
    text = str(received[CONFIG_KEY])
    config = _config(text)
    pid = client_partition(context.node_config, received.get(PARTITION_KEY), config.federation.num_clients)
    server_round = int(received["server-round"])
    if config.resources.threads:
        torch.set_num_threads(config.resources.threads)
    setup = cached_setup(text)
    key = f"{STATE_KEY}/{pid}"  # a node may host several clients: defense state per client
    saved = context.state.get(key)
    state = saved.to_torch_state_dict() if isinstance(saved, ArrayRecord) else {}
    reply = client_update(
        config, setup.new_model(), setup.train, victim_steps(setup, server_round, pid),
        msg.content["arrays"].to_torch_state_dict(), pid, server_round, state,
        resolve_device(config.resources.client_device),
    )
    if state:
        context.state[key] = ArrayRecord({k: v.detach().cpu() for k, v in state.items()})
    released = {NUM_EXAMPLES_KEY: reply.num_examples, TRAIN_LOSS_KEY: reply.train_loss}  # None: withheld
    metrics = MetricRecord({**{k: v for k, v in released.items() if v is not None}, PARTITION_KEY: pid,
                            PAYLOAD_KEY: reply.payload_bytes})
    return Message(content=RecordDict({"arrays": ArrayRecord(reply.arrays), "metrics": metrics}), reply_to=msg)


@app.query()
def describe_node(msg: Message, context: Context) -> Message:
    """Tell the server which partition this node holds (it routes hosted clients by it)."""
    partition, partitions = node_partition(context.node_config)
    node = ConfigRecord({"partition-id": partition, "num-partitions": partitions})
    return Message(content=RecordDict({"node": node}), reply_to=msg)
