"""The ClientApp: train locally on this node's partition, defend, share.

The partition comes from the node config (``partition-id``, ``num-partitions``);
the run's resolved config arrives with every train message.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fl_privacy.config import ExperimentConfig
from fl_privacy.defenses import DefenseContext, build_pipeline
from fl_privacy.run_setup import cached_setup, resolve_device
from fl_privacy.training import local_update
from strategies.curious_fedavg import CONFIG_KEY, PARTITION_KEY

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
    reply = train_client(config, text, pid, server_round, msg.content["arrays"], context.state)
    return Message(content=reply, reply_to=msg)


def client_partition(node_config: dict, assigned: int | None, num_clients: int) -> int:
    """The partition this message trains: the node's own, or one it hosts (client ``p`` on node ``p mod N``)."""
    node, nodes = int(node_config["partition-id"]), int(node_config["num-partitions"])
    if assigned is None:
        if nodes != num_clients:
            raise ValueError(f"{nodes} SuperNodes but federation.num_clients={num_clients} and no partition assigned")
        return node
    if int(assigned) % nodes != node:
        raise ValueError(f"client {assigned} is hosted by node {int(assigned) % nodes}, not by node {node}")
    return int(assigned)


def train_client(
    config: ExperimentConfig, config_json: str, pid: int, server_round: int, arrays: ArrayRecord, state: RecordDict
) -> RecordDict:
    """Local training + defense pipeline; returns the reply content (what the server receives)."""
    from fl_privacy.training import batch_schedule

    if config.resources.threads:
        torch.set_num_threads(config.resources.threads)
    setup = cached_setup(config_json)
    device = resolve_device(config.resources.client_device)
    model = setup.new_model()
    global_state = arrays.to_torch_state_dict()
    model.load_state_dict(global_state)
    steps = batch_schedule(setup.partitions[pid], config.training, config.seed, server_round, pid)
    result = local_update(model, setup.train, steps, config.training, config.data.normalize, device)

    pipeline = build_pipeline(config.defenses)
    if result.kind == "gradient":
        update = result.shared
    else:
        update = {k: v - global_state[k].to(v.device) for k, v in result.shared.items()}
    if len(pipeline):
        update = _defend(pipeline, update, result, model, global_state, setup, config, pid, server_round, state, device)
    if result.kind == "gradient":
        shared = update
    else:
        shared = {k: global_state[k].to(v.device) + v for k, v in update.items()}
    out = {**shared, **result.buffers}
    out = {k: out[k].detach().cpu() for k in global_state}  # same keys and order as the global model
    metrics = MetricRecord({"num-examples": result.num_examples, "train-loss": result.train_loss, "partition-id": pid})
    return RecordDict({"arrays": ArrayRecord(out), "metrics": metrics})


def _defend(pipeline, update, result, model, global_state, setup, config, pid, server_round, state, device):  # noqa: ANN001, ANN202, PLR0913
    """Apply the client's defenses; their cross-round state lives in the node's context."""
    import numpy as np

    model.load_state_dict(global_state)  # defenses see the global model, not the trained one
    used = np.unique(np.concatenate(result.steps))
    inputs, labels = setup.train.batch(used, normalize=config.data.normalize, device=device)
    generator = torch.Generator().manual_seed(hash((config.seed, server_round, pid)) % (2**63))
    key = f"{STATE_KEY}/{pid}"  # a node may host several clients: state per client
    saved = state.get(key)
    persistent = saved.to_torch_state_dict() if isinstance(saved, ArrayRecord) else {}
    kind = "gradient" if result.kind == "gradient" else "delta"
    ctx = DefenseContext(kind=kind, model=model, inputs=inputs, labels=labels, generator=generator, state=persistent)
    update = pipeline(update, ctx)
    if persistent:
        state[key] = ArrayRecord({k: v.detach().cpu() for k, v in persistent.items()})
    return update
