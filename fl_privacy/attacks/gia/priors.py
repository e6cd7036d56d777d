"""Image priors (regularisers) on candidate batches, batched over restarts.

Images come as ``x`` of shape ``(R, B, C, H, W)`` (restarts, batch, channels,
height, width) in the attack's (normalised) input space; every prior returns
one value per restart, a ``(R,)`` tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _check_images(x: torch.Tensor) -> None:
    if x.dim() != 5:
        raise ValueError(f"images must have shape (R, B, C, H, W), got {tuple(x.shape)}")


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation, ``mean |dx| + mean |dy|`` per restart.

    As Inverting Gradients (``inversefed``) and breaching's default
    ``TotalVariation`` (inner and outer exponent 1): the mean absolute
    difference of horizontally adjacent pixels plus that of vertically adjacent
    pixels, each averaged over batch, channels and positions. A constant image
    has TV 0; the image ``[[0, 1], [2, 3]]`` has ``1 + 2 = 3``.
    """
    _check_images(x)
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    return dx + dy


def l2_norm(x: torch.Tensor) -> torch.Tensor:
    """Image L2 prior of See Through Gradients / DeepInversion: ``||x_b||_2`` averaged over the batch."""
    _check_images(x)
    return x.flatten(2).norm(dim=2).mean(1)


def bn_statistics(
    feature_stats: Sequence[tuple[torch.Tensor, torch.Tensor]],
    target_stats: Sequence[tuple[torch.Tensor, torch.Tensor]],
    first_layer_factor: float = 10.0,
) -> torch.Tensor:
    """BatchNorm-statistics prior of See Through Gradients (Yin et al. 2021).

    ``sum_l f_l (||mu_l - mu*_l||_2 + ||var_l - var*_l||_2)`` over BN layers,
    with ``f_0 = first_layer_factor`` (10 in Yin et al./DeepInversion) and
    ``f_l = 1`` otherwise. ``feature_stats[l]`` is the candidate batch's
    (mean, biased variance) of the BN layer's input per channel, each of shape
    ``(R, C_l)`` (one row per restart); ``target_stats[l]`` the victim batch's
    (mean, var), each ``(C_l,)``. The engine captures the candidates' statistics
    with forward hooks on the BN layers; the target needs ``obs.bn_statistics``.
    """
    if len(feature_stats) != len(target_stats) or not feature_stats:
        raise ValueError(
            f"need the same non-zero number of BN layers, got {len(feature_stats)} candidate "
            f"and {len(target_stats)} target statistics"
        )
    out = 0
    for i, ((mu, var), (mu_t, var_t)) in enumerate(zip(feature_stats, target_stats)):
        factor = first_layer_factor if i == 0 else 1.0
        term = (mu - mu_t).norm(dim=-1) + (var - var_t).norm(dim=-1)
        out = out + factor * term
    return out  # type: ignore[return-value]
