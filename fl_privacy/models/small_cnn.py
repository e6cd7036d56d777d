"""Small, fast CNN for CPU federated runs.

The classic two-conv network of the PyTorch "Training a classifier" and Flower
quickstart tutorials (conv-relu-pool twice, then two linear layers), widened to
32/64 channels. It is the cheap default when the experiment is about the FL
pipeline rather than about a specific architecture from the leakage literature.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ._common import check_int, flat_features

DEFAULTS: dict[str, object] = {"width": 32}

_KERNEL = 5
_HIDDEN = 128


class SmallCNN(nn.Module):
    """Conv(w,5)-ReLU-MaxPool2, Conv(2w,5)-ReLU-MaxPool2, Linear(128)-ReLU-Linear."""

    def __init__(
        self, *, num_classes: int, in_channels: int, image_size: int, width: int = 32
    ) -> None:
        super().__init__()
        width = check_int("width", width, minimum=1)
        self.features = nn.Sequential(
            OrderedDict(
                conv0=nn.Conv2d(in_channels, width, _KERNEL),
                act0=nn.ReLU(),
                pool0=nn.MaxPool2d(2),
                conv1=nn.Conv2d(width, 2 * width, _KERNEL),
                act1=nn.ReLU(),
                pool1=nn.MaxPool2d(2),
            )
        )
        n_flat = flat_features(self.features, in_channels, image_size)
        self.classifier = nn.Sequential(
            OrderedDict(
                flatten=nn.Flatten(),
                hidden=nn.Linear(n_flat, _HIDDEN),
                act=nn.ReLU(),
                linear=nn.Linear(_HIDDEN, num_classes),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
