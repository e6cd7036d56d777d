"""Best iterate and early stopping for batched attack problems, kept on the device.

Every row of the batch (one restart of one victim) is its own problem. After
each evaluation of the optimised objective at the current iterate, ``update``
keeps the best iterate so far per row (breaching's ``_run_trial`` returns the
candidate with the lowest objective seen, not the last one) and, with early
stopping on, marks a row done when its best objective has not improved by the
relative tolerance ``tol`` within the last ``window`` iterations. A done row is
frozen (``freeze`` puts its variables back after the optimiser step) and its
iteration count recorded. All bookkeeping is tensor ops: no host reads, except
``all_done``, which the loop calls every ``check_every`` iterations.
"""

from __future__ import annotations

import math

import torch


class BestIterate:
    """Per-row best objective, best variables, and early stopping state."""

    def __init__(self, variables: list[torch.Tensor], window: int = 0, tol: float = 0.0) -> None:
        rows = variables[0].shape[0]
        device = variables[0].device
        self.window, self.tol = int(window), float(tol)
        self.best_value = torch.full((rows,), math.inf, device=device)
        self.best = [v.detach().clone() for v in variables]
        self.ref_value = torch.full((rows,), math.inf, device=device)
        self.ref_iter = torch.zeros(rows, dtype=torch.long, device=device)
        self.used = torch.zeros(rows, dtype=torch.long, device=device)
        self.active = torch.ones(rows, dtype=torch.bool, device=device)
        self.check_every = max(1, min(50, self.window // 4)) if self.window else 0

    @staticmethod
    def _rows(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return mask.view(-1, *([1] * (like.dim() - 1)))

    def update(self, it: int | torch.Tensor, evaluated: list[torch.Tensor], value: torch.Tensor) -> None:
        """``value`` (rows,): the objective at ``evaluated`` (the variables before this iteration's step).

        Updates state in place only (``it`` may be a device counter), so a CUDA graph can capture it.
        """
        value = torch.nan_to_num(value.detach().to(self.best_value.dtype), nan=math.inf)
        better = (value < self.best_value) & self.active
        self.best_value.copy_(torch.where(better, value, self.best_value))
        for best, now in zip(self.best, evaluated):
            best.copy_(torch.where(self._rows(better, best), now.detach(), best))
        self.used.add_(self.active.long())
        if not self.window:
            return
        first = torch.isinf(self.ref_value)
        improved = self.active & (first | (value < self.ref_value - self.tol * self.ref_value.abs()))
        self.ref_value.copy_(torch.where(improved, value, self.ref_value))
        self.ref_iter.copy_(torch.where(improved, it, self.ref_iter))
        self.active.copy_(self.active & (it - self.ref_iter < self.window))

    def freeze(self, variables: list[torch.Tensor], before: list[torch.Tensor]) -> None:
        """Put the rows that are done back to where they were before the optimiser step."""
        if not self.window:
            return
        with torch.no_grad():
            for v, b in zip(variables, before):
                v.copy_(torch.where(self._rows(self.active, v), v, b))

    def all_done(self, it: int) -> bool:
        """Whether every row stopped (a host read, only every ``check_every`` iterations)."""
        return bool(self.window) and it % self.check_every == 0 and not bool(self.active.any())
