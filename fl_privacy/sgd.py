"""Local SGD, functionally: the one implementation both sides share.

The client runs ``sgd_steps`` to train (``fl_privacy.federation.training``); a
known-schedule attacker runs the very same code on dummy data with
``create_graph=True`` to differentiate through every step
(``fl_privacy.attacks.gia.unroll``). Gradients come from ``torch.func.grad``,
so the same code also runs under ``torch.func.vmap`` (the attacker batches its
restarts). A leaf module: it imports neither the config nor the data layer, so
attacks may use it.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch.func import functional_call

Tensors = dict[str, torch.Tensor]


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
    params: Tensors, grads: Tensors, velocity: Tensors, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
    proximal: tuple[float, Tensors] | None = None,
) -> tuple[Tensors, Tensors]:
    """One step of ``torch.optim.SGD`` (no dampening, no Nesterov), out of place.

    Returns (new parameters, new momentum buffers); an empty ``velocity`` means
    the first step (the buffer starts as the gradient, as in ``torch.optim.SGD``).
    ``proximal = (mu, anchor)``: FedProx's term ``(mu/2) ||w - anchor||^2`` joins the loss.
    """
    updated: Tensors = {}
    new_velocity: Tensors = {}
    for name, value in params.items():
        grad = grads[name]
        if weight_decay:
            grad = grad + weight_decay * value
        if proximal is not None:
            grad = grad + proximal[0] * (value - proximal[1][name])
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
    proximal_mu: float = 0.0,
) -> tuple[Tensors, list[torch.Tensor]]:
    """Plain (momentum) SGD, as ``torch.optim.SGD`` defines it, functionally.

    ``buffers`` are updated in place by BatchNorm in train mode (as on a real
    client). With ``create_graph`` the returned parameters stay differentiable
    w.r.t. the inputs of every batch (known-schedule gradient inversion).
    Gradients come from ``torch.func.grad``, so the function is also
    vmappable (then BatchNorm must not update running statistics in place,
    e.g. after ``torch.func.replace_all_batch_norm_modules_``, or be in eval mode).
    ``proximal_mu``: FedProx's proximal term towards the starting ``params``.
    """
    current = {k: v if create_graph and v.requires_grad else v.detach() for k, v in params.items()}
    proximal = (proximal_mu, {k: v.detach() for k, v in params.items()}) if proximal_mu else None
    velocity: Tensors = {}
    losses = []
    for x, y in batches:
        grads, loss = _grad_and_loss(current, model, buffers, x, y)
        current, velocity = sgd_update(current, grads, velocity, lr, momentum, weight_decay, proximal)
        if not create_graph:
            current = {k: v.detach() for k, v in current.items()}
            velocity = {k: v.detach() for k, v in velocity.items()}
        losses.append(loss.detach())
    return current, losses


def apply_gradient(params: Tensors, gradient: Tensors, lr: float) -> Tensors:
    """Server side of FedSGD: one step of the averaged gradient."""
    return {k: params[k] - lr * gradient[k] if k in gradient else params[k] for k in params}
