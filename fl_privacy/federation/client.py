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
from fl_privacy.defenses import DefenseContext
from fl_privacy.dp.guarantee import release_policy, resolve
from fl_privacy.dp.release import client_pipeline, release_update
from fl_privacy.federation.training import local_update

Tensors = dict[str, torch.Tensor]


@dataclass
class ClientReply:
    arrays: Tensors
    """Same keys and order as the global state: gradients + buffers (FedSGD) or weights + buffers (FedAvg)."""
    num_examples: int | None
    train_loss: float | None
    """None when ``privacy.metrics`` withholds them (the default under DP)."""
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

    ``state`` is the client's persistent defense state (updated in place). Nothing leaves
    the client around the pipeline: buffers and metrics follow ``privacy.buffers`` /
    ``privacy.metrics`` (withheld under DP unless the config lets them out).
    """
    model.load_state_dict(global_state)
    seed = int(np.random.SeedSequence([config.seed, server_round, partition_id]).generate_state(1)[0])
    mechanism = resolve(config)
    dpsgd = None
    if mechanism is not None and mechanism.name == "sample":
        dpsgd = (mechanism.clip, mechanism.noise_multiplier, torch.Generator().manual_seed(seed + 1))
    result = local_update(model, data, steps, config.training, config.data.normalize, device, dpsgd,
                          proximal_mu(config))
    if result.kind == "gradient":
        update = dict(result.shared)
    else:
        update = {k: v - global_state[k].to(v.device) for k, v in result.shared.items()}
    pipeline = client_pipeline(config)

    def context() -> DefenseContext:
        model.load_state_dict(global_state)  # defenses see the global model, not the trained one
        inputs, labels = data.batch(np.unique(np.concatenate(steps)), normalize=config.data.normalize, device=device)
        return DefenseContext(
            kind="gradient" if result.kind == "gradient" else "delta", model=model, inputs=inputs, labels=labels,
            generator=torch.Generator().manual_seed(seed), state=state,
        )

    arrays, payload = release_update(config, pipeline, update, result.buffers, global_state, result.kind, context)
    metrics_policy = release_policy(config)[1]
    if metrics_policy == "withhold":
        return ClientReply(arrays, None, None, payload)
    return ClientReply(arrays, result.num_examples, result.train_loss, payload)


def proximal_mu(config: ExperimentConfig) -> float:
    """FedProx's mu when the server runs FedProx (the clients add its proximal term), else 0."""
    return config.federation.proximal_mu if config.federation.strategy == "fedprox" else 0.0
