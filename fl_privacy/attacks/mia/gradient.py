"""The curious server's own membership test: does a candidate's gradient point along the update?

Li, Li & Ribeiro 2023 ("Effective passive membership inference attacks in federated
learning against overparameterized models", ICLR): in an overparameterized model the
per-example gradients of different examples are nearly orthogonal, so the update a
client sends is close to a sum of its own examples' gradients, and a candidate's
gradient at the global model has a clearly larger cosine similarity with the update
when the candidate was in the client's data. Score:

    s(x, y) = cos( ∇_θ ℓ(f_θ(x), y) |_{θ = θ_global} ,  u ),

with ``u`` the client's descent direction as the server sees it:

* FedSGD (``kind == "gradient"``): ``u = g``, the averaged gradient itself;
* FedAvg (``kind == "delta"``, ``Δ = w_client - w_global``): ``u = -Δ``. For plain
  SGD ``Δ = -lr Σ_t g_t``, so ``-Δ`` points along the summed gradients; comparing with
  ``+Δ`` would rank members LAST. The cosine ignores ``lr`` and the step count.

Per-example gradients come from ``torch.func.vmap(torch.func.grad(...))`` over a
``functional_call`` of the global parameters, in eval mode (BatchNorm uses the
global running statistics, dropout is off), chunked so memory stays at
``chunk_size`` gradients.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

Tensors = Mapping[str, torch.Tensor]


def update_direction(update: Tensors, kind: Literal["gradient", "delta"]) -> dict[str, torch.Tensor]:
    """The client's descent direction: the gradient as is, or ``-Δ`` for a weight delta."""
    if kind == "gradient":
        return {k: v.detach() for k, v in update.items()}
    if kind == "delta":
        return {k: -v.detach() for k, v in update.items()}
    raise ValueError(f"kind must be 'gradient' or 'delta', got {kind!r}")


def gradient_similarity_scores(
    model: torch.nn.Module,
    global_params: Tensors,
    buffers: Tensors | None,
    update: Tensors,
    kind: Literal["gradient", "delta"],
    x: torch.Tensor,
    y: torch.Tensor,
    device: str | torch.device = "cpu",
    chunk_size: int = 64,
) -> np.ndarray:
    """Cosine similarity of each candidate's gradient at the global model with the update direction.

    ``global_params``: the parameters as sent to the client; ``buffers``: the global
    buffers (None: the model's own); ``update``: per parameter, the gradient or the
    delta (parameters absent from ``update`` are ignored on both sides); ``x``, ``y``:
    the candidates, in the model's input space (normalized like the client's data).
    Returns a float64 array of length ``len(x)``, higher = more likely in the update.
    """
    direction = update_direction(update, kind)
    unknown = sorted(set(direction) - set(global_params))
    if unknown:
        raise ValueError(f"update has entries that are not parameters of the global model: {unknown[:5]}")
    names = [k for k in global_params if k in direction]
    if not names:
        raise ValueError("update shares no parameter with the global model")
    params = {k: v.detach().to(device) for k, v in global_params.items()}
    source = buffers if buffers is not None else dict(model.named_buffers())
    bufs = {k: v.detach().to(device) for k, v in source.items()}
    d = {k: direction[k].to(device=device, dtype=params[k].dtype) for k in names}
    d_norm = torch.sqrt(sum((v.double() ** 2).sum() for v in d.values()))

    def example_loss(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, ({**params, **p}, bufs), (xi[None],)), yi[None])

    per_example = vmap(grad(example_loss), in_dims=(None, 0, 0))
    chosen = {k: params[k] for k in names}
    was_training = model.training
    model.eval()
    scores = []
    try:
        for start in range(0, len(x), chunk_size):
            xs = x[start : start + chunk_size].to(device)
            ys = y[start : start + chunk_size].to(device=device, dtype=torch.long)
            g = per_example(chosen, xs, ys)
            dot = sum((g[k].flatten(1).double() * d[k].flatten().double()).sum(1) for k in names)
            g_norm = torch.sqrt(sum((g[k].flatten(1).double() ** 2).sum(1) for k in names))
            scores.append((dot / (g_norm * d_norm).clamp_min(1e-30)).cpu())
    finally:
        model.train(was_training)
    return torch.cat(scores).numpy() if scores else np.zeros(0)


def score_recorded_update(
    recorded: Any, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
    device: str | torch.device = "cpu", chunk_size: int = 64,
) -> np.ndarray:
    """``gradient_similarity_scores`` on a ``RecordedUpdate`` (or anything with ``global_state``,
    ``update`` and ``kind``): parameters and buffers are told apart by ``model``'s names."""
    param_names = {k for k, _ in model.named_parameters()}
    state = recorded.global_state
    params = {k: v for k, v in state.items() if k in param_names}
    buffers = {k: v for k, v in state.items() if k not in param_names}
    return gradient_similarity_scores(model, params, buffers, recorded.update, recorded.kind, x, y, device, chunk_size)
