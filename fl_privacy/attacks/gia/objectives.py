"""Gradient-matching distances, batched over restarts.

Every function compares R candidate gradients with one target and returns a
``(R,)`` tensor, so one call scores all restarts of an attack at once:

* ``cand``: list of tensors, one per parameter tensor ("layer"), each of shape
  ``(R, *param_shape)`` (restart dimension first);
* ``target``: list of tensors of shape ``param_shape``, in the same order, or
  ``(V, *param_shape)`` for V victims optimised together: then the ``R = V * S``
  candidates are victim-major (rows ``v * S .. v * S + S - 1`` belong to victim
  ``v``), and each is compared with its own victim's target.

"Layer" means one parameter tensor (a weight or a bias), as in the reference
implementations (DLG, Inverting Gradients, breaching), which loop over
``model.parameters()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

Weights = Sequence[float] | torch.Tensor | None

_EPS = 1e-20


def _check(cand: Sequence[torch.Tensor], target: Sequence[torch.Tensor]) -> None:
    if len(cand) != len(target) or not cand:
        raise ValueError(f"need the same non-zero number of candidate and target tensors, got {len(cand)} and {len(target)}")
    victims = {t.shape[0] for g, t in zip(cand, target) if t.dim() == g.dim()}
    if len(victims) > 1 or (victims and cand[0].shape[0] % next(iter(victims))):
        raise ValueError(f"per-victim targets must share one leading size dividing {cand[0].shape[0]}, got {victims}")
    for i, (g, t) in enumerate(zip(cand, target)):
        if t.dim() == g.dim():
            t = t[0]
        if tuple(g.shape[1:]) != tuple(t.shape):
            raise ValueError(
                f"layer {i}: candidate shape {tuple(g.shape)} is not (R, *{tuple(t.shape)}); "
                "candidates need a leading restart dimension"
            )


def _weights(weights: Weights, n: int) -> list[float]:
    """Per-layer weights as Python floats (converted once, so no device syncs in the hot loop)."""
    if weights is None:
        return [1.0] * n
    values = weights.detach().cpu().tolist() if isinstance(weights, torch.Tensor) else [float(w) for w in weights]
    if len(values) != n:
        raise ValueError(f"got {len(values)} layer weights for {n} layers")
    return values


def _by_victim(g: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``g`` as (V, S, n) and ``t`` as (V or 1, 1, n): one target per victim, broadcast over its restarts."""
    victims = t.shape[0] if t.dim() == g.dim() else 1
    return g.reshape(victims, g.shape[0] // victims, -1), t.reshape(victims, 1, -1)


def _dot(g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """<g_r, t_r> for every candidate r (t_r: its victim's target): (R,)."""
    gv, tv = _by_victim(g, t)
    return (gv * tv).sum(2).reshape(-1)


def _diff_sq(g: torch.Tensor, t: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """||g_r - s_r t_r||^2 for every candidate r (``scale`` s: (R,) or None for 1): (R,)."""
    gv, tv = _by_victim(g, t)
    if scale is not None:
        tv = tv * scale.reshape(gv.shape[0], gv.shape[1], 1)
    return (gv - tv).pow(2).sum(2).reshape(-1)


def target_norms(target: Sequence[torch.Tensor], victims: bool = False) -> list[torch.Tensor]:
    """||t_l||^2 of every layer: a scalar, or (V,) for per-victim targets. Constant over an attack: computed once."""
    return [t.flatten(1).pow(2).sum(1) if victims else t.pow(2).sum() for t in target]


def _target_sq(t: torch.Tensor, like: torch.Tensor, norm: torch.Tensor | None = None) -> torch.Tensor:
    """||t||^2 per candidate (its victim's target): (R,) or a scalar for one shared target."""
    if t.dim() != like.dim():
        return t.pow(2).sum() if norm is None else norm
    norm = t.flatten(1).pow(2).sum(1) if norm is None else norm  # (V,)
    return norm.repeat_interleave(like.shape[0] // t.shape[0])


def _sq(g: torch.Tensor) -> torch.Tensor:
    """||g_r||^2 for every restart r: (R,)."""
    return g.pow(2).flatten(1).sum(1)


def layer_weights(n_layers: int, kind: Literal["uniform", "linear"] = "uniform") -> torch.Tensor:
    """Per-layer weights of the distance.

    ``"uniform"``: all ones. ``"linear"``: breaching's "linear" option, which
    emphasises the first layers (closest to the input): ``w_l = (n - l) / n``
    for ``l = 0..n-1``, i.e. 1 at the first parameter tensor down to ``1/n``
    (~0) at the last one.
    """
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    if kind == "uniform":
        return torch.ones(n_layers)
    if kind == "linear":
        return torch.arange(n_layers, 0, -1, dtype=torch.float32) / n_layers
    raise ValueError(f"layer weights kind must be 'uniform' or 'linear', got {kind!r}")


def l2_distance(cand: Sequence[torch.Tensor], target: Sequence[torch.Tensor], weights: Weights = None,
                norms: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """Squared Euclidean distance ``sum_l w_l ||g_l - t_l||^2`` (DLG, Zhu et al. 2019); ``norms`` unused."""
    _check(cand, target)
    w = _weights(weights, len(cand))
    return sum(wl * _diff_sq(g, t) for wl, g, t in zip(w, cand, target))  # type: ignore[return-value]


def cosine_distance(cand: Sequence[torch.Tensor], target: Sequence[torch.Tensor], weights: Weights = None,
                    norms: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """``1 - <g, t> / (||g|| ||t||)`` over all layers concatenated into one vector.

    Inverting Gradients (Geiping et al. 2020): the weights multiply each
    layer's contribution to the inner product and to both squared norms,
    ``1 - sum_l w_l <g_l,t_l> / sqrt(sum_l w_l ||g_l||^2) / sqrt(sum_l w_l ||t_l||^2)``.
    Ranges from 0 (parallel) over 1 (orthogonal) to 2 (anti-parallel).
    """
    _check(cand, target)
    w = _weights(weights, len(cand))
    dot = sum(wl * _dot(g, t) for wl, g, t in zip(w, cand, target))
    gn = sum(wl * _sq(g) for wl, g in zip(w, cand))
    norms = norms or [None] * len(cand)  # ``target_norms(target)``, when the caller keeps them
    tn = sum(wl * _target_sq(t, g, n) for wl, g, t, n in zip(w, cand, target, norms))
    return 1.0 - dot / (gn.clamp_min(_EPS).sqrt() * tn.clamp_min(_EPS).sqrt())  # type: ignore[union-attr]


def scaled_l2_distance(cand: Sequence[torch.Tensor], target: Sequence[torch.Tensor], weights: Weights = None,
                       norms: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """Scale-free squared L2: ``min_{s >= 0} sum_l w_l ||g_l - s t_l||^2``.

    For an update whose scale is unknown (FedAvg with an unknown schedule, where
    ``-delta = lr * sum of the steps' gradients``). The minimiser is closed-form,
    ``s* = max(0, <g,t>_w) / ||t||_w^2``; the distance is evaluated at ``s*``
    (its gradient w.r.t. ``g`` is exact by the envelope theorem). ``s >= 0``
    keeps the sign information: an anti-aligned candidate scores ``||g||^2``.
    """
    _check(cand, target)
    w = _weights(weights, len(cand))
    dot = sum(wl * _dot(g, t) for wl, g, t in zip(w, cand, target))
    norms = norms or [None] * len(cand)  # ``target_norms(target)``, when the caller keeps them
    tn = sum(wl * _target_sq(t, g, n) for wl, g, t, n in zip(w, cand, target, norms))
    s = dot.clamp_min(0) / tn.clamp_min(_EPS)  # type: ignore[union-attr]
    out = 0
    for wl, g, t in zip(w, cand, target):
        out = out + wl * _diff_sq(g, t, s)
    return out  # type: ignore[return-value]


OBJECTIVES = {"l2": l2_distance, "cosine": cosine_distance, "scaled_l2": scaled_l2_distance}
"""Objective name (``GIAConfig.objective``) -> distance function."""
