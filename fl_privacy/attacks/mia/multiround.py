"""Membership inference from a client's updates across several rounds (FedMIA and trajectory baselines).

The curious server keeps, for chosen rounds only, a few numbers per candidate and
client instead of the updates themselves (bounded memory: ``rounds x clients x
candidates`` floats):

* ``cosine``: the cosine of the candidate's gradient at the global model with the
  client's descent direction ``-delta`` (Li et al. 2023's measurement, the one-update
  gradient MIA of ``mia.gradient``);
* ``loss``: minus the candidate's cross-entropy under the client's local model
  ``w_global + delta`` (higher = more likely trained on).

Scores (higher = member of the target client):

* FedMIA (Zhu et al. 2024, "FedMIA: An Effective Membership Inference Attack
  Exploiting 'All for One' Principle in Federated Learning"; authors' code
  github.com/Liar-Mask/FedMIA, ``mia_attack_auto.py``): clients hold disjoint data,
  so the other clients' measurements of a candidate are draws from its
  *non-member* distribution. Per round and candidate a Gaussian is fitted to them
  (mean, variance + 1e-8); the target's measurement scores ``Phi((m - mu) / sigma)``,
  the one-tailed test; the scores are averaged over the rounds. FedMIA-II uses the
  cosine, FedMIA-I the loss. The reference's optional outlier filter (drop
  reference values above mean + 3 std, used with the cosine) is ``outlier=True``.
* Trajectory baselines of the paper: "Avg-Cosine" (the cosine averaged over rounds)
  and "Loss-Series" (the loss measurement averaged over rounds); the one-update
  "Grad-Cosine" is the cosine of a single round.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import norm
from torch.func import functional_call, grad, vmap

Tensors = Mapping[str, torch.Tensor]

__all__ = ["MEASUREMENTS", "fedmia_scores", "round_measurements", "trajectory_scores"]

MEASUREMENTS = ("cosine", "loss")


def _per_example_gradients(model: torch.nn.Module, params: dict, buffers: dict, names: list[str],
                           x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(M, P) flattened per-example gradients of the cross-entropy w.r.t. ``names`` at ``params``."""
    def example_loss(p: dict, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, ({**params, **p}, buffers), (xi[None],)), yi[None])

    g = vmap(grad(example_loss), in_dims=(None, 0, 0))({k: params[k] for k in names}, x, y)
    return torch.cat([g[k].flatten(1) for k in names], dim=1)


def round_measurements(model: torch.nn.Module, global_params: Tensors, buffers: Tensors,
                       deltas: Sequence[Tensors], x: torch.Tensor, y: torch.Tensor,
                       device: str | torch.device = "cpu", chunk_size: int = 64) -> dict[str, np.ndarray]:
    """``{"cosine": (K, M), "loss": (K, M)}`` for the K clients' FedAvg deltas of one round and M candidates."""
    if not deltas:
        raise ValueError("need at least one client update")
    names = [k for k in global_params if all(k in d for d in deltas)]
    if not names:
        raise ValueError("the updates share no parameter with the global model")
    params = {k: v.detach().to(device) for k, v in global_params.items()}
    bufs = {k: v.detach().to(device) for k, v in buffers.items()}
    directions = torch.stack([torch.cat([-d[k].detach().to(device, params[k].dtype).flatten() for k in names])
                              for d in deltas])                                  # (K, P)
    directions = directions / directions.norm(dim=1, keepdim=True).clamp_min(1e-30)
    was_training = model.training
    model.eval()
    cosine, loss = [], []
    try:
        with torch.no_grad():
            locals_ = [{k: params[k] + d[k].detach().to(device, params[k].dtype) if k in d else params[k]
                        for k in params} for d in deltas]
        for start in range(0, len(x), chunk_size):
            xs = x[start:start + chunk_size].to(device)
            ys = y[start:start + chunk_size].to(device=device, dtype=torch.long)
            g = _per_example_gradients(model, params, bufs, names, xs, ys)
            cosine.append((directions @ (g / g.norm(dim=1, keepdim=True).clamp_min(1e-30)).T).cpu())
            with torch.no_grad():
                loss.append(torch.stack([-F.cross_entropy(functional_call(model, (p, bufs), (xs,)), ys,
                                                          reduction="none") for p in locals_]).cpu())
    finally:
        model.train(was_training)
    return {"cosine": torch.cat(cosine, 1).double().numpy(), "loss": torch.cat(loss, 1).double().numpy()}


def fedmia_scores(target: np.ndarray, others: np.ndarray, outlier: bool = False) -> np.ndarray:
    """FedMIA: mean over rounds of ``Phi((m_target - mu_out) / sigma_out)``.

    ``target``: (T, M) the target client's measurement per round and candidate;
    ``others``: (T, K-1, M) the other clients' (non-member references).
    """
    target, others = np.asarray(target, float), np.asarray(others, float)
    if target.ndim != 2 or others.ndim != 3 or others.shape[0] != target.shape[0] or others.shape[2] != target.shape[1]:
        raise ValueError(f"need target (T, M) and others (T, K-1, M), got {target.shape} and {others.shape}")
    if others.shape[1] < 2:
        raise ValueError("FedMIA needs at least two non-target clients per round to fit their distribution")
    if outlier:
        mean, std = others.mean(1, keepdims=True), others.std(1, keepdims=True)
        kept = np.where(others < mean + 3 * std, others, np.nan)
        empty = np.isnan(kept).all(1, keepdims=True)
        kept = np.where(empty & (others == others.min(1, keepdims=True)), others, kept)  # the reference's fallback
        mu, var = np.nanmean(kept, 1), np.nanvar(kept, 1) + 1e-8
    else:
        mu, var = others.mean(1), others.var(1) + 1e-8
    return norm.cdf(target, mu, np.sqrt(var)).mean(0)


def trajectory_scores(target: np.ndarray) -> np.ndarray:
    """Avg-Cosine / Loss-Series: the target client's measurement averaged over rounds, (M,)."""
    target = np.asarray(target, float)
    if target.ndim != 2:
        raise ValueError(f"need (T, M) measurements, got {target.shape}")
    return target.mean(0)
