"""What every GIA optimisation loop shares: the lr schedule, the traced iterations, the trace entries.

The trace is written into a device tensor on the logged iterations only and
copied to the host once at the end (no host syncs in the hot loop); the progress
bar reads the objective every 100 iterations.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch

__all__ = ["ProgressBar", "log_step", "logged_iterations", "lr_scheduler", "trace_table"]


class ProgressBar(Protocol):
    """What the loops use of a progress bar (``fl_privacy.progress.progress_bar``, tqdm)."""

    def update(self, n: int = 1) -> object: ...

    def set_postfix(self, **values: object) -> object: ...


class _Budget(Protocol):
    iterations: int
    log_every: int


class _Schedule(Protocol):
    iterations: int
    lr_schedule: str


def lr_scheduler(opt: torch.optim.Optimizer, cfg: _Schedule) -> torch.optim.lr_scheduler.LRScheduler | None:
    """"steps": lr x0.1 at 3/8, 5/8, 7/8 of the run; "cosine": cosine decay to 0; "none": no scheduler."""
    if cfg.lr_schedule == "steps":
        n = cfg.iterations
        milestones = [int(n * 3 / 8), int(n * 5 / 8), int(n * 7 / 8)]
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.iterations)
    return None


def logged_iterations(cfg: _Budget) -> list[int]:
    """Iterations that enter the trace: every ``log_every`` (0: about 100 points), and always the last."""
    every = cfg.log_every or max(1, math.ceil(cfg.iterations / 100))
    its = list(range(0, cfg.iterations, every))
    if its[-1] != cfg.iterations - 1:
        its.append(cfg.iterations - 1)
    return its


def log_step(it: int, total: torch.Tensor, trace: torch.Tensor, slot: dict[int, int], bar: ProgressBar | None,
             iterations: int) -> None:
    """One optimiser step's trace entry (on logged iterations) and progress-bar tick; ``total`` detached."""
    if it in slot:
        trace[slot[it]] = total.to(trace.dtype)
    if bar is not None:
        bar.update(1)
        if it % 100 == 0 or it == iterations - 1:
            bar.set_postfix(objective=f"{float(total.min()):.4g}")


def trace_table(logged: list[int], trace: torch.Tensor) -> np.ndarray:
    """The trace on the host: (n_logged, 1 + columns), the iteration, then the traced losses."""
    return np.column_stack([np.asarray(logged, dtype=np.float64), trace.cpu().double().numpy()])
