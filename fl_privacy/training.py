"""Local training: what a client computes before it shares.

One functional implementation of local SGD (``sgd_steps``) serves both sides:
the client runs it to train, and a known-schedule attacker runs the very same
code on dummy data with ``create_graph=True`` to differentiate through every
step (``fl_privacy.attacks.gia.unroll``). Gradients come from
``torch.func.grad``, so the same code also runs under ``torch.func.vmap`` (the
attacker batches its restarts). So the unrolled update equals the client's
update for the true data by construction, and a test checks it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from fl_privacy.config import TrainingConfig
from fl_privacy.data import ImageData

Tensors = dict[str, torch.Tensor]


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


def split_state(model: torch.nn.Module) -> tuple[Tensors, Tensors]:
    """Detached copies of (parameters, buffers), keyed like ``state_dict``."""
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    return params, buffers


def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy; ``labels`` may be class ids or (soft) probability rows, as DLG needs."""
    return F.cross_entropy(logits, labels)


def _batch_loss(params: Tensors, model: torch.nn.Module, buffers: Tensors, x: torch.Tensor,
                y: torch.Tensor) -> torch.Tensor:
    return loss_fn(functional_call(model, (params, buffers), (x,)), y)


_grad_and_loss = torch.func.grad_and_value(_batch_loss)


def sgd_update(
    params: Tensors, grads: Tensors, velocity: Tensors, lr: float, momentum: float = 0.0, weight_decay: float = 0.0
) -> tuple[Tensors, Tensors]:
    """One step of ``torch.optim.SGD`` (no dampening, no Nesterov), out of place.

    Returns (new parameters, new momentum buffers); an empty ``velocity`` means
    the first step (the buffer starts as the gradient, as in ``torch.optim.SGD``).
    """
    updated: Tensors = {}
    new_velocity: Tensors = {}
    for name, value in params.items():
        grad = grads[name]
        if weight_decay:
            grad = grad + weight_decay * value
        if momentum:
            grad = velocity[name] * momentum + grad if name in velocity else grad
            new_velocity[name] = grad
        updated[name] = value - lr * grad
    return updated, new_velocity


def sgd_steps(
    model: torch.nn.Module,
    params: Tensors,
    buffers: Tensors,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    create_graph: bool = False,
) -> tuple[Tensors, list[torch.Tensor]]:
    """Plain (momentum) SGD, as ``torch.optim.SGD`` defines it, functionally.

    ``buffers`` are updated in place by BatchNorm in train mode (as on a real
    client). With ``create_graph`` the returned parameters stay differentiable
    w.r.t. the inputs of every batch (known-schedule gradient inversion).
    Gradients come from ``torch.func.grad``, so the function is also
    vmappable (then BatchNorm must not update running statistics in place,
    e.g. after ``torch.func.replace_all_batch_norm_modules_``, or be in eval mode).
    """
    current = {k: v if create_graph and v.requires_grad else v.detach() for k, v in params.items()}
    velocity: Tensors = {}
    losses = []
    for x, y in batches:
        grads, loss = _grad_and_loss(current, model, buffers, x, y)
        current, velocity = sgd_update(current, grads, velocity, lr, momentum, weight_decay)
        if not create_graph:
            current = {k: v.detach() for k, v in current.items()}
            velocity = {k: v.detach() for k, v in velocity.items()}
        losses.append(loss.detach())
    return current, losses


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
) -> LocalResult:
    """Run the client's local training on ``steps`` and return what it shares.

    ``dpsgd = (clip, noise_multiplier, generator)``: sample-level DP-SGD (``fl_privacy.dp.release``).
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
        model, params, buffers, batches, training.lr, training.momentum, training.weight_decay
    )
    num_examples = len(np.unique(np.concatenate(steps)))
    return LocalResult(new_params, buffers, "weights", num_examples, float(torch.stack(losses).mean()), steps)


def apply_gradient(params: Tensors, gradient: Tensors, lr: float) -> Tensors:
    """Server side of FedSGD: one step of the averaged gradient."""
    return {k: params[k] - lr * gradient[k] if k in gradient else params[k] for k in params}
