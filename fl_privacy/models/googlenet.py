"""GoogLeNet for 32x32 inputs: a stem and nine inception (net-in-net) blocks, for the SoK's Table III.

The CIFAR variant common in the literature (Szegedy et al. 2015's inception
blocks; a 3x3 stem instead of the ImageNet 7x7/stride-2 stem, no auxiliary heads,
the 5x5 branch as two 3x3 convolutions, each convolution followed by BatchNorm and
ReLU). ``width`` scales every channel count (64 = the usual channel counts:
192-channel stem, 3a: 64/96->128/16->32/32 ...), so CPU runs can use a thin copy.

Each block is a named child of ``features`` (``features.inception_3a`` ...
``features.inception_5b``), so an attack can match one block's gradient
(``attack.gia.parameters: [features.inception_3a]``).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ._common import check_int

DEFAULTS: dict[str, object] = {"width": 64}

# (in, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj) of each block at width 64.
_BLOCKS: list[tuple[str, tuple[int, int, int, int, int, int]]] = [
    ("3a", (64, 96, 128, 16, 32, 32)),
    ("3b", (128, 128, 192, 32, 96, 64)),
    ("4a", (192, 96, 208, 16, 48, 64)),
    ("4b", (160, 112, 224, 24, 64, 64)),
    ("4c", (128, 128, 256, 24, 64, 64)),
    ("4d", (112, 144, 288, 32, 64, 64)),
    ("4e", (256, 160, 320, 32, 128, 128)),
    ("5a", (256, 160, 320, 32, 128, 128)),
    ("5b", (384, 192, 384, 48, 128, 128)),
]
_POOL_AFTER = {"3b", "4e"}  # stride-2 max-pools between stages
BLOCK_NAMES: tuple[str, ...] = tuple(f"features.inception_{name}" for name, _ in _BLOCKS)


def _conv(cin: int, cout: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2), nn.BatchNorm2d(cout), nn.ReLU())


class Inception(nn.Module):
    """Four parallel branches concatenated: 1x1; 1x1 -> 3x3; 1x1 -> 3x3 -> 3x3; 3x3 max-pool -> 1x1."""

    def __init__(self, cin: int, n1: int, r3: int, n3: int, r5: int, n5: int, pool: int) -> None:
        super().__init__()
        self.branch1 = _conv(cin, n1, 1)
        self.branch3 = nn.Sequential(_conv(cin, r3, 1), _conv(r3, n3, 3))
        self.branch5 = nn.Sequential(_conv(cin, r5, 1), _conv(r5, n5, 3), _conv(n5, n5, 3))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), _conv(cin, pool, 1))
        self.out_channels = n1 + n3 + n5 + pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], 1)


class GoogLeNet(nn.Module):
    """``features`` (stem, inception blocks, pools, global average pool) then ``classifier`` (flatten + linear)."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int, width: int = 64) -> None:
        super().__init__()
        width = check_int("width", width, minimum=1)

        def c(n: int) -> int:
            return max(1, round(n * width / 64))

        layers: OrderedDict[str, nn.Module] = OrderedDict(stem=_conv(in_channels, c(192), 3))
        channels = c(192)
        for name, (n1, r3, n3, r5, n5, pool) in _BLOCKS:
            block = Inception(channels, c(n1), c(r3), c(n3), c(r5), c(n5), c(pool))
            layers[f"inception_{name}"] = block
            channels = block.out_channels
            if name in _POOL_AFTER:
                layers[f"pool_{name}"] = nn.MaxPool2d(3, stride=2, padding=1)
        layers["avgpool"] = nn.AdaptiveAvgPool2d(1)
        self.features = nn.Sequential(layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(channels, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
