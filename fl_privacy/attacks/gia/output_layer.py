"""The output layer's (pseudo-)gradient: what every label inference method reads from an update."""

from __future__ import annotations

import torch
from torch import nn

from fl_privacy.attacks.threat import Observation

__all__ = ["output_layer", "output_layer_gradient", "param_key", "schedule_scale"]


def output_layer(obs: Observation) -> tuple[str, nn.Linear]:
    """(qualified name, module) of the last ``nn.Linear`` with ``out_features == num_classes``."""
    found: tuple[str, nn.Linear] | None = None
    for name, module in obs.model.named_modules():
        if isinstance(module, nn.Linear) and module.out_features == obs.num_classes:
            found = (name, module)
    if found is None:
        raise ValueError(
            f"the model has no nn.Linear with out_features == num_classes ({obs.num_classes}); "
            "label inference needs the output layer"
        )
    return found


def param_key(prefix: str, leaf: str) -> str:
    return f"{prefix}.{leaf}" if prefix else leaf


def schedule_scale(obs: Observation) -> float | None:
    """``lr * effective number of steps`` of the known schedule, or None when unknown.

    Plain SGD: ``delta = -lr * sum_t g_t``, so ``-delta / (lr * T)`` is the mean step
    gradient. With momentum mu (torch.optim.SGD: v_t = mu v_{t-1} + g_t) step ``s`` of
    ``T`` weighs ``(1 - mu^(T-s+1)) / (1 - mu)``; the divisor uses the sum of these weights.
    """
    schedule = obs.schedule
    if schedule is None or not schedule.steps or schedule.lr <= 0:
        return None
    steps = len(schedule.steps)
    mu = float(schedule.momentum)
    if mu:
        effective = sum((1 - mu**j) / (1 - mu) for j in range(1, steps + 1))
    else:
        effective = float(steps)
    return float(schedule.lr) * effective


def output_layer_gradient(obs: Observation) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pseudo-gradient of the output layer: (weight (C, F), bias (C,) or None).

    The output layer is the last ``nn.Linear`` of ``obs.model`` whose ``out_features``
    equals ``obs.num_classes``; its entries in ``obs.update`` are found by name.

    * ``kind == "gradient"``: the shared gradient itself.
    * ``kind == "delta"`` with a known schedule: ``g = -delta / (lr * steps)`` (momentum:
      the effective step count, see ``schedule_scale``), minus ``weight_decay * w_global``
      (the decay term, approximated at the global weights), i.e. the mean gradient
      over the local steps for plain SGD.
    * ``kind == "delta"`` without a schedule: ``g = -delta`` (divisor 1). The sign is
      right (``g`` is a positive multiple of the mean step gradient for plain SGD),
      the scale is not: only scale-free methods (iDLG, Yin, LLG) are unaffected;
      LLG+ first estimates the missing scale (``llg.calibrate_scale``).

    Returned as float tensors, detached, on the update's device.
    """
    prefix, layer = output_layer(obs)
    w_key, b_key = param_key(prefix, "weight"), param_key(prefix, "bias")
    if w_key not in obs.update:
        raise ValueError(
            f"the update has no entry {w_key!r} (the output layer's weight); "
            f"got keys such as {list(obs.update)[-4:]}"
        )
    weight = obs.update[w_key].detach().float()
    bias = obs.update[b_key].detach().float() if layer.bias is not None and b_key in obs.update else None
    if obs.kind == "gradient":
        return weight, bias
    if obs.kind != "delta":
        raise ValueError(f"unknown update kind {obs.kind!r}; expected 'gradient' or 'delta'")
    scale = schedule_scale(obs)
    weight, bias = -weight, (-bias if bias is not None else None)
    if scale is None:
        return weight, bias
    weight, bias = weight / scale, (bias / scale if bias is not None else None)
    decay = float(obs.schedule.weight_decay) if obs.schedule is not None else 0.0
    if decay:
        if w_key in obs.global_params:
            weight = weight - decay * obs.global_params[w_key].detach().float().to(weight.device)
        if bias is not None and b_key in obs.global_params:
            bias = bias - decay * obs.global_params[b_key].detach().float().to(bias.device)
    return weight, bias

