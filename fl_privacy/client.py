"""What one client does in a round: local training, then its defense pipeline.

Shared by the Flower ClientApp and the one-shot attack mode, so both produce
exactly the same shared update for the same config, client and round.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fl_privacy.config import ExperimentConfig
from fl_privacy.data import ImageData
from fl_privacy.defenses import DefenseContext, build_pipeline, dense_bytes
from fl_privacy.training import local_update

Tensors = dict[str, torch.Tensor]


@dataclass
class ClientReply:
    arrays: Tensors
    """Same keys and order as the global state: gradients + buffers (FedSGD) or weights + buffers (FedAvg)."""
    num_examples: int
    train_loss: float
    payload_bytes: int
    """What the client would put on the wire for its update (compressed encodings count less)."""


def client_update(
    config: ExperimentConfig,
    model: torch.nn.Module,
    data: ImageData,
    steps: list[np.ndarray],
    global_state: Tensors,
    partition_id: int,
    server_round: int,
    state: Tensors,
    device: torch.device | str = "cpu",
) -> ClientReply:
    """Train from ``global_state`` on ``steps``, defend the update, return what is sent.

    ``state`` is the client's persistent defense state (updated in place).
    """
    model.load_state_dict(global_state)
    result = local_update(model, data, steps, config.training, config.data.normalize, device)
    if result.kind == "gradient":
        update = result.shared
    else:
        update = {k: v - global_state[k].to(v.device) for k, v in result.shared.items()}
    pipeline = build_pipeline(config.defenses)
    payload = dense_bytes(update)
    if len(pipeline):
        model.load_state_dict(global_state)  # defenses see the global model, not the trained one
        inputs, labels = data.batch(np.unique(np.concatenate(steps)), normalize=config.data.normalize, device=device)
        seed = int(np.random.SeedSequence([config.seed, server_round, partition_id]).generate_state(1)[0])
        context = DefenseContext(
            kind="gradient" if result.kind == "gradient" else "delta", model=model, inputs=inputs, labels=labels,
            generator=torch.Generator().manual_seed(seed), state=state,
        )
        update = pipeline(update, context)
        payload = pipeline.payload_bytes(update)
    if result.kind == "weights":
        update = {k: global_state[k].to(v.device) + v for k, v in update.items()}
    sent = {**update, **result.buffers}
    arrays = {k: sent[k].detach().cpu() for k in global_state}
    return ClientReply(arrays, result.num_examples, result.train_loss, payload)
