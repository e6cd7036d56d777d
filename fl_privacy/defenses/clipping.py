"""L2-norm clipping of the shared update ("clip").

Clipping (C) is one of the four post-processing defenses of the SoK (Du et al. 2024,
the SoK §6, after McMahan et al. 2018 [81]): the update ``g`` is scaled to
``g * min(1, C / ||g||_2)``. On its own it hides nothing (it only rescales, and GIAs with
a cosine objective are scale-free — the SoK finds it "fails to guarantee the trade-off");
it matters as the sensitivity bound of the Gaussian mechanism (``gaussian`` with ``clip``).
"""

from __future__ import annotations

import torch
from pydantic import Field

from fl_privacy.defenses.base import Defense, DefenseContext, Update, register_defense
from fl_privacy.defenses.params import DefenseParams, Number

__all__ = ["ClipDefense", "clip_by_global_norm", "clip_per_tensor", "global_norm"]


def _floating(update: Update) -> list[str]:
    return [k for k, v in update.items() if v.is_floating_point()]


def global_norm(update: Update) -> torch.Tensor:
    """L2 norm of all (floating) tensors of ``update`` concatenated, as a 0-d tensor (float64 accumulation)."""
    keys = _floating(update)
    if not keys:
        return torch.zeros((), dtype=torch.float64)
    device = update[keys[0]].device
    norms = torch.stack([torch.linalg.vector_norm(update[k], dtype=torch.float64).to(device) for k in keys])
    return torch.linalg.vector_norm(norms)


def _scale_for(norm: torch.Tensor, max_norm: float) -> torch.Tensor:
    # min(1, C / norm) written so that norm == 0 gives 1 and no division by zero occurs.
    return max_norm / torch.clamp(norm, min=max_norm)


def clip_by_global_norm(update: Update, max_norm: float) -> Update:
    """Scale the whole update by ``min(1, max_norm / ||update||_2)``; unchanged when already within."""
    scale = _scale_for(global_norm(update), max_norm)
    return {k: (v * scale.to(device=v.device, dtype=v.dtype) if v.is_floating_point() else v) for k, v in update.items()}


def clip_per_tensor(update: Update, max_norm: float) -> Update:
    """Scale each tensor separately by ``min(1, max_norm / ||tensor||_2)``."""
    out = {}
    for k, v in update.items():
        if v.is_floating_point():
            scale = _scale_for(torch.linalg.vector_norm(v, dtype=torch.float64), max_norm)
            v = v * scale.to(dtype=v.dtype)
        out[k] = v
    return out


@register_defense
class ClipDefense(Defense):
    """Clip the update to L2 norm ``max_norm`` (the SoK §6 "clipping (C)"; McMahan et al. 2018).

    Parameters
    ----------
    max_norm: float > 0
        The bound ``C``.
    per_layer: bool = False
        False: one global norm over every tensor of the update (the DP-FedAvg flat clipping);
        True: each tensor clipped separately to ``max_norm`` (the whole update's norm is then
        at most ``sqrt(#tensors) * max_norm``).

    Deterministic, no state; the output is dense float32 (``payload_bytes`` is None).
    """

    name = "clip"
    keeps_encoding = True  # rescaling keeps sparsity, rank and the number of levels

    class Params(DefenseParams):
        max_norm: Number = Field(gt=0)
        per_layer: bool = False

    def __init__(self, *, max_norm: float, per_layer: bool = False) -> None:
        p = self.validate(max_norm=max_norm, per_layer=per_layer)
        self.max_norm, self.per_layer = p.max_norm, p.per_layer
        super().__init__(max_norm=max_norm, per_layer=per_layer)

    def apply(self, update: Update, context: DefenseContext) -> Update:
        if self.per_layer:
            return clip_per_tensor(update, self.max_norm)
        return clip_by_global_norm(update, self.max_norm)
