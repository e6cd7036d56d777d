"""A small fully connected network: the model the Cocktail Party Attack needs.

Kariyappa et al., "Cocktail Party Attack: Breaking Aggregation-Based Privacy in
Federated Learning using Independent Component Analysis", ICML 2023, attack the
first fully connected layer: its weight gradient is a linear mix of the batch's
flattened inputs, and the inputs can be unmixed when there are at most as many of
them as the layer has units. Here the first layer is ``features.fc`` (``width``
units), so ``width`` bounds how many images one (aggregated) update can give up.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ._common import check_int, make_activation

ACTIVATIONS: tuple[str, ...] = ("relu", "sigmoid", "tanh", "leaky_relu")
DEFAULTS: dict[str, object] = {"width": 256, "activation": "relu"}


class MLP(nn.Module):
    """``features`` (flatten, fc, activation) then ``classifier`` (one linear layer)."""

    def __init__(
        self, *, num_classes: int, in_channels: int, image_size: int, width: int = 256, activation: str = "relu"
    ) -> None:
        super().__init__()
        width = check_int("width", width, minimum=1)
        act = make_activation(activation, ACTIVATIONS)
        assert act is not None  # "none" is not an allowed MLP activation
        self.features = nn.Sequential(OrderedDict(
            flatten=nn.Flatten(), fc=nn.Linear(in_channels * image_size * image_size, width), act=act,
        ))
        self.classifier = nn.Sequential(OrderedDict(linear=nn.Linear(width, num_classes)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
