"""The CNN of Dimitrov et al.'s FedAvg leakage experiments (eth-sri/fedavg_leakage, ``CNN_3``).

Conv(64, 3x3, same)-ReLU-AvgPool2, Conv(128, 3x3, same)-ReLU-AvgPool2, Dense(200)-ReLU-Dense:
the network their CIFAR defaults (TV, clip and order-prior weights, exponential layer weights)
were set for, so ``dimitrov_fedavg`` can be checked where its defaults belong. ``width`` scales
the channels (64 = the paper's).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ._common import check_int, flat_features

DEFAULTS: dict[str, object] = {"width": 64}
_HIDDEN = 200


class FedAvgCNN(nn.Module):
    """Conv(w)-ReLU-AvgPool2, Conv(2w)-ReLU-AvgPool2, Linear(200)-ReLU-Linear (no BatchNorm)."""

    def __init__(self, *, num_classes: int, in_channels: int, image_size: int, width: int = 64) -> None:
        super().__init__()
        width = check_int("width", width, minimum=1)
        self.features = nn.Sequential(OrderedDict(
            conv0=nn.Conv2d(in_channels, width, 3, padding=1), act0=nn.ReLU(), pool0=nn.AvgPool2d(2),
            conv1=nn.Conv2d(width, 2 * width, 3, padding=1), act1=nn.ReLU(), pool1=nn.AvgPool2d(2),
        ))
        n_flat = flat_features(self.features, in_channels, image_size)
        self.classifier = nn.Sequential(OrderedDict(
            flatten=nn.Flatten(), hidden=nn.Linear(n_flat, _HIDDEN), act=nn.ReLU(),
            linear=nn.Linear(_HIDDEN, num_classes),
        ))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
