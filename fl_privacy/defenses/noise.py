"""Additive-noise defenses ("gaussian", "laplace") and the random-number helpers of this package.

Perturbation (P) is one of the SoK's four post-processing defenses (Du et al. 2024,
§6, after Naseri et al. [82]); Wang et al. (GradDefense) use Gaussian and
Laplace noise as its DP-G / DP-L baselines ("noise variance 1e-2").

Randomness: every draw comes from ``context.generator`` (seeded per client and round by
the client). Noise is drawn on the CPU with that generator and then moved to the update's
device, so a defended update is bit-for-bit the same whether the client runs on CPU or
CUDA (the cost is one host-to-device copy per tensor).
"""

from __future__ import annotations

import torch
from pydantic import Field

from fl_privacy.defenses.base import Defense, DefenseContext, Update, register_defense
from fl_privacy.defenses.clipping import clip_by_global_norm
from fl_privacy.defenses.params import Count, DefenseParams, Number

__all__ = ["GaussianNoise", "LaplaceNoise", "standard_laplace", "standard_normal", "uniform01"]


# --------------------------------------------------------------------- random helpers


def _draw_dtype(like: torch.Tensor) -> torch.dtype:
    return torch.float64 if like.dtype == torch.float64 else torch.float32


def standard_normal(shape: tuple[int, ...] | torch.Size, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """N(0, 1) samples of ``shape`` drawn on the CPU from ``generator``, on ``like``'s device and dtype."""
    draw = torch.randn(tuple(shape), generator=generator, dtype=_draw_dtype(like))
    return draw.to(device=like.device, dtype=like.dtype)


def uniform01(shape: tuple[int, ...] | torch.Size, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """U[0, 1) samples drawn on the CPU from ``generator``, on ``like``'s device (float32/float64)."""
    draw = torch.rand(tuple(shape), generator=generator, dtype=_draw_dtype(like))
    return draw.to(device=like.device)


def standard_laplace(shape: tuple[int, ...] | torch.Size, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Laplace(0, 1) samples: the difference of two independent Exp(1) draws (variance 2)."""
    pair = torch.empty((2, *tuple(shape)), dtype=_draw_dtype(like)).exponential_(1.0, generator=generator)
    return (pair[0] - pair[1]).to(device=like.device, dtype=like.dtype)


# ----------------------------------------------------------------------------- gaussian


@register_defense
class GaussianNoise(Defense):
    """Add N(0, std^2) to every element of the update (DP-G; client-level DP-FedAvg when clipped).

    Two ways to configure it:

    * ``std`` (>= 0), optionally with ``clip`` (> 0) and ``delta``: clip the whole update to
      L2 norm ``clip`` first (if given), then add noise of standard deviation ``std``.
    * ``clip``, ``epsilon``, ``delta``, ``rounds``: calibrate to a target (epsilon, delta) for a
      client that takes part in ``rounds`` rounds. The whole update is clipped to L2 norm
      ``clip`` (McMahan et al. 2018, Alg. 1) and the noise std is ``noise_multiplier * clip``.

    With ``clip`` and ``delta`` this stage is the ``local`` DP mechanism (``fl_privacy.dp``):
    each client noises its own update and the curious server sees every noisy update and
    who took part, so the guarantee against it has no sampling amplification and composes
    over the rounds that client took part in (``neighbouring``: ``add_or_remove``, sensitivity
    ``clip``, or ``replace_one``, sensitivity ``2 clip``). ``sample_rate`` is accepted only as
    1.0: a smaller rate would claim an amplification the server does not grant. Without a
    clip there is no sensitivity bound and no guarantee is reported.
    """

    name = "gaussian"

    class Params(DefenseParams):
        std: Number | None = Field(default=None, ge=0)
        clip: Number | None = Field(default=None, gt=0)
        epsilon: Number | None = Field(default=None, gt=0)
        delta: Number | None = Field(default=None, gt=0, lt=1)
        rounds: Count | None = Field(default=None, ge=1)
        sample_rate: Number | None = None
        neighbouring: str = "add_or_remove"

    def __init__(
        self,
        *,
        std: float | None = None,
        clip: float | None = None,
        epsilon: float | None = None,
        delta: float | None = None,
        rounds: int | None = None,
        sample_rate: float | None = None,
        neighbouring: str = "add_or_remove",
    ) -> None:
        from fl_privacy.dp.accounting import RELATION_NAMES, noise_multiplier_for_target

        owner = self.name
        given = {"std": std, "clip": clip, "epsilon": epsilon, "delta": delta, "rounds": rounds,
                 "sample_rate": sample_rate}
        if neighbouring not in RELATION_NAMES:
            raise ValueError(f"{owner}: parameter 'neighbouring' must be one of {sorted(RELATION_NAMES)}, "
                             f"got {neighbouring!r}")
        if sample_rate is not None and sample_rate != 1.0:
            raise ValueError(f"{owner}: sample_rate {sample_rate!r} would claim client-sampling amplification, but "
                             "local noise gets none against the server that picks the clients: drop sample_rate, "
                             "or use privacy.mechanism: central with federation.sampling: poisson")
        p = self.validate(**given, neighbouring=neighbouring)
        self.neighbouring, self.clip, self.delta = neighbouring, p.clip, p.delta
        if (std is None) == (epsilon is None):
            raise ValueError(
                f"{owner}: give either 'std' (optionally with 'clip' and 'delta') or "
                f"'epsilon' with 'clip', 'delta' and 'rounds' (got std={std!r}, epsilon={epsilon!r})"
            )
        if std is not None:
            extra = [k for k in ("rounds", "sample_rate") if given[k] is not None]
            if extra:
                raise ValueError(f"{owner}: parameter(s) {extra} only calibrate the 'epsilon' mode; "
                                 "the report composes over the rounds each client really took part in")
            self.std = p.std
            self.noise_multiplier = None if self.clip is None else self.std / self.clip
        else:
            missing = [k for k in ("clip", "delta", "rounds") if given[k] is None]
            if missing:
                raise ValueError(f"{owner}: 'epsilon' needs parameter(s) {missing} as well")
            assert self.clip is not None and self.delta is not None
            self.noise_multiplier = noise_multiplier_for_target(p.epsilon, self.delta, p.rounds, neighbouring)
            self.std = self.noise_multiplier * self.clip
        params = {k: v for k, v in given.items() if v is not None}
        if neighbouring != "add_or_remove":
            params["neighbouring"] = neighbouring
        super().__init__(**params)

    def apply(self, update: Update, context: DefenseContext) -> Update:
        if self.clip is not None:
            update = clip_by_global_norm(update, self.clip)
        if self.std == 0.0:
            return dict(update)
        return {
            k: (v + self.std * standard_normal(v.shape, context.generator, v) if v.is_floating_point() else v)
            for k, v in update.items()
        }


# ------------------------------------------------------------------------------ laplace


@register_defense
class LaplaceNoise(Defense):
    """Add Laplace(0, b) noise (b = ``scale`` >= 0, std = sqrt(2) * b) to every element (DP-L).

    Wang et al.'s DP-L baseline. Without clipping the update has no bounded sensitivity, so
    this gives NO formal differential-privacy guarantee (none is reported); Plato's
    "epsilon" for its Laplace DP is really this scale (``shared/docs/REFERENCES.md``).
    Samples: the difference of two Exp(1) draws from ``context.generator``.
    """

    name = "laplace"

    class Params(DefenseParams):
        scale: Number = Field(ge=0)

    def __init__(self, *, scale: float) -> None:
        self.scale = self.validate(scale=scale).scale
        super().__init__(scale=scale)

    def apply(self, update: Update, context: DefenseContext) -> Update:
        if self.scale == 0.0:
            return dict(update)
        return {
            k: (v + self.scale * standard_laplace(v.shape, context.generator, v) if v.is_floating_point() else v)
            for k, v in update.items()
        }
