"""LLG and LLG+ label counts (Wainakh et al., "User-Level Label Leakage from Gradients in Federated
Learning", PoPETs 2022, Algorithm 1 and its LLG+ variant), and LLG+'s scale calibration for updates of
unknown scale (our extension). Formulas and the method's steps: the ``labels`` module docstring.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call

from fl_privacy.attacks.gia.output_layer import output_layer, param_key
from fl_privacy.attacks.threat import Observation

__all__ = ["CALIBRATION_GRID", "LLG_PLUS_BATCHES", "LLG_PLUS_SEED", "calibrate_scale", "llg_counts", "llg_impact",
           "llg_plus_statistics"]

LLG_PLUS_BATCHES = 10
"""Dummy batches (each of the client's batch size) LLG+ averages over (the reference's n = 10)."""
LLG_PLUS_SEED = 0
"""Seed of the dummy inputs (and of dropout in the dummy pass): LLG+ is deterministic."""
CALIBRATION_GRID = 161
"""Grid points of LLG+'s scale search for deltas of unknown schedule (``calibrate_scale``)."""


def llg_counts(row_sums: torch.Tensor, num: int, impact: float, offset: torch.Tensor | None) -> list[int]:
    """Wainakh et al., Algorithm 1 (stages 1 and 2) on ``row_sums`` with a given impact/offset."""
    g = row_sums.detach().double().clone()
    present = [int(c) for c in torch.nonzero(g < 0).flatten()]
    if len(present) > num:  # noise / multi-step drift: keep the most negative rows
        present = sorted(present, key=lambda c: float(g[c]))[:num]
    if offset is not None:
        g = g - offset.detach().double().to(g.device)
    labels = list(present)
    for c in present:
        g[c] -= impact
    while len(labels) < num:
        c = int(torch.argmin(g))
        labels.append(c)
        g[c] -= impact
    return labels


def llg_impact(row_sums: torch.Tensor, num: int, num_classes: int) -> float:
    """LLG: m = (sum of negative row sums / num) * (1 + 1/C)."""
    negative = row_sums[row_sums < 0].double().sum()
    return float(negative / num * (1 + 1 / num_classes))


def llg_plus_statistics(obs: Observation, num: int) -> tuple[float, torch.Tensor]:
    """LLG+ impact m and offsets s (C,) from dummy inputs through the current global model.

    The dummy pass mirrors the client: train mode (BatchNorm uses batch statistics, on
    copies of the buffers), batches of the client's batch size (``obs.batch_size``,
    else ``num``), ``LLG_PLUS_BATCHES`` of them, inputs uniform in ``obs.pixel_box``.
    Only the output weight requires a gradient, so each per-class gradient is a cheap
    backward through the last layer. Global RNG state is left untouched.
    """
    prefix, _ = output_layer(obs)
    w_key = param_key(prefix, "weight")
    num_classes = obs.num_classes
    some = next(iter(obs.global_params.values()))
    device = some.device
    params = {k: v.detach() for k, v in obs.global_params.items()}
    params[w_key] = params[w_key].clone().requires_grad_(True)
    chunk = obs.batch_size if obs.batch_size else num
    low, high = obs.pixel_box(device)
    generator = torch.Generator(device="cpu").manual_seed(LLG_PLUS_SEED)

    model = obs.model
    was_training = model.training
    model.train()
    logits = []
    try:
        cuda = device.type == "cuda"
        with torch.random.fork_rng(devices=[device] if cuda else []):
            # dropout, if any, in the dummy pass; only the forked generators are seeded
            torch.random.default_generator.manual_seed(LLG_PLUS_SEED)
            if cuda:
                with torch.cuda.device(device):
                    torch.cuda.manual_seed(LLG_PLUS_SEED)
            for _ in range(LLG_PLUS_BATCHES):
                u = torch.rand((chunk, *obs.image_shape), generator=generator).to(device)
                x = low + (high - low) * u
                buffers = {k: v.detach().clone() for k, v in obs.global_buffers.items()}
                logits.append(functional_call(model, (params, buffers), (x,)))
    finally:
        model.train(was_training)
    out = torch.cat(logits).float()
    total = len(out)

    # G[i] = row sums of the output-weight gradient of the dummy set, all labelled i.
    rows = []
    for i in range(num_classes):
        target = torch.full((total,), i, dtype=torch.long, device=device)
        (grad,) = torch.autograd.grad(F.cross_entropy(out, target), params[w_key], retain_graph=True)
        rows.append(grad.sum(dim=1).detach().double())
    G = torch.stack(rows)  # (C labelled, C rows)
    impact = float(torch.diagonal(G).mean() / num * (1 + 1 / num_classes))
    if num_classes > 1:
        offset = (G.sum(dim=0) - torch.diagonal(G)) / (num_classes - 1)
    else:
        offset = torch.zeros(1, dtype=torch.float64, device=device)
    return impact, offset


def class_counts(labels: list[int], num_classes: int, device: torch.device) -> torch.Tensor:
    counts = torch.bincount(torch.tensor(labels, dtype=torch.long), minlength=num_classes)
    return counts.to(device=device, dtype=torch.float64)


def calibrate_scale(row_sums: torch.Tensor, num: int, impact: float, offset: torch.Tensor) -> float:
    """Scale alpha > 0 of an update whose units are unknown, for LLG+ (our extension).

    LLG+ models the row sums as ``g ~= alpha * (s + m * n)`` with label counts ``n``.
    For each alpha on a log grid over [0.1, 10] x alpha_0 (``CALIBRATION_GRID`` points)
    the LLG+ counts ``n(alpha)`` of ``g / alpha`` are found, and the alpha with the
    smallest L1 residual ``|g - alpha * (s + m * n(alpha))|_1`` wins (L1: a few rows
    off the model, e.g. a present class hidden by a large offset, must not drag the
    fit). ``alpha_0`` = sum of the positive rows of ``g`` over the offsets of those rows
    (rows with g_c > 0 are mostly absent classes, where g_c = alpha * s_c), else the
    ratio of the LLG impact to the LLG+ impact.
    """
    g = row_sums.double()
    offset = offset.double()
    num_classes = len(g)
    llg = llg_impact(g, num, num_classes)
    positive = g > 0
    denom = float(offset[positive].sum())
    alpha0 = float(g[positive].sum()) / denom if denom > 0 else (llg / impact if impact < 0 else 0.0)
    if not alpha0 > 0:
        alpha0 = llg / impact if impact < 0 and llg < 0 else 1.0
    best_err, best_alpha = float("inf"), alpha0
    for factor in torch.logspace(-1, 1, CALIBRATION_GRID, dtype=torch.float64).tolist():
        alpha = alpha0 * factor
        counts = class_counts(llg_counts(g / alpha, num, impact, offset), num_classes, g.device)
        fit = offset + impact * counts
        err = float((g - alpha * fit).abs().sum())
        if err < best_err:
            best_err, best_alpha = err, alpha
    return best_alpha

