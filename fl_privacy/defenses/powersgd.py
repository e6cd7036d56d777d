"""PowerSGD low-rank compression ("powersgd"), as PyTorch's DDP communication hook does it.

Vogels, Karimireddy & Jaggi 2019, "PowerSGD: Practical low-rank gradient compression for
distributed optimization" (Alg. 1: one step of subspace/power iteration with warm start and
error feedback); evaluated as a privacy defense at ranks 1, 2, 4, 30, 50 by Li et al.
(Li et al., §2.2, §3.1 Eqs. (3)-(5), Table 1). The mechanics follow
``torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook`` (``shared/docs/REFERENCES.md``,
"Defenses"):

* every tensor is viewed as a matrix ``M`` of shape ``(n, m) = (shape[0], numel / shape[0])``;
  the rank used is ``r = min(n, m, rank)``; the tensor is compressed only when
  ``(n + m) * r * min_compression_rate < n * m`` (the hook's ``_should_compress``); 1-D
  tensors (biases, norms) and tensors where compression does not pay are sent unchanged;
* per call: ``M <- M + error`` (error feedback), ``Q`` = the previous call's ``Q`` (warm
  start) or standard normal on the first call, ``Q`` orthogonalized, ``P = M Q``,
  ``P`` orthogonalized, ``Q = M^T P``, ``M_hat = P Q^T``, ``error <- M - M_hat``.

Orthogonalization: the hook uses Gram-Schmidt for r <= 2 and QR otherwise; we use
``torch.linalg.qr`` (reduced) throughout. Both return an orthonormal basis of the same
column space, differing only by the sign of each column, and ``M_hat = P (M^T P)^T =
P P^T M`` is the projection of ``M`` on span(M Q), which does not depend on those signs
(nor does the next warm start, which only uses span(Q)). So the output is the same as the
hook's up to float rounding; QR also stays finite on a zero matrix where Gram-Schmidt with
the hook's default epsilon 0 divides by zero.

Differences from distributed data-parallel training, where P and Q are all-reduced
(averaged) across workers so that every worker decodes the same low-rank approximation of
the *mean* gradient: here each FL client compresses its own update independently with its
own warm-start ``Q`` and error buffer (kept in ``context.state`` across the rounds it takes
part in), and the server receives the decompressed ``P_i Q_i^T`` of each client (what the
curious server records; it carries the same information as the pair ``(P_i, Q_i)``). The
hook's ``start_powerSGD_iter`` warm-up of uncompressed steps is not reproduced: the update
is compressed from the first round.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from pydantic import Field

from fl_privacy.defenses.base import Defense, DefenseContext, Update, register_defense
from fl_privacy.defenses.noise import standard_normal
from fl_privacy.defenses.params import Count, DefenseParams, Number

__all__ = ["PowerSGD", "compresses", "effective_rank", "floats_for_tensor", "matrix_shape", "orthonormalize"]

DEFAULT_MIN_COMPRESSION_RATE = 2.0  # the DDP hook's default


def matrix_shape(shape: Sequence[int]) -> tuple[int, int] | None:
    """``(shape[0], numel / shape[0])`` for tensors with >= 2 dimensions, else None (never compressed)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        return None
    n = shape[0]
    return n, (math.prod(shape) // n if n else 0)


def effective_rank(shape: Sequence[int], rank: int) -> int:
    """The rank the hook actually uses for a tensor: ``min(n, m, rank)`` (0 for 1-D tensors)."""
    nm = matrix_shape(shape)
    return 0 if nm is None else min(nm[0], nm[1], rank)


def compresses(shape: Sequence[int], rank: int, min_compression_rate: float = DEFAULT_MIN_COMPRESSION_RATE) -> bool:
    """The hook's rule: compress iff ``(n + m) * r * min_compression_rate < n * m`` (never for 1-D)."""
    nm = matrix_shape(shape)
    if nm is None:
        return False
    n, m = nm
    return (n + m) * effective_rank(shape, rank) * min_compression_rate < n * m


def floats_for_tensor(shape: Sequence[int], rank: int,
                      min_compression_rate: float = DEFAULT_MIN_COMPRESSION_RATE) -> int:
    """Floats PowerSGD sends for one tensor: ``(n + m) * r`` (P and Q) if compressed, else ``numel``."""
    if compresses(shape, rank, min_compression_rate):
        n, m = matrix_shape(shape)  # type: ignore[misc]
        return (n + m) * effective_rank(shape, rank)
    return math.prod(int(s) for s in shape)


def orthonormalize(matrix: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis of the columns of ``matrix`` (reduced QR; see the module docstring)."""
    return torch.linalg.qr(matrix, mode="reduced").Q


@register_defense
class PowerSGD(Defense):
    """Rank-``rank`` PowerSGD compression of every >= 2-D tensor where it pays (Vogels et al. 2019, Alg. 1).

    Parameters
    ----------
    rank: int >= 1
        Target rank r (Li et al. use 1, 2, 4, 30, 50).
    warm_start: bool = True
        Reuse the previous call's Q (``context.state``) instead of a fresh Gaussian Q: over
        rounds this runs subspace iteration, so on a slowly changing update the approximation
        converges to the best rank-r one (Eckart-Young, Li et al. Eq. (4)).
    error_feedback: bool = True
        Add the previous residual ``M - M_hat`` before compressing and keep the new one in
        ``context.state``; then sum(true updates) = sum(sent updates) + current error.
    min_compression_rate: float > 0 (default 2, as the hook)
        A tensor is compressed only when ``(n + m) * r * min_compression_rate < n * m``.

    ``payload_bytes``: ``4 * (n + m) * r`` per compressed tensor (P and Q in float32) plus
    ``4 * numel`` for every other tensor; ``floats_sent`` gives the same count in floats.
    Random first ``Q``: standard normal drawn from ``context.generator``.
    """

    name = "powersgd"

    class Params(DefenseParams):
        rank: Count = Field(ge=1)
        warm_start: bool = True
        error_feedback: bool = True
        min_compression_rate: Number = Field(default=DEFAULT_MIN_COMPRESSION_RATE, gt=0)

    def __init__(
        self,
        *,
        rank: int,
        warm_start: bool = True,
        error_feedback: bool = True,
        min_compression_rate: float = DEFAULT_MIN_COMPRESSION_RATE,
    ) -> None:
        p = self.validate(rank=rank, warm_start=warm_start, error_feedback=error_feedback,
                          min_compression_rate=min_compression_rate)
        self.rank, self.warm_start, self.error_feedback = p.rank, p.warm_start, p.error_feedback
        self.min_compression_rate = p.min_compression_rate
        super().__init__(rank=rank, warm_start=warm_start, error_feedback=error_feedback,
                         min_compression_rate=min_compression_rate)

    def _compresses(self, v: torch.Tensor) -> bool:
        return v.is_floating_point() and compresses(v.shape, self.rank, self.min_compression_rate)

    def apply(self, update: Update, context: DefenseContext) -> Update:
        out = {}
        for k, v in update.items():
            if not self._compresses(v):
                out[k] = v
                continue
            n, m = matrix_shape(v.shape)  # type: ignore[misc]
            r = effective_rank(v.shape, self.rank)
            work = torch.float64 if v.dtype == torch.float64 else torch.float32
            matrix = v.reshape(n, m).to(work)
            err_key, q_key = f"error/{k}", f"q/{k}"
            if self.error_feedback and err_key in context.state:
                matrix = matrix + context.state[err_key].to(device=v.device, dtype=work).reshape(n, m)
            previous = context.state.get(q_key) if self.warm_start else None
            if previous is not None and tuple(previous.shape) == (m, r):
                q = previous.to(device=v.device, dtype=work)
            else:
                q = standard_normal((m, r), context.generator, matrix)
            q = orthonormalize(q)
            p = orthonormalize(matrix @ q)
            q = matrix.T @ p
            approx = p @ q.T
            if self.error_feedback:
                context.state[err_key] = (matrix - approx).detach()
            if self.warm_start:
                context.state[q_key] = q.detach()
            out[k] = approx.reshape(v.shape).to(v.dtype)
        return out

    def floats_sent(self, update: Update) -> int:
        """Floats a client sends: ``(n + m) * r`` per compressed tensor, ``numel`` for the rest."""
        return sum(
            floats_for_tensor(v.shape, self.rank, self.min_compression_rate) if v.is_floating_point() else v.numel()
            for v in update.values()
        )

    def payload_bytes(self, update: Update) -> int:
        total = 0
        for v in update.values():
            if self._compresses(v):
                total += 4 * floats_for_tensor(v.shape, self.rank, self.min_compression_rate)
            elif v.is_floating_point():
                total += 4 * v.numel()
            else:
                total += v.numel() * v.element_size()
        return total
