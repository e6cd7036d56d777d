"""Train the attacker's generator on public auxiliary data; save and load checkpoints.

GIA-L (SoK "Gradient Leakage in FL", Du et al. 2024, §2.3 Definition 2) needs a
generator trained on data the server may hold: here a split of a dataset,
restricted to ``classes`` (the attacker's public auxiliary data). Whether the
victim's images lie in the generator's range is the OOD question of the SoK's
§4.2.2: train on some classes, attack images of others.

Training is DCGAN's (Radford et al. 2016): Adam lr 2e-4, betas (0.5, 0.999),
batch 128, the non-saturating GAN loss (BCE with logits; D: real -> 1, fake -> 0;
G: fake -> 1), one D step then one G step per batch. Conditional generators are
fed the labels of the real batch, so the fake batch has the class balance of
the auxiliary data. A conditional generator keeps the dataset's full label
space (``num_classes`` of the dataset): a class outside ``classes`` gets an
untrained embedding, so conditioning on it is an out-of-distribution request.

Checkpoints are written and read by ``fl_privacy.attacks.generators.saved``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from fl_privacy.attacks.generators.dcgan import SUPPORTED_SIZES, Discriminator, Generator
from fl_privacy.attacks.generators.saved import default_device

__all__ = ["DCGANSettings", "train_dcgan"]


@dataclass(frozen=True)
class DCGANSettings:
    """DCGAN training settings (Radford et al. 2016's defaults; ``epochs`` a CPU-friendly budget)."""

    epochs: int = 25
    batch_size: int = 128
    nz: int = 100
    ngf: int = 64
    ndf: int = 64
    lr: float = 2e-4
    beta1: float = 0.5
    conditional: bool = True
    max_steps: int | None = None
    """Stop after this many batches in total (tests, timing a fraction of an epoch)."""
    seed: int = 0

    def check(self) -> None:
        """Refuse settings that cannot train, before any data is loaded."""
        for name, minimum in (("epochs", 1), ("batch_size", 1), ("nz", 1), ("ngf", 1), ("ndf", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        m = self.max_steps
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise ValueError(f"max_steps must be a positive integer or None, got {m!r}")
        if not self.lr > 0 or not 0 <= self.beta1 < 1:
            raise ValueError(f"need lr > 0 and 0 <= beta1 < 1, got lr={self.lr!r}, beta1={self.beta1!r}")


@dataclass
class _GAN:
    """Both networks, their optimizers and the seeded random streams of one training run."""

    generator: Generator
    discriminator: Discriminator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    shuffle: torch.Generator
    noise: torch.Generator
    g_kwargs: dict[str, Any]


def _build_gan(settings: DCGANSettings, nc: int, size: int, num_classes: int, dev: torch.device) -> _GAN:
    """Weights from the seed (CPU RNG, forked so the global state is untouched), on ``dev``."""
    s = settings
    g_kwargs: dict[str, Any] = {"nz": s.nz, "ngf": s.ngf, "nc": nc, "num_classes": num_classes, "image_size": size}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        generator = Generator(**g_kwargs)
        discriminator = Discriminator(ndf=s.ndf, nc=nc, num_classes=num_classes, image_size=size)
    g_kwargs["embed_dim"] = generator.embed_dim if num_classes else None
    generator.to(dev).train()
    discriminator.to(dev).train()
    return _GAN(
        generator=generator, discriminator=discriminator,
        opt_g=torch.optim.Adam(generator.parameters(), lr=s.lr, betas=(s.beta1, 0.999)),
        opt_d=torch.optim.Adam(discriminator.parameters(), lr=s.lr, betas=(s.beta1, 0.999)),
        shuffle=torch.Generator().manual_seed(s.seed), noise=torch.Generator(device=dev).manual_seed(s.seed + 1),
        g_kwargs=g_kwargs,
    )


def _gan_step(gan: _GAN, real: torch.Tensor, y: torch.Tensor | None, nz: int) -> torch.Tensor:
    """One D step then one G step (non-saturating loss); (d_loss, g_loss, D(x), D(G(z))) without a host sync."""
    bs = real.shape[0]
    ones = torch.ones(bs, device=real.device)
    zeros = torch.zeros(bs, device=real.device)
    z = torch.randn(bs, nz, generator=gan.noise, device=real.device)
    fake = gan.generator(z, y)

    gan.opt_d.zero_grad(set_to_none=True)
    d_real = gan.discriminator(real, y)
    d_fake = gan.discriminator(fake.detach(), y)
    loss_d = F.binary_cross_entropy_with_logits(d_real, ones) + F.binary_cross_entropy_with_logits(d_fake, zeros)
    loss_d.backward()
    gan.opt_d.step()

    gan.opt_g.zero_grad(set_to_none=True)
    loss_g = F.binary_cross_entropy_with_logits(gan.discriminator(fake, y), ones)
    loss_g.backward()
    gan.opt_g.step()
    with torch.no_grad():
        return torch.stack([loss_d, loss_g, torch.sigmoid(d_real).mean(), torch.sigmoid(d_fake).mean()])


def _train_epoch(gan: _GAN, images: torch.Tensor, labels: torch.Tensor | None, bs: int, steps: int, nz: int,
                 bar: Any) -> tuple[list[float], int]:
    """Up to ``steps`` batches of one shuffled pass (last incomplete batch dropped); per-epoch means, steps done."""
    n = images.shape[0]
    perm = torch.randperm(n, generator=gan.shuffle).to(images.device)
    sums = torch.zeros(4, device=images.device)
    done = 0
    for s in range(steps):
        batch = perm[s * bs:(s + 1) * bs]
        real = images[batch].float() / 127.5 - 1.0
        sums += _gan_step(gan, real, labels[batch] if labels is not None else None, nz)
        done += 1
        if bar is not None:
            bar.update(1)
    return (sums / max(done, 1)).tolist(), done  # one host sync per epoch


def train_dcgan(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    settings: DCGANSettings,
    device: torch.device | str | None = None,
    progress: bool = True,
    description: str = "DCGAN",
) -> tuple[Generator, Discriminator, dict[str, Any]]:
    """Train a (conditional) DCGAN on uint8 ``images`` (N, C, H, W) with int ``labels``; no data loading here.

    ``num_classes``: the label space a conditional generator keeps (0 or ``conditional=False``: unconditional).
    Returns both networks in eval mode and ``{"generator": constructor arguments, "batch_size", "device",
    "seconds", "epochs_completed" (fractional when ``max_steps`` stopped inside an epoch), "steps", "history"}``. Seeded: weights, shuffling (CPU generator) and latents (a
    generator on ``device``).
    """
    settings.check()
    dev = torch.device(device) if device is not None else default_device()
    nc, height, width = images.shape[1:]
    if height != width or height not in SUPPORTED_SIZES:
        raise ValueError(f"the DCGAN supports square images of size {SUPPORTED_SIZES}, got {height}x{width}")
    images, labels = images.to(dev), labels.to(dev)  # uint8, converted per batch
    n = int(images.shape[0])
    bs = min(settings.batch_size, n)
    steps_per_epoch = n // bs
    total = settings.epochs * steps_per_epoch
    total = total if settings.max_steps is None else min(settings.max_steps, total)
    gan = _build_gan(settings, nc, height, num_classes if settings.conditional else 0, dev)
    conditioned = labels if settings.conditional and num_classes else None
    bar = None
    if progress:
        from fl_privacy.progress import progress_bar

        bar = progress_bar(total=total, desc=description, leave=False)
    history: dict[str, list[float]] = {"d_loss": [], "g_loss": [], "d_real": [], "d_fake": []}
    step = 0
    start = time.perf_counter()
    for _epoch in range(settings.epochs):
        if step >= total:
            break
        means, done = _train_epoch(gan, images, conditioned, bs, min(steps_per_epoch, total - step), settings.nz, bar)
        step += done
        for key, value in zip(history, means):
            history[key].append(float(value))
        if bar is not None:
            bar.set_postfix(d_loss=f"{means[0]:.3f}", g_loss=f"{means[1]:.3f}")
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    gan.generator.eval()
    gan.discriminator.eval()
    return gan.generator, gan.discriminator, {
        "generator": gan.g_kwargs, "batch_size": bs, "device": str(dev), "seconds": seconds,
        "epochs_completed": step / steps_per_epoch, "steps": step, "history": history,
    }
