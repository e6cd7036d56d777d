"""GradDefense, per-sample part: leakage risk per parameter tensor and per-sample clipping.

Wang et al., INFOCOM 2022, sec. 4.A (Eqs. 1-2) and sec. 5.C; see ``fl_privacy.defenses.graddefense``
for the method and for what "per sample" means with BatchNorm.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, jacrev, vmap

_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


# --------------------------------------------------------------------------- model helpers


def per_sample_model(model: nn.Module) -> nn.Module:
    """A detached copy of ``model`` whose output on one sample depends on that sample only.

    Training mode: BatchNorm layers use the statistics of the batch they see (one
    sample under ``vmap``) and keep no running statistics (replaced by
    :class:`_BatchStatNorm`, same parameters); eval mode: running statistics.
    Dropout is disabled in both cases. Parameters are frozen (they are passed
    explicitly to ``functional_call`` where gradients w.r.t. them are needed).
    """
    clone = copy.deepcopy(model)
    for param in clone.parameters():
        param.requires_grad_(False)
    if not model.training:
        return clone.eval()
    clone.train()
    for parent in list(clone.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm) and child.training:
                setattr(parent, child_name, _BatchStatNorm(child))  # (a BN frozen in eval mode stays as is)
            elif isinstance(child, nn.modules.dropout._DropoutNd):
                child.eval()
    return clone


class _BatchStatNorm(nn.Module):
    """BatchNorm in training mode from elementary ops, with no running statistics.

    Same parameters (``weight``, ``bias``) and the same function as ``F.batch_norm(...,
    training=True)``; written out because the fused kernel's double backward cannot run
    under ``vmap`` (needed for the sensitivity), and it never updates state.
    """

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        self.weight = bn.weight
        self.bias = bn.bias
        self.eps = bn.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = [0, *range(2, x.dim())]
        mean = x.mean(dim=dims, keepdim=True)
        var = x.var(dim=dims, unbiased=False, keepdim=True)
        out = (x - mean) * torch.rsqrt(var + self.eps)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if self.weight is not None:
            out = out * self.weight.view(shape)
        if self.bias is not None:
            out = out + self.bias.view(shape)
        return out


def _loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    from fl_privacy.sgd import loss_fn  # the client's own loss (mean cross-entropy)

    return loss_fn(logits, labels)


def _chunk(per_item_elems: int, budget: int = 1 << 24) -> int:
    """How many items a vmap chunk may hold so that it materialises ~``budget`` floats."""
    return max(1, budget // max(1, per_item_elems))


def _single_grad_fn(fmodel: nn.Module, params: dict[str, torch.Tensor]):
    """``g(p, x, y)``: gradient of the loss of one sample (x without batch dim) w.r.t. ``p``."""

    def sample_loss(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return _loss(functional_call(fmodel, p, (x.unsqueeze(0),)), y.unsqueeze(0))

    return grad(sample_loss)


# --------------------------------------------------------------------------- 1. sensitivity


def layer_sensitivity(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    names: Sequence[str] | None = None,
    chunk_size: int = 1,
) -> torch.Tensor:
    """Leakage risk of each parameter tensor (paper Eqs. 1-2, reference's ones-VJP).

    ``s_l = mean_i || d/dx_i sum_{elements} dL(x_i, y_i)/dW_l ||_F`` for the tensors
    ``names`` (default: all parameters, in ``named_parameters`` order); returns a
    float64 tensor of shape ``(len(names),)``.

    Computation: per sample, one forward, one backward with ``create_graph`` and ``L``
    double-backward passes (one per tensor), batched as ``vmap`` over samples of
    ``jacrev`` over the L per-tensor sums (i.e. L vector-Jacobian products w.r.t. the
    input, vectorised). Cost ~ k * (2 + L) backward passes; memory ~ L * (one
    sample's double-backward graph) per vmap chunk of ``chunk_size`` samples (1 by
    default: on a CPU larger chunks only cost memory; on a GPU they add parallelism).

    Note: for softmax cross-entropy the output layer's gradient sums to zero for every
    input (sum_c (p_c - y_c) = 0), so the ones-VJP gives the final Linear layer (weight
    and bias) a sensitivity of ~0 (rounding) -- a property of this proxy, which the
    paper's Jacobian norm ``||J_l||_p`` would not have.
    """
    fmodel = per_sample_model(model)
    params = {k: v.detach() for k, v in fmodel.named_parameters()}
    names = list(params) if names is None else list(names)
    missing = [n for n in names if n not in params]
    if missing:
        raise KeyError(f"not parameters of the model: {missing}")
    sample_grad = _single_grad_fn(fmodel, params)

    def per_tensor_sums(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        g = sample_grad(params, x, y)
        return torch.stack([g[n].sum() for n in names])

    def per_sample(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        jac = jacrev(per_tensor_sums)(x, y)  # (L, *x.shape)
        return jac.reshape(len(names), -1).norm(dim=1)

    norms = vmap(per_sample, chunk_size=chunk_size)(inputs, labels)  # (k, L)
    return norms.to(torch.float64).mean(dim=0)


# --------------------------------------------------------------------------- clipping


def clipped_mean_gradient(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    clip_norm: float,
    names: Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Mean over samples of ``g_i / max(1, ||g_i|| / clip_norm)`` (paper sec. 5.C).

    ``g_i`` is sample i's gradient w.r.t. all tensors ``names`` (its norm is the global
    L2 norm over those tensors), from ``vmap(grad)`` on :func:`per_sample_model`,
    evaluated in chunks so that at most ~16M per-sample gradient floats live at once.
    """
    fmodel = per_sample_model(model)
    params = {k: v.detach() for k, v in fmodel.named_parameters()}
    names = list(params) if names is None else list(names)
    sample_grad = _single_grad_fn(fmodel, params)

    def clipped(x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        g = sample_grad(params, x, y)
        flat = [g[n].reshape(-1) for n in names]
        norm = torch.cat(flat).norm()
        factor = 1.0 / torch.clamp(norm / clip_norm, min=1.0)
        return [g[n] * factor for n in names]

    numel = sum(params[n].numel() for n in names)
    step = _chunk(numel)
    sums = [torch.zeros_like(params[n]) for n in names]
    for start in range(0, inputs.shape[0], step):  # loop over chunks of samples, not elements
        part = vmap(clipped)(inputs[start : start + step], labels[start : start + step])
        sums = [s + p.sum(0) for s, p in zip(sums, part)]
    return {n: s / inputs.shape[0] for n, s in zip(names, sums)}
