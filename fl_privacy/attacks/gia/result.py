"""What a gradient inversion attack returns (``GIAResult``) and how its restart is chosen."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["GIAResult", "pick_best_restart"]


def pick_best_restart(distance: torch.Tensor, notes: list[str]) -> tuple[torch.Tensor, int]:
    """Final distances on the CPU and the index of the best restart (a diverged one never wins; noted)."""
    finals = distance.detach().cpu()
    best = int(torch.argmin(torch.nan_to_num(finals.double(), nan=math.inf)))
    if not torch.isfinite(finals).all():
        notes.append(f"{int((~torch.isfinite(finals)).sum())} restart(s) diverged (non-finite objective)")
    return finals, best


@dataclass
class GIAResult:
    """Outcome of one attack on one update."""

    images: torch.Tensor
    """(B, C, H, W) of the best restart, in the attack's (normalised) space, on the CPU."""
    labels: torch.Tensor
    """(B,) labels used / inferred (argmax of the soft labels for "joint"), on the CPU."""
    objective: float
    """The best restart's final gradient distance (without priors or ``objective_scale``)."""
    restart_objectives: list[float]
    """Final gradient distance of every restart (NaN for a diverged one); best = argmin."""
    trace: np.ndarray
    """(n_logged, 1 + R): iteration, then the optimised loss (distance x scale + priors) of every restart."""
    iterations: int
    seconds: float
    seconds_per_iteration: float
    objective_used: str = ""
    """The distance actually used (an "l2" on an update of unknown scale becomes "scaled_l2")."""
    update_model: str = ""
    """How candidates were produced: "gradient" (FedSGD), "known_schedule" or "unknown_schedule" (FedAvg)."""
    best_restart: int = 0
    soft_labels: torch.Tensor | None = None
    """(B, K) label probabilities of the best restart ("joint" only)."""
    notes: list[str] = field(default_factory=list)
    """Automatic decisions and caveats worth recording in a report."""
    iterations_used: int = 0
    """Iterations the returned restart ran (less than ``iterations`` when early stopping ended it)."""
