"""LPIPS perceptual distance that never downloads and never runs on a random backbone.

The `lpips` pip package ships its calibrated linear heads, but the convolutional
backbone (AlexNet / VGG16 / SqueezeNet1.1) comes from torchvision's ImageNet
weights, which torchvision downloads into the torch hub cache on first use. This
simulator runs offline, so we check for the cached backbone file *before* building
anything and then load it ourselves from that file: a missing file is reported
as "unavailable" instead of triggering a download or (worse) silently scoring
with random features, which would make LPIPS numbers meaningless.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["LpipsMetric", "LpipsUnavailable", "lpips_status", "try_lpips"]

# lpips net name -> (torchvision weights enum name, smallest input side the
# truncated backbone accepts). The minimum sides follow from the pooling layers
# that sit before the deepest LPIPS tap: AlexNet's three stride-2 pools after the
# stride-4 stem need >= 31 px (28x28 MNIST would crash; we round up to 32, the CIFAR
# size), VGG16 taps relu5_3 after four 2x pools (>= 16 px), SqueezeNet1.1's stem +
# pools need >= 17 px. Values checked by probing each architecture with sizes 8..40.
_BACKBONES: dict[str, tuple[str, int]] = {
    "alex": ("AlexNet_Weights", 32),
    "vgg": ("VGG16_Weights", 16),
    "squeeze": ("SqueezeNet1_1_Weights", 17),
}
_ALIASES = {
    "alexnet": "alex",
    "vgg16": "vgg",
    "squeezenet": "squeeze",
    "squeezenet1_1": "squeeze",
}
_LPIPS_VERSION = "0.1"


class LpipsUnavailable(RuntimeError):
    """Raised when LPIPS cannot be computed faithfully (weights absent, package missing)."""


def _canonical_net(net: str) -> str:
    name = _ALIASES.get(net.lower(), net.lower())
    if name not in _BACKBONES:
        raise ValueError(
            f"unknown LPIPS net {net!r}; expected one of {sorted(_BACKBONES)}"
        )
    return name


def _backbone_weights(net: str):
    """torchvision weights enum member (IMAGENET1K_V1) that `lpips` would download for `net`."""
    import torchvision.models as tvm

    enum_name, _ = _BACKBONES[net]
    return getattr(tvm, enum_name).IMAGENET1K_V1


def _backbone_cache_path(net: str) -> Path:
    """Where torchvision's `load_state_dict_from_url` would look for the backbone file.

    Computed from the weights URL the same way torch.hub names cached files, and
    from `torch.hub.get_dir()` at call time so TORCH_HOME / monkeypatching work.
    """
    url = _backbone_weights(net).url
    filename = os.path.basename(urlparse(url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _linear_heads_path(net: str) -> Path:
    """The calibrated linear-layer weights shipped inside the `lpips` package."""
    import lpips

    return (
        Path(lpips.__file__).resolve().parent
        / "weights"
        / f"v{_LPIPS_VERSION}"
        / f"{net}.pth"
    )


def lpips_status(net: str = "alex") -> tuple[bool, str]:
    """Report whether LPIPS(`net`) can run offline, and why not; never downloads anything."""
    try:
        name = _canonical_net(net)
    except ValueError as exc:
        return False, str(exc)
    try:
        heads = _linear_heads_path(name)
    except ImportError as exc:
        return (
            False,
            f"the `lpips` package is not importable ({exc}); install it with `pip install lpips`",
        )
    if not heads.is_file():
        return (
            False,
            f"LPIPS linear heads missing: {heads} (reinstall the `lpips` package)",
        )
    backbone = _backbone_cache_path(name)
    if not backbone.is_file():
        return False, (
            f"pretrained {name} backbone weights missing {backbone}; on a machine with internet run "
            f"`python -c 'import lpips; lpips.LPIPS(net=\"{name}\")'` once (or set TORCH_HOME to a cache "
            f"that has it), or copy the file there"
        )
    return True, f"backbone {backbone}; linear heads {heads}"


class LpipsMetric:
    """LPIPS (Zhang et al. 2018) with the calibrated linear heads of the `lpips` package on a pretrained ImageNet backbone. Refuses to run on a random backbone."""

    def __init__(self, net: str = "alex", device: str | torch.device = "cpu") -> None:
        self.net = _canonical_net(net)
        self.device = torch.device(device)
        ok, reason = lpips_status(self.net)
        if not ok:
            raise LpipsUnavailable(f"LPIPS({self.net}) unavailable: {reason}")
        self.min_side = _BACKBONES[self.net][1]
        self._model = self._build()

    def _build(self) -> torch.nn.Module:
        """Build LPIPS without any network access, then load the cached backbone by hand.

        `pnet_rand=True` makes `lpips` construct the backbone architecture with
        `weights=None` (so torchvision never reaches for the hub); the linear heads
        still come from the package. We then copy the ImageNet weights from the
        cache file into the truncated backbone, strictly, so a mismatch fails
        loudly instead of leaving random layers behind.
        """
        import lpips

        with warnings.catch_warnings():
            # lpips still calls torchvision with the legacy `pretrained=` kwarg; harmless here.
            warnings.filterwarnings(
                "ignore",
                message=".*(pretrained|weight enum).*deprecated",
                category=UserWarning,
            )
            model = lpips.LPIPS(
                net=self.net,
                version=_LPIPS_VERSION,
                pretrained=True,
                pnet_rand=True,
                verbose=False,
            )
        path = _backbone_cache_path(self.net)
        try:
            full = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupt / truncated download
            raise LpipsUnavailable(
                f"could not read backbone weights {path}: {exc}"
            ) from exc

        # lpips splits torchvision's `features` Sequential into slices that keep the
        # original child indices ("slice2.3.weight" == "features.3.weight").
        target = model.net.state_dict()
        mapped: dict[str, Tensor] = {}
        for key in target:
            _, idx, param = key.split(".", 2)
            src = f"features.{idx}.{param}"
            if src not in full:
                raise LpipsUnavailable(
                    f"{path} has no tensor {src!r}; is it the {self.net} ImageNet checkpoint?"
                )
            mapped[key] = full[src]
        model.net.load_state_dict(mapped, strict=True)
        for p in model.parameters():
            p.requires_grad_(False)
        return model.eval().to(self.device)

    def _prepare(self, x: Tensor) -> Tensor:
        return prepare_lpips_input(x, self.min_side).to(self.device)

    @torch.no_grad()
    def __call__(self, recon: Tensor, truth: Tensor) -> np.ndarray:
        """Per-image LPIPS distance (lower = more similar); inputs in [0, 1], shape (B, C, H, W)."""
        if recon.shape != truth.shape:
            raise ValueError(
                f"shape mismatch: recon {tuple(recon.shape)} vs truth {tuple(truth.shape)}"
            )
        d = self._model(self._prepare(recon), self._prepare(truth))
        return d.flatten().detach().cpu().double().numpy()

    @torch.no_grad()
    def pairwise(self, recon: Tensor, truth: Tensor, chunk: int = 256) -> np.ndarray:
        """(B_r, B_t) matrix D[i, j] = LPIPS(recon[i], truth[j]), used as an assignment cost."""
        if recon.shape[1:] != truth.shape[1:]:
            raise ValueError(
                f"image shape mismatch: {tuple(recon.shape[1:])} vs {tuple(truth.shape[1:])}"
            )
        r, t = self._prepare(recon), self._prepare(truth)
        nr, nt = r.shape[0], t.shape[0]
        ii, jj = torch.meshgrid(torch.arange(nr), torch.arange(nt), indexing="ij")
        ii, jj = ii.flatten(), jj.flatten()
        out = torch.empty(nr * nt, dtype=torch.float64)
        for s in range(0, nr * nt, chunk):
            sl = slice(s, s + chunk)
            out[sl] = self._model(r[ii[sl]], t[jj[sl]]).flatten().double().cpu()
        return out.view(nr, nt).numpy()


def prepare_lpips_input(x: Tensor, min_side: int) -> Tensor:
    """Map [0,1] images to what LPIPS expects: 3 channels in [-1, 1], large enough for the backbone.

    Grayscale is repeated to RGB (the backbone is ImageNet-trained); images whose
    short side is below `min_side` are bilinearly upsampled (aspect kept) because
    the truncated backbone would otherwise pool to an empty feature map.
    """
    if x.dim() != 4:
        raise ValueError(f"expected (B, C, H, W), got shape {tuple(x.shape)}")
    x = x.detach().float()
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    elif x.shape[1] != 3:
        raise ValueError(f"LPIPS needs 1 or 3 channels, got {x.shape[1]}")
    h, w = x.shape[-2:]
    if min(h, w) < min_side:
        scale = min_side / min(h, w)
        size = (max(min_side, round(h * scale)), max(min_side, round(w * scale)))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x.clamp(0.0, 1.0) * 2.0 - 1.0


def try_lpips(
    net: str = "alex", device: str | torch.device = "cpu"
) -> LpipsMetric | None:
    """LpipsMetric if the pretrained weights are cached locally, else None (report "unavailable")."""
    try:
        return LpipsMetric(net=net, device=device)
    except LpipsUnavailable:
        return None
