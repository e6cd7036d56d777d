"""Label counts of a FedAvg update by simulating training (Dimitrov et al. 2022, sec. 4.3).

Geng et al. (2021) count labels from one gradient of the output layer ``W`` (C x F):
with mean softmax ``p`` and mean feature sum ``O`` (sum over the inputs of the
output layer, non-negative after a ReLU) the row sum of the gradient is
``g_c ~= O (p_c - n_c / N)``, hence ``n_c ~= N p_c - N g_c / O``. For a FedAvg
update of ``s`` local steps, Dimitrov et al. take ``-delta / lr`` (the sum of the
steps' gradients, so ``g / s`` per step) and let ``p`` and ``O`` follow the
training: they are measured on dummy inputs at the start model (the global one)
and at the end model (``global + delta``, the client's), interpolated linearly
over the ``s`` steps, and the per-step estimates are averaged ("aaai_avg" in the
authors' code, ``restore_labels``). Then the counts are rounded to sum to ``N``.

Defaults from the reference scripts (eth-sri/fedavg_leakage, ``reconstruct_*_table3.sh``):
3000 dummy inputs drawn from N(0, 1) in the model's (normalised) input space.
"""

from __future__ import annotations

import copy

import torch
from torch.func import functional_call

from fl_privacy.attacks.gia.output_layer import output_layer
from fl_privacy.attacks.threat import Observation

__all__ = ["DUMMY_INPUTS", "fedavg_label_counts", "round_counts"]

DUMMY_INPUTS = 3000
"""Dummy inputs for the softmax / feature statistics (the reference scripts' ``--label_samp 3000``)."""


def _statistics(model: torch.nn.Module, module: torch.nn.Module, params: dict, buffers: dict,
                x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean softmax (C,), mean feature sum at the output layer's input ()) on the dummy inputs."""
    captured: list[torch.Tensor] = []
    hook = module.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0]))
    try:
        with torch.no_grad():
            logits = functional_call(model, (params, {k: v.clone() for k, v in buffers.items()}), (x,))
    finally:
        hook.remove()
    return torch.softmax(logits, dim=-1).mean(0), captured[0].flatten(1).sum(1).mean()


def round_counts(raw: torch.Tensor, total: int) -> torch.Tensor:
    """Non-negative integer counts summing to ``total``: floor, then largest remainders (the reference's rounding)."""
    counts = raw.floor().clamp_min(0).long()
    remainder = torch.where(raw >= 0, raw - raw.floor(), torch.full_like(raw, -1.0))  # negatives go last
    deficit = total - int(counts.sum())
    order = torch.argsort(remainder, descending=True).tolist()
    for i in range(max(deficit, 0)):
        counts[order[i % len(order)]] += 1
    for _ in range(max(-deficit, 0)):
        score = torch.where(counts > 0, remainder, torch.full_like(remainder, float("inf")))
        counts[int(torch.argmin(score))] -= 1
    return counts


def fedavg_label_counts(obs: Observation, num: int, steps: int, lr: float, model_mode: str = "train",
                        samples: int = DUMMY_INPUTS, seed: int = 0) -> torch.Tensor:
    """Per-class counts (C,) of the ``num`` samples behind ``obs.update`` after ``steps`` local steps of lr ``lr``."""
    if obs.kind != "delta":
        raise ValueError("fedavg_label_counts needs a FedAvg update (obs.kind == 'delta')")
    if steps < 1 or num < 1:
        raise ValueError(f"need steps >= 1 and num >= 1, got steps={steps}, num={num}")
    name, _ = output_layer(obs)
    model = copy.deepcopy(obs.model).cpu().train(model_mode == "train")
    module = dict(model.named_modules())[name]
    names = [n for n, _ in model.named_parameters()]
    start = {n: obs.global_params[n].detach().cpu() for n in names}
    end = {n: start[n] + obs.update[n].detach().cpu().to(start[n].dtype) if n in obs.update else start[n]
           for n in names}
    buffers = {k: v.detach().cpu() for k, v in obs.global_buffers.items()}
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((samples, *obs.image_shape), generator=gen, dtype=start[names[0]].dtype)
    p0, o0 = _statistics(model, module, start, buffers, x)
    p1, o1 = _statistics(model, module, end, buffers, x)
    weight = f"{name}.weight" if name else "weight"
    row_sums = (-obs.update[weight].detach().cpu().double() / lr).sum(1)  # sum of the steps' gradients
    coefs = torch.arange(steps, dtype=torch.float64) / steps            # the reference's interpolation
    p = (1 - coefs[:, None]) * p0.double() + coefs[:, None] * p1.double()
    o = (1 - coefs) * o0.double() + coefs * o1.double()
    raw = (num * p - num * row_sums[None, :] / (o[:, None] * steps)).mean(0)
    return round_counts(raw, num)
