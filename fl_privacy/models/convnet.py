"""ConvNet of Geiping et al. with the SoK micro-design switches.

Base network: Geiping, Bauermeister, Dröge, Moeller, "Inverting Gradients - How easy
is it to break privacy in federated learning?", NeurIPS 2020: eight 3x3 convolutions
(widths w, 2w, 2w, 4w, 4w, 4w | pool | 4w, 4w | pool), each followed by BatchNorm and
ReLU, then a linear classifier.

Switches: "SoK: Gradient Leakage in Federated Learning", section 5.2.2 / Table IV,
which measures how single design choices change leakage: remove ReLU
(``activation="none"``), remove dropout (``dropout=0``), remove max-pool
(``maxpool=False``), kernel size up/down (``kernel_size``), remove bias
(``bias=False``), padding up (``padding``). The SoK's "standard" ConvNet has one
dropout layer before the classifier; its experiments set e.g. ``dropout=0.5`` via the
config. The default here is 0.0 (layer absent), matching Geiping et al.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ._common import (
    check_bool,
    check_int,
    check_probability,
    flat_features,
    make_activation,
)

ACTIVATIONS: tuple[str, ...] = ("relu", "none", "sigmoid", "tanh", "leaky_relu")
DEFAULTS: dict[str, object] = {
    "width": 32,
    "bias": True,
    "activation": "relu",
    "dropout": 0.0,
    "maxpool": True,
    "kernel_size": 3,
    "padding": 1,
    "batchnorm": True,
}

# Output-channel multiplier of each conv, with "pool" marking a MaxPool2d(3).
_PLAN: tuple[int | str, ...] = (1, 2, 2, 4, 4, 4, "pool", 4, 4, "pool")
_POOL = 3


def _check_spatial(
    image_size: int, kernel_size: int, padding: int, maxpool: bool
) -> None:
    """Track the feature-map size through the plan; raise if it drops below 1 pixel."""
    size = image_size
    conv_i = pool_i = 0
    for step in _PLAN:
        if step == "pool":
            if not maxpool:
                continue
            size = (size - _POOL) // _POOL + 1
            where = f"max-pool {pool_i}"
            pool_i += 1
        else:
            size = size + 2 * padding - kernel_size + 1
            where = f"conv {conv_i}"
            conv_i += 1
        if size < 1:
            raise ValueError(
                f"convnet: kernel_size={kernel_size}, padding={padding}, "
                f"maxpool={maxpool} shrink a {image_size}x{image_size} input to "
                f"less than 1 pixel at {where}; use padding={kernel_size // 2} "
                f"(size-preserving for odd kernels), a smaller kernel, or maxpool=False"
            )


class ConvNet(nn.Module):
    """Geiping ConvNet: ``features`` (8 conv blocks, 2 pools) then ``classifier``."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        image_size: int,
        width: int = 32,
        bias: bool = True,
        activation: str = "relu",
        dropout: float = 0.0,
        maxpool: bool = True,
        kernel_size: int = 3,
        padding: int = 1,
        batchnorm: bool = True,
    ) -> None:
        super().__init__()
        width = check_int("width", width, minimum=1)
        bias = check_bool("bias", bias)
        dropout = check_probability("dropout", dropout)
        maxpool = check_bool("maxpool", maxpool)
        kernel_size = check_int("kernel_size", kernel_size, minimum=1)
        padding = check_int("padding", padding, minimum=0)
        batchnorm = check_bool("batchnorm", batchnorm)
        make_activation(activation, ACTIVATIONS)  # validate before building anything
        _check_spatial(image_size, kernel_size, padding, maxpool)

        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels = in_channels
        conv_i = pool_i = 0
        for step in _PLAN:
            if step == "pool":
                if maxpool:
                    layers[f"pool{pool_i}"] = nn.MaxPool2d(_POOL)
                pool_i += 1
                continue
            out_channels = int(step) * width
            layers[f"conv{conv_i}"] = nn.Conv2d(
                channels, out_channels, kernel_size, padding=padding, bias=bias
            )
            if batchnorm:
                layers[f"bn{conv_i}"] = nn.BatchNorm2d(out_channels)
            act = make_activation(activation, ACTIVATIONS)
            if act is not None:
                layers[f"act{conv_i}"] = act
            channels = out_channels
            conv_i += 1
        self.features = nn.Sequential(layers)

        n_flat = flat_features(self.features, in_channels, image_size)
        head: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        if dropout > 0.0:
            head["dropout"] = nn.Dropout(dropout)
        head["linear"] = nn.Linear(n_flat, num_classes, bias=bias)
        self.classifier = nn.Sequential(head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
