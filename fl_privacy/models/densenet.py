"""CIFAR DenseNet-43/53 with the connection-reduced variants the SoK attacks (Fig. 14).

The SoK ("Gradient Leakage in Federated Learning", Du et al. 2024, sec. 5.2 "Model
structure", Fig. 14) takes DenseNet-43 and DenseNet-53 and two variants of each with
fewer skip connections from its ref. [74]: Ju, Chiang, Chen, Lin, "Connection Reduction
of DenseNet for Image Recognition", ISPACS 2022 (arXiv 2208.01424; reference code
github.com/RuiyangJu/Connection_Reduction, ``cifar10/models/DenseNet43*.py``). We
rebuild that network, with the growth rate and stem width as options:

- stem: 7x7 conv (``width`` channels, no bias), ReLU;
- four dense blocks of 8, 10, 12, 8 (DenseNet-43) or 10, 12, 16, 8 (DenseNet-53)
  3x3 conv + ReLU layers of ``growth_rate`` channels each. Layer 1 reads the
  BatchNorm'ed block input; layer k+1 reads the concatenation of the outputs of
  the layers ``sources(k)``; the block outputs ``sources(n)``;
- a transition after each block: 1x1 conv, ReLU, BatchNorm, 2x2 average pool; it
  halves the channels (compression 0.5) except the last, which gives
  ``4 * growth_rate`` channels (``2 * growth_rate`` for ShortNet2), as in the
  reference code;
- BatchNorm, flatten, ``Linear(., 512)``, ``Linear(512, classes)`` (no activation
  in between, as in the reference code).

``connections`` chooses ``sources(k)`` (layer indices from 1):

- ``dense``     (Baseline / "DenseNet"): every earlier layer, {1..k};
- ``shortnet1`` (variant 1): layer 1, layer k and every layer an odd distance back,
  {1, k} | {j < k : k - j odd};
- ``shortnet2`` (variant 2): odd k: {k-1, k}; even k: {k} | {k - (2^m - 1) >= 1}.

This is a CIFAR DenseNet in the DenseNet-BC sense of dense blocks joined by
compressing (0.5) transitions, without the BC bottleneck 1x1 convs, because the
SoK's DenseNet-43/53 have none.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ._common import check_choice, check_int, flat_features

CONNECTIONS = ("dense", "shortnet1", "shortnet2")
BLOCK_LAYERS: dict[int, tuple[int, ...]] = {43: (8, 10, 12, 8), 53: (10, 12, 16, 8)}
DEFAULTS: dict[str, object] = {"growth_rate": 32, "width": 64, "connections": "dense"}
_HIDDEN = 512
_LAST_TRANSITION_GROWTHS = {"dense": 4, "shortnet1": 4, "shortnet2": 2}


def sources(connections: str, k: int) -> tuple[int, ...]:
    """Layers (1-based) whose outputs are concatenated after layer ``k`` (input of layer k+1)."""
    if connections == "dense":
        picked = set(range(1, k + 1))
    elif connections == "shortnet1":
        picked = {1, k} | {j for j in range(1, k) if (k - j) % 2 == 1}
    elif connections == "shortnet2":
        if k % 2 == 1:
            picked = {k - 1, k}
        else:
            picked, m = {k}, 1
            while k - (2**m - 1) >= 1:
                picked.add(k - (2**m - 1))
                m += 1
    else:
        raise ValueError(f"connections must be one of {list(CONNECTIONS)}, got {connections!r}")
    return tuple(sorted(j for j in picked if j >= 1))


class DenseBlock(nn.Module):
    """``n_layers`` 3x3 conv + ReLU layers joined by the concatenations ``sources``."""

    def __init__(self, in_channels: int, n_layers: int, growth_rate: int, connections: str) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.links = [sources(connections, k) for k in range(1, n_layers + 1)]
        widths = [in_channels] + [growth_rate * len(s) for s in self.links[:-1]]
        self.convs = nn.ModuleList(nn.Conv2d(c, growth_rate, 3, 1, padding=1) for c in widths)
        self.relu = nn.ReLU()
        self.out_channels = growth_rate * len(self.links[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs: list[torch.Tensor] = []
        current = self.bn(x)
        for conv, link in zip(self.convs, self.links, strict=True):
            outputs.append(self.relu(conv(current)))
            current = torch.cat([outputs[j - 1] for j in link], dim=1)
        return current


def _transition(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(in_channels, out_channels, 1), relu=nn.ReLU(),
        bn=nn.BatchNorm2d(out_channels), pool=nn.AvgPool2d(2, 2),
    ))


class DenseNet(nn.Module):
    """``features`` (stem, block1, trans1, ..., block4, trans4, bn) then ``classifier``."""

    def __init__(
        self, *, depth: int, num_classes: int, in_channels: int, image_size: int,
        growth_rate: int = 32, width: int = 64, connections: str = "dense",
    ) -> None:
        super().__init__()
        if depth not in BLOCK_LAYERS:
            raise ValueError(f"DenseNet depth must be one of {sorted(BLOCK_LAYERS)}, got {depth!r}")
        growth_rate = check_int("growth_rate", growth_rate, minimum=1)
        width = check_int("width", width, minimum=1)
        self.connections = check_choice("connections", connections, CONNECTIONS)
        parts: OrderedDict[str, nn.Module] = OrderedDict()
        parts["stem"] = nn.Sequential(nn.Conv2d(in_channels, width, 7, padding=3, bias=False), nn.ReLU())
        channels, layers = width, BLOCK_LAYERS[depth]
        for i, n_layers in enumerate(layers, start=1):
            block = DenseBlock(channels, n_layers, growth_rate, self.connections)
            last = i == len(layers)
            out = _LAST_TRANSITION_GROWTHS[self.connections] * growth_rate if last else block.out_channels // 2
            parts[f"block{i}"], parts[f"trans{i}"] = block, _transition(block.out_channels, out)
            channels = out
        parts["bn"] = nn.BatchNorm2d(channels)
        self.features = nn.Sequential(parts)
        n_flat = flat_features(self.features, in_channels, image_size)
        self.classifier = nn.Sequential(OrderedDict(
            flatten=nn.Flatten(), hidden=nn.Linear(n_flat, _HIDDEN), linear=nn.Linear(_HIDDEN, num_classes),
        ))

    def blocks(self) -> list[DenseBlock]:
        return [m for m in self.features if isinstance(m, DenseBlock)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
