"""Sparsification defenses: Top-K SGD ("topk") and magnitude pruning ("prune").

Sparsification (S) is one of the SoK's four post-processing defenses (Du et al. 2024,
§6, [80]); DLG (Zhu et al. 2019) prunes small gradients and reports that above 20%
sparsity the attack fails (Menon et al. §I and Table I: sparsity 0.2 / 0.4);
Wang et al. (GradDefense) uses gradient compression "GC" = pruning the gradients below a
threshold (80% for DLG, 90% for the GIA) as a baseline. Li et al. (§2.2, Eq. (6),
Table 1) pair Top-K SGD with PowerSGD at matched compression ("Top-K level r").

Encoding (``payload_bytes``): a sparse tensor with ``k`` kept entries costs ``8 * k`` bytes
(k float32 values + k int32 indices); when that is not smaller than the dense ``4 * numel``
(k >= numel / 2, e.g. every 1-D tensor kept dense) the client sends the tensor dense, so a
tensor costs ``min(8 * k, 4 * numel)``.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from fl_privacy.defenses.base import Defense, DefenseContext, Update, register_defense
from fl_privacy.defenses.params import Count, DefenseParams, Number
from fl_privacy.defenses.powersgd import DEFAULT_MIN_COMPRESSION_RATE, floats_for_tensor

__all__ = ["MagnitudePrune", "TopK", "keep_largest", "sparse_bytes"]

_ROUNDING_GUARD = 1e-12  # ratio * n computed in floats: 0.1 * 30 = 3.0000000000000004 must give 3


def keep_largest(x: torch.Tensor, k: int) -> torch.Tensor:
    """``x`` with all but its ``k`` largest-magnitude entries set to zero (exactly ``k`` kept; ties arbitrary)."""
    n = x.numel()
    if k >= n:
        return x.clone()
    flat = x.reshape(-1)
    out = torch.zeros_like(flat)
    if k > 0:
        index = torch.topk(flat.abs(), k, sorted=False).indices
        out[index] = flat[index]
    return out.view_as(x)


def sparse_bytes(kept: int, numel: int) -> int:
    """Bytes for a tensor with ``kept`` non-dropped entries: sparse (value + int32 index) or dense, whichever is smaller."""
    return min(8 * kept, 4 * numel)


@register_defense
class TopK(Defense):
    """Top-K sparsification per tensor (Aji & Heafield 2017; Stich et al. 2018; Li et al. §2.2, Eq. (6)).

    Parameters (give exactly one of ``ratio`` and ``match_powersgd_rank``)
    ----------
    ratio: float in (0, 1]
        Keep ``k = ceil(ratio * numel)`` (at least 1) largest-magnitude entries of each tensor.
    match_powersgd_rank: int >= 1
        Li et al.'s "Top-K level r": for each >= 2-D tensor, ``k`` = the number of floats
        PowerSGD rank r sends for it, ``(n + m) * r`` (with ``r = min(n, m, rank)``) when
        PowerSGD compresses that tensor, else ``n * m`` (the tensor dense); 1-D tensors dense.
        The number of *values* sent (``floats_sent``) then equals PowerSGD's exactly; the
        bytes on the wire (``payload_bytes``) also count Top-K's int32 indices, so they are
        up to twice PowerSGD's.
    min_compression_rate: float > 0
        Only with ``match_powersgd_rank``: PowerSGD's rule for when compression pays
        (default 2, as the DDP hook and the ``powersgd`` defense).
    error_feedback: bool = False
        Memory / error feedback (Stich et al. 2018, "Sparsified SGD with memory", Alg. 1):
        ``acc = update + residual``; send ``topk(acc)``; ``residual <- acc - sent`` kept in
        ``context.state`` across rounds, so sum(true) - sum(sent) == residual.

    Deterministic (no randomness). ``payload_bytes``: ``min(8 k, 4 numel)`` per tensor.
    """

    name = "topk"

    class Params(DefenseParams):
        ratio: Number | None = Field(default=None, gt=0, le=1)
        match_powersgd_rank: Count | None = Field(default=None, ge=1)
        min_compression_rate: Number | None = Field(default=None, gt=0)
        error_feedback: bool = False

    def __init__(
        self,
        *,
        ratio: float | None = None,
        match_powersgd_rank: int | None = None,
        min_compression_rate: float | None = None,
        error_feedback: bool = False,
    ) -> None:
        if (ratio is None) == (match_powersgd_rank is None):
            raise ValueError(f"{self.name}: give exactly one of 'ratio' (in (0, 1]) or 'match_powersgd_rank' "
                             f"(integer >= 1), got ratio={ratio!r}, match_powersgd_rank={match_powersgd_rank!r}")
        p = self.validate(ratio=ratio, match_powersgd_rank=match_powersgd_rank,
                          min_compression_rate=min_compression_rate, error_feedback=error_feedback)
        self.ratio, self.rank = p.ratio, p.match_powersgd_rank
        if min_compression_rate is not None and self.rank is None:
            raise ValueError(f"{self.name}: parameter 'min_compression_rate' only applies with 'match_powersgd_rank'")
        self.min_compression_rate = (
            DEFAULT_MIN_COMPRESSION_RATE if p.min_compression_rate is None else p.min_compression_rate
        )
        self.error_feedback = p.error_feedback
        params: dict[str, object] = {"ratio": ratio} if ratio is not None else {"match_powersgd_rank": match_powersgd_rank}
        if min_compression_rate is not None:
            params["min_compression_rate"] = min_compression_rate
        super().__init__(**params, error_feedback=error_feedback)

    def k_for(self, shape: tuple[int, ...] | torch.Size) -> int:
        """Entries kept for a tensor of ``shape``."""
        numel = math.prod(int(s) for s in shape)
        if numel == 0:
            return 0
        if self.rank is not None:
            return floats_for_tensor(shape, self.rank, self.min_compression_rate) if len(shape) >= 2 else numel
        assert self.ratio is not None
        return min(numel, max(1, math.ceil(self.ratio * numel * (1 - _ROUNDING_GUARD))))

    def apply(self, update: Update, context: DefenseContext) -> Update:
        out = {}
        for k, v in update.items():
            if not v.is_floating_point():
                out[k] = v
                continue
            key = f"residual/{k}"
            acc = v
            if self.error_feedback and key in context.state:
                acc = v + context.state[key].to(device=v.device, dtype=v.dtype)
            sent = keep_largest(acc, self.k_for(v.shape))
            if self.error_feedback:
                context.state[key] = (acc - sent).detach()
            out[k] = sent
        return out

    def floats_sent(self, update: Update) -> int:
        """Values sent (indices not counted): ``sum k`` over tensors; matches ``powersgd``'s ``floats_sent`` at level r."""
        return sum(self.k_for(v.shape) if v.is_floating_point() else v.numel() for v in update.values())

    def payload_bytes(self, update: Update) -> int:
        return sum(
            sparse_bytes(self.k_for(v.shape), v.numel()) if v.is_floating_point() else v.numel() * v.element_size()
            for v in update.values()
        )


@register_defense
class MagnitudePrune(Defense):
    """Zero the ``percent``% smallest-magnitude entries of each tensor (GC of Wang et al.; DLG's pruning defense).

    Parameters
    ----------
    percent: float in [0, 100]
        Pruning rate; Wang et al. use 80 (vs DLG) and 90 (vs the GIA); Menon et al.'s "sparsity
        0.2 / 0.4" are 20 / 40.

    Exactly ``floor(percent / 100 * numel)`` entries of each tensor are zeroed (floor: never
    more than the configured fraction; the product is computed with a 1e-12 relative guard
    so that e.g. 90% of 10 is 9), namely the smallest in magnitude; ties are broken
    arbitrarily so the count is exact (a plain threshold at the percentile would prune every
    tied entry). Deterministic. ``payload_bytes``: ``min(8 * kept, 4 * numel)`` per tensor.
    """

    name = "prune"

    class Params(DefenseParams):
        percent: Number = Field(ge=0, le=100)

    def __init__(self, *, percent: float) -> None:
        self.percent = self.validate(percent=percent).percent
        super().__init__(percent=percent)

    def pruned_for(self, numel: int) -> int:
        """Entries zeroed in a tensor of ``numel`` elements."""
        return min(numel, math.floor(self.percent / 100.0 * numel * (1 + _ROUNDING_GUARD)))

    def apply(self, update: Update, context: DefenseContext) -> Update:
        return {
            k: (keep_largest(v, v.numel() - self.pruned_for(v.numel())) if v.is_floating_point() else v)
            for k, v in update.items()
        }

    def payload_bytes(self, update: Update) -> int:
        return sum(
            sparse_bytes(v.numel() - self.pruned_for(v.numel()), v.numel()) if v.is_floating_point()
            else v.numel() * v.element_size()
            for v in update.values()
        )
