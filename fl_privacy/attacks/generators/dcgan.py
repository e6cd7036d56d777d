"""Conditional DCGAN for 32x32 (and 28x28) images: the generator behind GIA-L.

Architecture after Radford, Metz, Chintala, "Unsupervised Representation
Learning with Deep Convolutional Generative Adversarial Networks", ICLR 2016,
scaled to 32x32 (the 64x64 DCGAN minus one upsampling layer). With GIAS's
widths (Jeon et al. 2021: nz=100, ngf=64) it has 3.45M parameters (unconditional);
the 3.6M quoted for GIAS's CIFAR-10 DCGAN match the 64x64 layout, which has one
more ``ngf``-wide layer. ngf=32 gives 0.9-1.1M, ngf=16 0.3-0.4M (nz 64-100):

* ``Generator``: the latent ``z`` (N, nz) - concatenated with a learned label
  embedding (N, embed_dim) when conditional - is a 1x1 map;
  ``ConvTranspose2d(k4, s1, p0)`` to 4x4 with ``ngf*8`` channels, then
  ``ConvTranspose2d(k4, s2, p1)`` to 8x8 (``ngf*4``), 16x16 (``ngf*2``) and
  32x32 (``nc``). BatchNorm + ReLU after every layer but the last, Tanh output
  in [-1, 1]. No bias before BatchNorm (it would be cancelled).
* ``Discriminator``: the mirror image, ``Conv2d(k4, s2, p1)`` 32 -> 16 (``ndf``,
  no BatchNorm on the input layer, as DCGAN) -> 8 (``ndf*2``) -> 4 (``ndf*4``),
  LeakyReLU 0.2, BatchNorm on the inner layers, then ``Conv2d(k4, s1, p0)`` to one
  logit. Conditional by **projection** (Miyato & Koyama, "cGANs with Projection
  Discriminator", ICLR 2018): logit = ``psi(phi(x)) + <embed(y), sum_hw phi(x)>``,
  with ``phi(x)`` the 4x4 feature map; unconditional: ``psi(phi(x))`` only.

28x28 (MNIST, ``image_size=28``): the generator produces 32x32 and returns its
central 28x28 crop (2 pixels cut on every side); the discriminator pads its
28x28 input back to 32x32 with the value -1 (black, the MNIST background, in
the Tanh range). Real and generated images take the same path, so the border
is no cue for the discriminator. Only 28 and 32 are supported.

Weights are initialised as DCGAN: convolutions N(0, 0.02), BatchNorm scales
N(1, 0.02) and shifts 0; embeddings N(0, 1) (PyTorch's default).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SUPPORTED_SIZES", "Discriminator", "Generator", "dcgan_init"]

SUPPORTED_SIZES: tuple[int, ...] = (28, 32)
_BASE = 32  # the native resolution of the networks


def _check(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_size(image_size: int) -> int:
    if image_size not in SUPPORTED_SIZES:
        raise ValueError(f"image_size must be one of {SUPPORTED_SIZES}, got {image_size!r}")
    return image_size


def dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation (Radford et al. 2016, section 4): apply with ``model.apply(dcgan_init)``."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    """z (N, nz) [+ labels (N,)] -> images (N, nc, image_size, image_size) in [-1, 1].

    ``num_classes=0`` builds an unconditional generator (``labels`` must then be None).
    ``embed_dim`` (default ``num_classes``) is the size of the learned label embedding
    concatenated to ``z``.
    """

    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 3, num_classes: int = 10,
                 image_size: int = 32, embed_dim: int | None = None) -> None:
        super().__init__()
        self.nz = _check("nz", nz, 1)
        self.ngf = _check("ngf", ngf, 1)
        self.nc = _check("nc", nc, 1)
        self.num_classes = _check("num_classes", num_classes, 0)
        self.image_size = _check_size(image_size)
        self.embed_dim = (num_classes if embed_dim is None else _check("embed_dim", embed_dim, 1)) if num_classes else 0
        self.embed = nn.Embedding(num_classes, self.embed_dim) if num_classes else None

        def up(cin: int, cout: int, first: bool = False) -> list[nn.Module]:
            conv = nn.ConvTranspose2d(cin, cout, 4, 1, 0, bias=False) if first else \
                nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False)
            return [conv, nn.BatchNorm2d(cout), nn.ReLU()]

        self.net = nn.Sequential(
            *up(nz + self.embed_dim, ngf * 8, first=True),   # 1 -> 4
            *up(ngf * 8, ngf * 4),                           # 4 -> 8
            *up(ngf * 4, ngf * 2),                           # 8 -> 16
            nn.ConvTranspose2d(ngf * 2, nc, 4, 2, 1, bias=False),  # 16 -> 32
            nn.Tanh(),
        )
        self.apply(dcgan_init)

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if z.dim() == 4:  # (N, nz, 1, 1), as the reference DCGAN code passes it
            z = z.flatten(1)
        if z.dim() != 2 or z.shape[1] != self.nz:
            raise ValueError(f"z must have shape (N, {self.nz}), got {tuple(z.shape)}")
        if self.embed is not None:
            if labels is None:
                raise ValueError("this generator is conditional: pass the labels (N,)")
            h = torch.cat([z, self.embed(labels.reshape(-1).long())], dim=1)
        else:
            if labels is not None:
                raise ValueError("this generator is unconditional (num_classes=0): pass no labels")
            h = z
        x = self.net(h[:, :, None, None])
        if self.image_size != _BASE:
            cut = (_BASE - self.image_size) // 2
            x = x[..., cut:cut + self.image_size, cut:cut + self.image_size]
        return x


class Discriminator(nn.Module):
    """images (N, nc, image_size, image_size) in [-1, 1] [+ labels (N,)] -> logits (N,).

    Conditional by projection (see the module docstring); ``num_classes=0`` is unconditional.
    """

    def __init__(self, ndf: int = 64, nc: int = 3, num_classes: int = 10, image_size: int = 32) -> None:
        super().__init__()
        self.ndf = _check("ndf", ndf, 1)
        self.nc = _check("nc", nc, 1)
        self.num_classes = _check("num_classes", num_classes, 0)
        self.image_size = _check_size(image_size)
        self.features = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),                               # 32 -> 16
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2),  # 16 -> 8
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2),  # 8 -> 4
        )
        self.head = nn.Conv2d(ndf * 4, 1, 4, 1, 0)  # 4 -> 1
        self.embed = nn.Embedding(num_classes, ndf * 4) if num_classes else None
        self.apply(dcgan_init)
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, 0.0, 0.02)  # start close to unconditional

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.image_size != _BASE:
            pad = (_BASE - self.image_size) // 2
            x = F.pad(x, (pad, pad, pad, pad), value=-1.0)
        h = self.features(x)
        out = self.head(h).flatten()
        if self.embed is not None:
            if labels is None:
                raise ValueError("this discriminator is conditional: pass the labels (N,)")
            out = out + (self.embed(labels.reshape(-1).long()) * h.sum(dim=(2, 3))).sum(dim=1)
        return out
