"""What runs the mechanism: the client's full pipeline, the server's central noise, DP-SGD steps, buffers.

Everything a client sends passes through here: parameters through the defense pipeline (with
the mechanism's stage last), BatchNorm buffers by ``privacy.buffers`` (withhold / noise /
share), per-client metrics by ``privacy.metrics``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.func import functional_call

from fl_privacy.defenses import Defense, DefenseContext, DefensePipeline, build_pipeline, dense_bytes
from fl_privacy.defenses.clipping import clip_by_global_norm
from fl_privacy.defenses.noise import GaussianNoise, standard_normal
from fl_privacy.dp.guarantee import release_policy, resolve

Tensors = dict[str, torch.Tensor]


class CentralGaussian(Defense):
    """Central DP: the client clips its update; the server adds N(0, (sigma clip / m)^2) to the mean of m updates.

    ``m`` is the fixed denominator (clients per round, or the expected count under Poisson
    sampling, as McMahan et al. 2018), so the noise is sigma * clip on the clipped sum.
    """

    name = "central_gaussian"
    needs_server = True
    keeps_encoding = True

    def __init__(self, *, clip: float, noise_multiplier: float) -> None:
        self.clip, self.noise_multiplier = clip, noise_multiplier
        self.denominator = 1.0
        self.generator = torch.Generator().manual_seed(0)
        super().__init__(clip=clip, noise_multiplier=noise_multiplier)

    def start_round(self, seed: int, server_round: int, denominator: float) -> None:
        """Seed the server's noise for this round and fix the mean's denominator."""
        self.generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(server_round) + 17)
        self.denominator = float(denominator)

    def apply(self, update: Tensors, context: DefenseContext) -> Tensors:
        return clip_by_global_norm(update, self.clip)

    def server_step(self, aggregated: Tensors, num_clients: int) -> Tensors:
        std = self.noise_multiplier * self.clip / self.denominator
        return {k: (v + std * standard_normal(v.shape, self.generator, v) if v.is_floating_point() else v)
                for k, v in aggregated.items()}


def client_pipeline(config: Any) -> DefensePipeline:
    """The configured defenses plus the mechanism's client stage last (local: clip + noise; central: clip)."""
    pipeline = build_pipeline(config.defenses)
    mechanism = resolve(config)
    if mechanism is None or mechanism.source != "privacy":
        return pipeline
    if mechanism.name == "local":
        pipeline.stages.append(GaussianNoise(std=mechanism.noise_multiplier * mechanism.clip, clip=mechanism.clip,
                                             delta=mechanism.delta, neighbouring=mechanism.relation))
    elif mechanism.name == "central":
        pipeline.stages.append(CentralGaussian(clip=mechanism.clip, noise_multiplier=mechanism.noise_multiplier))
    return pipeline


def central_stage(pipeline: DefensePipeline) -> CentralGaussian | None:
    return next((s for s in pipeline.stages if isinstance(s, CentralGaussian)), None)


# ------------------------------------------------------------------------------ DP-SGD


def dp_gradient(model: torch.nn.Module, params: Tensors, buffers: Tensors, x: torch.Tensor, y: torch.Tensor,
                clip: float, noise_multiplier: float, generator: torch.Generator) -> tuple[Tensors, torch.Tensor]:
    """DP-SGD gradient (Abadi et al. 2016): per-example gradients clipped to ``clip``, summed, plus
    N(0, (sigma clip)^2), divided by the batch size. Returns (gradient, mean loss of the batch)."""
    from fl_privacy.sgd import loss_fn

    def one(p: Tensors, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return loss_fn(functional_call(model, (p, buffers), (xi[None],)), yi[None])

    grads, losses = torch.func.vmap(torch.func.grad_and_value(one), in_dims=(None, 0, 0))(params, x, y)
    summed = noisy_clipped_sum(grads, clip, noise_multiplier, generator)
    return {k: v / len(x) for k, v in summed.items()}, losses.mean().detach()


def noisy_clipped_sum(per_example: Tensors, clip: float, noise_multiplier: float,
                      generator: torch.Generator) -> Tensors:
    """Sum over the batch (dim 0) of per-example gradients clipped to ``clip`` jointly, plus N(0, (sigma clip)^2)."""
    norms = torch.linalg.vector_norm(torch.stack([g.flatten(1).norm(dim=1) for g in per_example.values()], 1), dim=1)
    factor = clip / torch.clamp(norms, min=clip)
    out = {}
    for name, g in per_example.items():
        summed = torch.einsum("b,b...->...", factor.to(g.dtype), g)
        out[name] = summed + noise_multiplier * clip * standard_normal(summed.shape, generator, summed)
    return out


def dpsgd_steps(model: torch.nn.Module, params: Tensors, buffers: Tensors, batches: Any, training: Any,
                clip: float, noise_multiplier: float, generator: torch.Generator) -> tuple[Tensors, list[torch.Tensor]]:
    """Local SGD (momentum, weight decay as ``training``) on DP-SGD gradients; returns (params, losses)."""
    from fl_privacy.sgd import sgd_update

    current = {k: v.detach() for k, v in params.items()}
    velocity: Tensors = {}
    losses = []
    for x, y in batches:
        grads, loss = dp_gradient(model, current, buffers, x, y, clip, noise_multiplier, generator)
        current, velocity = sgd_update(current, grads, velocity, training.lr, training.momentum, training.weight_decay)
        losses.append(loss)
    return current, losses


# ------------------------------------------------------------------------------ buffers


def buffers_into_update(update: Tensors, buffers: Tensors, global_state: Tensors, policy: str) -> list[str]:
    """``noise``: add each float buffer's change to ``update`` (it is then clipped and noised); returns their keys."""
    if policy != "noise":
        return []
    keys = [k for k, v in buffers.items() if v.is_floating_point()]
    for k in keys:
        update[k] = buffers[k] - global_state[k].to(buffers[k].device)
    return keys


def sent_buffers(buffers: Tensors, defended: Tensors, noised: list[str], global_state: Tensors,
                 policy: str) -> Tensors:
    """What the client sends for each buffer: raw (share), the global value (withhold), global + defended change (noise)."""
    out = {}
    for k, v in buffers.items():
        if policy == "share":
            out[k] = v
        elif k in noised:
            out[k] = global_state[k].to(defended[k].device) + defended[k]
        else:
            out[k] = global_state[k]
    return out


def release_update(config: Any, pipeline: DefensePipeline, update: Tensors, buffers: Tensors, global_state: Tensors,
                   kind: str, context: Callable[[], DefenseContext]) -> tuple[Tensors, int]:
    """What one client sends (same keys as ``global_state``) and its payload bytes.

    ``update``: gradient (``kind`` gradient) or ``w_local - w_global``; ``buffers``: after local
    training. The only way out of a client: the audit sends its canaries through here too.
    """
    update = dict(update)
    policy = release_policy(config)[0]
    noised = buffers_into_update(update, buffers, global_state, policy)
    payload = dense_bytes(update)
    if len(pipeline):
        update = pipeline(update, context())
        payload = pipeline.payload_bytes(update)
    sent = sent_buffers(buffers, update, noised, global_state, policy)
    for k, v in update.items():
        if k not in noised:
            sent[k] = v if kind == "gradient" else global_state[k].to(v.device) + v
    return {k: sent[k].detach().cpu() for k in global_state}, payload
