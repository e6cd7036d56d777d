"""Input-Gradient Smoothness Analysis (IGSA): how smoothly a model's parameter gradient follows its input.

The SoK (Du et al. 2024, sec. 5.1.1, Eqs. 9-10) explains when gradient inversion
works by the smoothness of the "input -> gradient" map ``x -> g(x) = d loss(f(x), y)
/ d theta``: it takes the Jacobian ``J(x) = dg/dx``, evaluates it at points sampled
within a radius of data points, averages per-layer norms with more weight on
shallow layers, and calls the model smoother (easier to invert) when IGSA is
higher. The equations' symbols did not survive in our copy of the paper, so the
exact estimator is ours and is stated here in full:

For ``n`` data points ``(x_i, y_i)`` (normalized inputs of dimension ``d``) and
``samples`` points per data point, ``x' = x_i + radius * sqrt(d) * u`` with ``u``
uniform on the unit sphere (so the per-pixel RMS perturbation is ``radius``),

* per parameter tensor ``l``: the relative Jacobian norm
  ``r_l(x') = ||J_l(x')||_F / (sqrt(d) * ||g_l(x')||)``, the RMS change of the
  layer's gradient per unit change of one input coordinate, relative to the
  gradient's own size (a cosine-matching attack only sees directions, so the
  scale of ``g`` must not count). ``||J_l||_F^2 = E_v ||J_l v||^2`` for
  ``v ~ N(0, I_d)`` (Hutchinson), estimated with ``probes`` Jacobian-vector
  products (forward-over-reverse autodiff, ``torch.func.jvp`` of ``torch.func.grad``);
* ``R_l``: the mean of ``r_l`` over all sampled points;
* roughness ``R = sum_l w_l R_l`` with ``w_l = (L - l) / sum_k (L - k)`` for
  ``l = 0..L-1`` in the model's parameter order (linearly decreasing from the input
  side: "more weight on shallow layers");
* ``IGSA = 1 / R``. High IGSA: the gradient changes slowly and predictably with the
  input, so gradient matching has a smooth landscape.

The model is evaluated in eval mode (BatchNorm running statistics, no dropout): a
per-example gradient of a train-mode BatchNorm model is not defined for one image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

__all__ = ["IGSAResult", "gradient_jvp", "igsa", "shallow_first_weights"]


def shallow_first_weights(n_layers: int) -> torch.Tensor:
    """``(L - l) / L`` for ``l = 0..L-1``: IGSA's "more weight on shallow layers" (normalized by the caller).

    The same numbers as the gradient-matching objectives' ``linear`` layer weights,
    owned here because they define the IGSA estimator itself.
    """
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    return torch.arange(n_layers, 0, -1, dtype=torch.float32) / n_layers


@dataclass(frozen=True)
class IGSAResult:
    """IGSA and its parts: ``roughness`` = 1 / IGSA, per-layer mean relative Jacobian norms and weights."""

    igsa: float
    roughness: float
    layers: dict[str, float]
    weights: dict[str, float]
    points: int
    probes: int
    radius: float


def gradient_jvp(model: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                 x: torch.Tensor, y: torch.Tensor, v: torch.Tensor
                 ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The parameter gradient at one input ``x`` (C, H, W) and its derivatives along the probes ``v`` (P, C, H, W).

    Returns ``(g, jv)``: per parameter name, ``g[name]`` (P, *shape) repeats the gradient,
    ``jv[name]`` (P, *shape) holds ``J(x) v_p`` (forward-over-reverse, one vmapped pass)."""
    def gradient(inp: torch.Tensor) -> dict[str, torch.Tensor]:
        def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
            out = functional_call(model, (p, buffers), (inp.unsqueeze(0),))
            return nn.functional.cross_entropy(out, y.unsqueeze(0))

        return grad(loss)(params)

    return vmap(lambda vec: jvp(gradient, (x,), (vec,)))(v)


def igsa(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    radius: float = 0.05,
    samples: int = 2,
    probes: int = 4,
    seed: int = 0,
) -> IGSAResult:
    """IGSA of ``model`` around ``images`` (normalized, (n, C, H, W)) with ``labels`` (n,); see the module doc.

    Defaults: radius 0.05 (per-pixel RMS, in normalized units), 2 sampled points per
    image, 4 probe directions per point. Random draws use a CPU generator seeded with
    ``seed`` (the same points on every device)."""
    if images.dim() != 4 or labels.shape != images.shape[:1]:
        raise ValueError(f"images must be (n, C, H, W) and labels (n,), got {tuple(images.shape)}, "
                         f"{tuple(labels.shape)}")
    if not radius >= 0 or samples < 1 or probes < 1:
        raise ValueError(f"need radius >= 0, samples >= 1 and probes >= 1, got {radius}, {samples}, {probes}")
    device = images.device
    was_training = model.training
    model.eval()
    try:
        params = {n: p.detach() for n, p in model.named_parameters()}
        buffers = {n: b.detach() for n, b in model.named_buffers()}
        names = list(params)
        gen = torch.Generator().manual_seed(seed)
        n, d = images.shape[0], images[0].numel()

        totals = torch.zeros(len(names), dtype=torch.float64)
        count = 0
        for i in range(n):
            x0, y = images[i].detach(), labels[i]
            for _ in range(samples):
                u = torch.randn(x0.shape, generator=gen)
                x = x0 + (radius * math.sqrt(d) * u / u.norm()).to(device, x0.dtype)
                v = torch.randn((probes, *x0.shape), generator=gen).to(device, x0.dtype)

                g, jv = gradient_jvp(model, params, buffers, x, y, v)
                jnorm = torch.stack([jv[n].flatten(1).pow(2).sum(1).mean().sqrt() for n in names])  # ||J_l||_F
                gnorm = torch.stack([g[n][0].norm() for n in names])
                totals += (jnorm / (math.sqrt(d) * gnorm.clamp_min(1e-30))).double().cpu()  # one transfer per point
                count += 1
    finally:
        model.train(was_training)
    per_layer = (totals / count).tolist()
    w = shallow_first_weights(len(names)).double()
    w = (w / w.sum()).tolist()
    roughness = sum(wl * r for wl, r in zip(w, per_layer))
    return IGSAResult(
        igsa=1.0 / roughness if roughness > 0 else math.inf,
        roughness=roughness,
        layers=dict(zip(names, per_layer)),
        weights=dict(zip(names, w)),
        points=count,
        probes=probes,
        radius=radius,
    )
