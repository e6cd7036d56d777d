"""Local training: what a client computes before it shares.

The SGD itself lives in ``fl_privacy.sgd``, shared with the known-schedule
attacker, so the unrolled update equals the client's update for the true data
by construction (a test checks it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch.func import functional_call

from fl_privacy.config import TrainingConfig
from fl_privacy.data import ImageData
from fl_privacy.sgd import Tensors, loss_fn, sgd_steps, split_state


@dataclass
class LocalResult:
    """What the client shares (before defenses), and what only the evaluator may see."""

    shared: Tensors
    """FedSGD: the gradient of every parameter. FedAvg: the locally trained parameters."""
    buffers: Tensors
    """Buffers (BatchNorm running statistics) after local training; sent along with the update."""
    kind: Literal["gradient", "weights"]
    num_examples: int
    train_loss: float
    steps: list[np.ndarray]
    """Dataset indices of each local step, in order. Ground truth: never part of an Observation."""


def batch_schedule(
    partition: np.ndarray, training: TrainingConfig, seed: int, server_round: int, partition_id: int
) -> list[np.ndarray]:
    """Dataset indices of every local step, deterministic in (seed, round, client).

    FedSGD: one batch of ``batch_size`` samples. FedAvg: each epoch a fresh
    permutation cut into mini-batches (the last one smaller unless
    ``drop_last``), stopping after ``local_steps`` steps when that is set.
    """
    if len(partition) < training.batch_size:
        raise ValueError(
            f"client {partition_id} holds {len(partition)} samples, fewer than training.batch_size="
            f"{training.batch_size}: lower the batch size or give clients more data"
        )
    rng = np.random.default_rng([seed, server_round, partition_id])
    if training.algorithm == "fedsgd":
        return [np.sort(rng.permutation(partition)[: training.batch_size])]
    steps: list[np.ndarray] = []
    for _ in range(training.local_epochs):
        order = rng.permutation(partition)
        for start in range(0, len(order), training.batch_size):
            chunk = order[start : start + training.batch_size]
            if training.drop_last and len(chunk) < training.batch_size:
                continue
            steps.append(chunk)
            if training.local_steps and len(steps) == training.local_steps:
                return steps
    return steps


def local_update(
    model: torch.nn.Module,
    data: ImageData,
    steps: list[np.ndarray],
    training: TrainingConfig,
    normalize: bool = True,
    device: str | torch.device = "cpu",
    dpsgd: tuple[float, float, torch.Generator] | None = None,
    proximal_mu: float = 0.0,
) -> LocalResult:
    """Run the client's local training on ``steps`` and return what it shares.

    ``dpsgd = (clip, noise_multiplier, generator)``: sample-level DP-SGD (``fl_privacy.dp.release``).
    ``proximal_mu``: FedProx's proximal term (FedAvg's local steps only; a FedSGD gradient is taken at the
    global model, where the term's gradient is zero).
    """
    model = model.to(device).train(training.model_mode == "train")
    params, buffers = split_state(model)
    batches = (data.batch(idx, normalize=normalize, device=device) for idx in steps)
    if dpsgd is not None:
        from fl_privacy.dp.release import dp_gradient, dpsgd_steps

        if training.algorithm == "fedsgd":
            (x, y), = batches
            grads, loss = dp_gradient(model, params, buffers, x, y, *dpsgd)
            return LocalResult(grads, buffers, "gradient", len(steps[0]), float(loss), steps)
        new_params, losses = dpsgd_steps(model, params, buffers, batches, training, *dpsgd)
        num_examples = len(np.unique(np.concatenate(steps)))
        return LocalResult(new_params, buffers, "weights", num_examples, float(torch.stack(losses).mean()), steps)
    if training.algorithm == "fedsgd":
        (x, y), = batches
        live = {k: v.requires_grad_(True) for k, v in params.items()}
        loss = loss_fn(functional_call(model, (live, buffers), (x,)), y)
        grads = torch.autograd.grad(loss, list(live.values()))
        shared = {k: g.detach() for k, g in zip(live, grads)}
        return LocalResult(shared, buffers, "gradient", len(steps[0]), float(loss.detach()), steps)
    new_params, losses = sgd_steps(
        model, params, buffers, batches, training.lr, training.momentum, training.weight_decay,
        proximal_mu=proximal_mu,
    )
    num_examples = len(np.unique(np.concatenate(steps)))
    return LocalResult(new_params, buffers, "weights", num_examples, float(torch.stack(losses).mean()), steps)
