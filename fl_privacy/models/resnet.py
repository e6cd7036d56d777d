"""CIFAR-style ResNet-18/34 with switchable skip connections.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016,
BasicBlock variant adapted to 32x32 inputs the usual way: 3x3 stride-1 stem, no
initial max-pool, stages of width w, 2w, 4w, 8w with strides 1, 2, 2, 2, global
average pooling, linear classifier.

``cut_skips`` removes the skip connection (identity or 1x1 projection) of chosen
blocks, as in "SoK: Gradient Leakage in Federated Learning", Fig. 13 ("cut skip
connections at different positions"), which studies how residual paths affect
gradient leakage.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from numbers import Integral

import torch
from torch import nn

from ._common import check_int, flat_features

DEFAULTS: dict[str, object] = {"cut_skips": (), "width": 64}

BLOCKS_PER_STAGE: dict[str, tuple[int, ...]] = {
    "resnet18": (2, 2, 2, 2),
    "resnet34": (3, 4, 6, 3),
}
_STAGE_MULTIPLIERS = (1, 2, 4, 8)
_STAGE_STRIDES = (1, 2, 2, 2)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus (unless ``skip=False``) an identity/1x1 shortcut.

    With the skip: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.
    Without it:    ``relu(bn2(conv2(relu(bn1(conv1(x))))))``; no shortcut parameters.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, *, skip: bool
    ) -> None:
        super().__init__()
        self.skip = skip
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, 3, stride, padding=1, bias=False
        )
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module | None = None
        if skip:
            if stride != 1 or in_channels != out_channels:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                    nn.BatchNorm2d(out_channels),
                )
            else:
                self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.relu2(out)


def parse_cut_skips(value: object, num_blocks: int) -> tuple[int, ...]:
    """Normalise ``cut_skips`` (int, ints, or "0,3") to sorted unique block indices."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        try:
            items: list[object] = [int(p) for p in parts]
        except ValueError:
            raise ValueError(
                "cut_skips must be comma-separated block indices like '0,3', "
                f"got {value!r}"
            ) from None
    elif isinstance(value, Integral) and not isinstance(value, bool):
        items = [value]
    elif isinstance(value, Sequence):
        items = list(value)
    else:
        raise ValueError(f"cut_skips must be a list of block indices, got {value!r}")
    indices: set[int] = set()
    for item in items:
        if (
            isinstance(item, bool)
            or not isinstance(item, Integral)
            or not 0 <= item < num_blocks
        ):
            raise ValueError(
                f"cut_skips index {item!r} out of range: this ResNet has "
                f"{num_blocks} blocks, valid indices are 0..{num_blocks - 1}"
            )
        indices.add(int(item))
    return tuple(sorted(indices))


class ResNet(nn.Module):
    """CIFAR ResNet: ``features`` (stem, stage1..4, pool) then ``classifier``."""

    def __init__(
        self,
        *,
        blocks_per_stage: Sequence[int],
        num_classes: int,
        in_channels: int,
        image_size: int,
        cut_skips: object = (),
        width: int = 64,
    ) -> None:
        super().__init__()
        width = check_int("width", width, minimum=1)
        cut = set(parse_cut_skips(cut_skips, sum(blocks_per_stage)))
        self.cut_skips: tuple[int, ...] = tuple(sorted(cut))

        parts: OrderedDict[str, nn.Module] = OrderedDict()
        parts["stem"] = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(in_channels, width, 3, 1, padding=1, bias=False),
                bn=nn.BatchNorm2d(width),
                relu=nn.ReLU(),
            )
        )
        channels = width
        block_i = 0
        for stage_i, (n_blocks, mult, stride) in enumerate(
            zip(blocks_per_stage, _STAGE_MULTIPLIERS, _STAGE_STRIDES, strict=True)
        ):
            blocks = []
            for j in range(n_blocks):
                out_channels = mult * width
                blocks.append(
                    BasicBlock(
                        channels,
                        out_channels,
                        stride if j == 0 else 1,
                        skip=block_i not in cut,
                    )
                )
                channels = out_channels
                block_i += 1
            parts[f"stage{stage_i + 1}"] = nn.Sequential(*blocks)
        parts["pool"] = nn.AdaptiveAvgPool2d(1)
        self.features = nn.Sequential(parts)

        n_flat = flat_features(self.features, in_channels, image_size)
        self.classifier = nn.Sequential(
            OrderedDict(flatten=nn.Flatten(), linear=nn.Linear(n_flat, num_classes))
        )

    def blocks(self) -> list[BasicBlock]:
        """All residual blocks in forward order (the indexing used by ``cut_skips``)."""
        return [m for m in self.features.modules() if isinstance(m, BasicBlock)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
