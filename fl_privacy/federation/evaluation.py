"""Centralized evaluation of the global model on the test split."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fl_privacy.data import ImageData


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module,
    data: ImageData,
    indices: np.ndarray | None = None,
    batch_size: int = 1000,
    normalize: bool = True,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Accuracy and mean cross-entropy (eval mode: BN running statistics, no dropout)."""
    model = model.to(device).eval()
    indices = np.arange(len(data)) if indices is None else indices
    correct, loss_sum = 0, 0.0
    for start in range(0, len(indices), batch_size):
        x, y = data.batch(indices[start : start + batch_size], normalize=normalize, device=device)
        logits = model(x)
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    return {"test_accuracy": correct / len(indices), "test_loss": loss_sum / len(indices)}
