"""The threat model: what the honest-but-curious server knows when it attacks.

An attack's only input is an ``Observation``. It holds the global model as
sent, the update as received, public facts about the data domain, and only the
extra knowledge the configured threat level grants (SoK "Gradient Leakage in
FL", Du et al. 2024, §2.2/Table I: basic information, labels, client training
details = known batch schedule, BN statistics). Ground truth (images, labels,
dataset indices) never enters it; the evaluator gets it separately.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Schedule:
    """Client training details (granted at the "known batch schedule" level).

    ``steps[i]`` lists the positions (0..num_examples-1) of the victim's
    samples used in local step ``i``, in order: the mini-batch partition and
    order, not which dataset images they are.
    """

    lr: float
    steps: tuple[tuple[int, ...], ...]
    momentum: float = 0.0
    weight_decay: float = 0.0

    @classmethod
    def from_indices(cls, steps: list[np.ndarray], lr: float, momentum: float = 0.0,
                     weight_decay: float = 0.0) -> "Schedule":
        """Dataset indices per step -> positions in the sorted set of the victim's samples."""
        unique = np.unique(np.concatenate(steps))
        positions = tuple(tuple(int(p) for p in np.searchsorted(unique, s)) for s in steps)
        return cls(lr=lr, steps=positions, momentum=momentum, weight_decay=weight_decay)


@dataclass(frozen=True)
class LocalTraining:
    """The FedAvg hyperparameters the server itself sent to the client (it configured them).

    Not the batch order: which samples went into which step stays unknown unless
    a ``Schedule`` is granted. Dimitrov et al. 2022 ("Data Leakage in Federated
    Averaging") assume exactly this knowledge: lr, epochs, batch size.
    """

    lr: float
    epochs: int
    batch_size: int
    local_steps: int = 0
    """Stop after this many SGD steps (0 = whole epochs)."""
    drop_last: bool = False
    momentum: float = 0.0
    weight_decay: float = 0.0


@dataclass(frozen=True)
class Observation:
    """Everything an attack may use. Built by ``observe``; ground truth never enters."""

    model: torch.nn.Module
    """The architecture (a private copy; the attack may switch it between train/eval mode)."""
    global_params: Tensors
    global_buffers: Tensors
    update: Tensors
    """As received: the gradient (``kind == "gradient"``) or ``w_client - w_global`` (``"delta"``)."""
    kind: Literal["gradient", "delta"]
    image_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    """Public facts of the data domain: shape, classes, normalization (pixel box = [(0-m)/s, (1-m)/s])."""
    normalized: bool = True
    num_examples: int | None = None
    """Basic information: how many samples the update was computed on."""
    batch_size: int | None = None
    """FedSGD: the batch size (= num_examples); FedAvg: the mini-batch size when granted."""
    labels: torch.Tensor | None = None
    """Granted only when the threat level says labels are known."""
    schedule: Schedule | None = None
    """Granted only at the known-batch-schedule level."""
    bn_statistics: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    """Per BatchNorm layer (mean, var) of the victim's batch; a strong level, granted explicitly."""
    aggregated_clients: int | None = None
    """Secure-aggregation level: ``update`` is the round's weighted mean over this many clients' updates
    (``num_examples`` is their total); None: ``update`` is one client's own."""
    extra: dict[str, object] = field(default_factory=dict)
    training: LocalTraining | None = None
    """FedAvg updates: the local-training hyperparameters the server sent (never the batch order)."""

    def pixel_box(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Valid range of each channel in the attack's (normalized) input space."""
        if not self.normalized:
            return (torch.zeros(1, len(self.mean), 1, 1, device=device),
                    torch.ones(1, len(self.mean), 1, 1, device=device))
        m = torch.tensor(self.mean, device=device).view(1, -1, 1, 1)
        s = torch.tensor(self.std, device=device).view(1, -1, 1, 1)
        return (0 - m) / s, (1 - m) / s

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Attack space -> [0, 1] pixels (for scoring and pictures)."""
        if not self.normalized:
            return x.clamp(0, 1)
        m = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        s = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x * s + m).clamp(0, 1)
