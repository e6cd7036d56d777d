"""What a membership attack reads of labelled examples: indexable (x, y) batches, nothing of a dataset loader.

The evaluator passes its dataset split (``fl_privacy.data.ImageData`` has this
shape) or any object that hands out batches by index; attacks never load data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch


class LabelledSamples(Protocol):
    """Examples addressed by index: their labels, and float (x, y) batches in the model's input space."""

    labels: np.ndarray
    """int64 (N,): the label of every example."""

    @property
    def num_classes(self) -> int: ...

    def batch(self, indices: Sequence[int] | np.ndarray, normalize: bool = True,
              device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Images (normalized when ``normalize``) and labels of ``indices``, on ``device``."""
        ...
