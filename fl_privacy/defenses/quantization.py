"""Quantization defenses: uniform quantization by number of levels ("quantize") and scaled sign ("sign").

Quantization (Q) is the defense with the best privacy-utility trade-off in the SoK (Du et
al. 2024, the SoK §6, after QSGD [77]). Menon et al. (§III "Uniform
Quantization" / "Stochastic Rounding", Table I) quantize DLG's gradients to 16, 40, 120 and
240 uniform levels over the range of the gradient tensor, deterministically or with
stochastic rounding, and find 16 levels already stop DLG on LeNet.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from fl_privacy.defenses.base import Defense, DefenseContext, Update, register_defense
from fl_privacy.defenses.noise import uniform01
from fl_privacy.defenses.params import Count, DefenseParams

__all__ = ["SignCompression", "UniformQuantization", "quantize_tensor"]

MAX_BITS = 24  # float32 has a 24-bit significand: more levels would not be distinct values


def _work_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def quantize_tensor(
    x: torch.Tensor, levels: int, *, stochastic: bool = False, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Map ``x`` onto ``levels`` equally spaced values spanning ``[x.min(), x.max()]``.

    With ``step = (max - min) / (levels - 1)`` and ``y = (x - min) / step`` (Menon et al.,
    Menon et al. §III), the level index is ``round(y)`` (nearest level: error <= step / 2), or,
    with stochastic rounding, ``floor(y) + 1`` with probability ``y - floor(y)`` and
    ``floor(y)`` otherwise, i.e. ``floor(y + u)`` with ``u ~ U[0, 1)``: unbiased,
    ``E[q(x)] = x``, error < step. A constant tensor is returned unchanged.
    """
    if x.numel() == 0:
        return x.clone()
    work = x.to(_work_dtype(x))
    lo, hi = work.amin(), work.amax()
    step = (hi - lo) / (levels - 1)
    safe_step = torch.where(step > 0, step, torch.ones_like(step))
    y = (work - lo) / safe_step
    if stochastic:
        if generator is None:
            raise ValueError("stochastic rounding needs a generator")
        index = torch.floor(y + uniform01(y.shape, generator, y).to(y.dtype))
    else:
        index = torch.round(y)
    index = index.clamp_(0, levels - 1)
    return (lo + index * step).to(x.dtype)


@register_defense
class UniformQuantization(Defense):
    """Uniform quantization of each tensor to ``levels`` values over its own [min, max] (Menon et al. §III).

    Parameters
    ----------
    levels: int in [2, 2**24]
        Number of quantization levels (Menon et al. use 16, 40, 120, 240).
    bits: int in [1, 24]
        Alternative to ``levels``: ``levels = 2**bits`` (give exactly one of the two).
    stochastic: bool = False
        Stochastic rounding (Menon et al. §III): round up with probability equal to the
        fractional position between the two neighbouring levels, so the quantizer is
        unbiased; draws come from ``context.generator``.

    Each tensor ends up with at most ``levels`` distinct values (exactly ``levels`` when its
    values cover every level). ``payload_bytes``: per tensor ``ceil(numel * ceil(log2 levels) / 8)``
    bytes of level indices plus 8 bytes (float32 minimum and float32 step).
    """

    name = "quantize"

    class Params(DefenseParams):
        levels: Count | None = Field(default=None, ge=2, le=2**MAX_BITS)
        bits: Count | None = Field(default=None, ge=1, le=MAX_BITS)
        stochastic: bool = False

    def __init__(self, *, levels: int | None = None, bits: int | None = None, stochastic: bool = False) -> None:
        if (levels is None) == (bits is None):
            raise ValueError(f"{self.name}: give exactly one of 'levels' or 'bits' (got levels={levels!r}, bits={bits!r})")
        p = self.validate(levels=levels, bits=bits, stochastic=stochastic)
        self.levels = 2 ** p.bits if p.bits is not None else p.levels
        self.bits_per_element = math.ceil(math.log2(self.levels))
        self.stochastic = p.stochastic
        params = {"levels": levels} if levels is not None else {"bits": bits}
        super().__init__(**params, stochastic=stochastic)

    def apply(self, update: Update, context: DefenseContext) -> Update:
        return {
            k: (quantize_tensor(v, self.levels, stochastic=self.stochastic, generator=context.generator)
                if v.is_floating_point() else v)
            for k, v in update.items()
        }

    def payload_bytes(self, update: Update) -> int:
        total = 0
        for v in update.values():
            if v.is_floating_point():
                total += math.ceil(v.numel() * self.bits_per_element / 8) + 8
            else:
                total += v.numel() * v.element_size()
        return total


@register_defense
class SignCompression(Defense):
    """Scaled 1-bit sign compression: each tensor ``p`` is sent as ``mean(|p|) * sign(p)``.

    signSGD (Bernstein et al. 2018, the Li et al. survey's [17], Li et al. §2.1) sends only
    signs; its scale is the learning rate, and plain sign compression is biased. We use the
    scale of EF-SignSGD (Karimireddy et al. 2019, "Error feedback fixes signSGD", Alg. 1,
    Li et al.'s [18]): ``||p||_1 / d = mean(|p|)`` per tensor, which makes the compressed
    vector have the same L1 norm as ``p``. With ``error_feedback=True``, ``p = update + e``
    and the residual ``e <- p - sent`` is kept in ``context.state`` across rounds
    (Karimireddy et al. Alg. 1 lines 4-6).

    A 1-bit code has no zero: elements with ``p == 0`` are sent as ``+scale``, so every
    output element is exactly ``+scale`` or ``-scale``.
    ``payload_bytes``: per tensor ``ceil(numel / 8)`` bytes of signs + 4 bytes (float32 scale).
    """

    name = "sign"

    class Params(DefenseParams):
        error_feedback: bool = False

    def __init__(self, *, error_feedback: bool = False) -> None:
        self.error_feedback = self.validate(error_feedback=error_feedback).error_feedback
        super().__init__(error_feedback=error_feedback)

    def apply(self, update: Update, context: DefenseContext) -> Update:
        out = {}
        for k, v in update.items():
            if not v.is_floating_point() or v.numel() == 0:
                out[k] = v
                continue
            p = v
            key = f"error/{k}"
            if self.error_feedback and key in context.state:
                p = v + context.state[key].to(device=v.device, dtype=v.dtype)
            scale = p.abs().mean()
            sent = torch.where(p >= 0, scale, -scale)
            if self.error_feedback:
                context.state[key] = (p - sent).detach()
            out[k] = sent
        return out

    def payload_bytes(self, update: Update) -> int:
        total = 0
        for v in update.values():
            if v.is_floating_point():
                total += math.ceil(v.numel() / 8) + 4
            else:
                total += v.numel() * v.element_size()
        return total
