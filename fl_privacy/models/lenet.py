"""LeNet variant used by Deep Leakage from Gradients (DLG).

Zhu, Liu, Han, "Deep Leakage from Gradients", NeurIPS 2019; layer table as in
Menon et al., "On the Effect of Quantization on Deep Leakage from Gradients",
appendix A. Four 5x5 convolutions with 12 channels (strides 2, 2, 1, 1), smooth
activations (sigmoid), no pooling, one linear layer. The smooth activation and the
large uniform(-0.5, 0.5) initialisation are what make DLG reconstructions work, so
both are the defaults here.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ._common import check_bool, flat_features, make_activation

ACTIVATIONS: tuple[str, ...] = ("sigmoid", "relu", "tanh")
DEFAULTS: dict[str, object] = {"activation": "sigmoid", "dlg_init": True, "bias": True}

_CHANNELS = 12
_KERNEL = 5
_STRIDES = (2, 2, 1, 1)


class LeNet(nn.Module):
    """DLG LeNet: ``features`` (4 conv + act) then ``classifier`` (flatten + linear)."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        image_size: int,
        activation: str = "sigmoid",
        dlg_init: bool = True,
        bias: bool = True,
    ) -> None:
        super().__init__()
        bias = check_bool("bias", bias)
        dlg_init = check_bool("dlg_init", dlg_init)

        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels = in_channels
        for i, stride in enumerate(_STRIDES):
            layers[f"conv{i}"] = nn.Conv2d(
                channels,
                _CHANNELS,
                _KERNEL,
                stride=stride,
                padding=_KERNEL // 2,
                bias=bias,
            )
            act = make_activation(activation, ACTIVATIONS)
            assert act is not None  # "none" is not an allowed LeNet activation
            layers[f"act{i}"] = act
            channels = _CHANNELS
        self.features = nn.Sequential(layers)

        n_flat = flat_features(self.features, in_channels, image_size)
        self.classifier = nn.Sequential(
            OrderedDict(
                flatten=nn.Flatten(), linear=nn.Linear(n_flat, num_classes, bias=bias)
            )
        )
        if dlg_init:
            self._dlg_init()

    def _dlg_init(self) -> None:
        """DLG reference init: every weight and bias ~ uniform(-0.5, 0.5)."""
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    nn.init.uniform_(module.weight, -0.5, 0.5)
                    if module.bias is not None:
                        nn.init.uniform_(module.bias, -0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
