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

Checkpoints are plain dicts of Python scalars, strings, lists, tuples, dicts and
tensors, loadable with ``torch.load(path, weights_only=True)``.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fl_privacy.attacks.generators.dcgan import SUPPORTED_SIZES, Discriminator, Generator

__all__ = [
    "CHECKPOINT_FORMAT",
    "GeneratorCheckpoint",
    "generator_from_checkpoint",
    "load_generator",
    "to_attack_space",
    "train_generator",
]

CHECKPOINT_FORMAT = "fl-privacy-dcgan/1"
"""``format`` key of a saved checkpoint (bumped when the layout changes)."""


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def to_attack_space(images_tanh: torch.Tensor, mean: tuple[float, ...] | list[float] | torch.Tensor,
                    std: tuple[float, ...] | list[float] | torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Generator output in [-1, 1] -> [0, 1] pixels -> the victim model's input space.

    ``(x + 1) / 2``, then ``(p - mean) / std`` per channel when ``normalize`` (the
    Observation's ``normalized`` flag). ``images_tanh`` is (..., C, H, W); ``mean`` and
    ``std`` are per channel and come from the *victim's* data domain (the Observation),
    which need not be the generator's training set. Differentiable; no host syncs.
    """
    pixels = (images_tanh + 1) * 0.5
    if not normalize:
        return pixels
    m = torch.as_tensor(mean, dtype=pixels.dtype, device=pixels.device).reshape(-1, 1, 1)
    s = torch.as_tensor(std, dtype=pixels.dtype, device=pixels.device).reshape(-1, 1, 1)
    if m.shape[0] != pixels.shape[-3] or s.shape[0] != pixels.shape[-3]:
        raise ValueError(f"mean/std have {m.shape[0]}/{s.shape[0]} channels, images {pixels.shape[-3]}")
    return (pixels - m) / s


@dataclass
class GeneratorCheckpoint:
    """A trained generator and what is needed to use and report it."""

    generator: Generator
    """In eval mode (BatchNorm uses its running statistics), on the training device."""
    config: dict[str, Any]
    """Training settings and the generator's constructor arguments (``config["generator"]``)."""
    classes: list[int]
    """Class ids of the auxiliary data the generator was trained on."""
    mean: tuple[float, ...]
    std: tuple[float, ...]
    """Normalization of the training dataset (the attack uses the Observation's own)."""
    image_shape: tuple[int, int, int]
    num_samples: int
    seconds: float
    """Wall-clock training time (excluding data loading)."""
    epochs: float
    """Epochs completed (fractional when ``max_steps`` stopped training inside an epoch)."""
    steps: int
    history: dict[str, list[float]] = field(default_factory=dict)
    """Per epoch means: ``d_loss``, ``g_loss``, ``d_real`` (D(x) as a probability), ``d_fake`` (D(G(z)))."""
    discriminator: Discriminator | None = None
    """Kept in memory for inspection; not saved."""

    @property
    def seconds_per_epoch(self) -> float:
        return self.seconds / self.epochs if self.epochs > 0 else math.nan

    def info(self) -> dict[str, Any]:
        """Everything but the weights, as plain types."""
        return {
            "format": CHECKPOINT_FORMAT,
            "config": copy.deepcopy(self.config),
            "classes": [int(c) for c in self.classes],
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "image_shape": [int(v) for v in self.image_shape],
            "num_samples": int(self.num_samples),
            "seconds": float(self.seconds),
            "epochs": float(self.epochs),
            "steps": int(self.steps),
            "seconds_per_epoch": float(self.seconds_per_epoch),
            "history": {k: [float(v) for v in vals] for k, vals in self.history.items()},
        }

    def to_dict(self) -> dict[str, Any]:
        state = {k: v.detach().cpu().clone() for k, v in self.generator.state_dict().items()}
        return {**self.info(), "state_dict": state}

    def save_checkpoint(self, path: str | os.PathLike) -> Path:
        """Write the checkpoint (atomically: temp file, then rename); return the path."""
        target = Path(path).expanduser()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        torch.save(self.to_dict(), tmp)
        os.replace(tmp, target)
        return target


def generator_from_checkpoint(data: dict[str, Any], device: torch.device | str | None = None
                              ) -> tuple[Generator, dict[str, Any]]:
    """Rebuild the generator from a checkpoint dict (as ``to_dict`` / ``torch.load`` give it)."""
    if data.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"not a generator checkpoint of format {CHECKPOINT_FORMAT!r} (got {data.get('format')!r})")
    kwargs = dict(data["config"]["generator"])
    generator = Generator(**kwargs)
    generator.load_state_dict(data["state_dict"])
    generator.to(torch.device(device) if device is not None else _default_device()).eval()
    info = {k: v for k, v in data.items() if k != "state_dict"}
    info["image_shape"] = tuple(info["image_shape"])
    info["mean"], info["std"] = tuple(info["mean"]), tuple(info["std"])
    return generator, info


def load_generator(path: str | os.PathLike, device: torch.device | str | None = None
                   ) -> tuple[Generator, dict[str, Any]]:
    """Load a saved checkpoint: (generator in eval mode on ``device``, info dict without the weights).

    Uses ``torch.load(weights_only=True)``: no code is executed from the file.
    """
    data = torch.load(Path(path).expanduser(), map_location="cpu", weights_only=True)
    return generator_from_checkpoint(data, device)


def _select(labels: np.ndarray, classes: list[int] | None, num_classes: int, max_samples: int | None,
            seed: int) -> tuple[np.ndarray, list[int]]:
    present = sorted(int(c) for c in np.unique(labels))
    if classes is None:
        chosen = present
    else:
        chosen = sorted({int(c) for c in classes})
        bad = [c for c in chosen if not 0 <= c < num_classes]
        if bad:
            raise ValueError(f"classes {bad} are not class ids of the dataset (0..{num_classes - 1})")
        if not chosen:
            raise ValueError("classes is empty")
    idx = np.flatnonzero(np.isin(labels, chosen))
    if idx.size == 0:
        raise ValueError(f"the split has no samples of classes {chosen}")
    if max_samples is not None:
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
            raise ValueError(f"max_samples must be a positive integer or None, got {max_samples!r}")
        if max_samples < idx.size:
            rng = np.random.default_rng(seed)
            idx = np.sort(rng.choice(idx, size=max_samples, replace=False))
    return idx, chosen


def train_generator(
    dataset: str = "cifar10",
    classes: list[int] | None = None,
    split: str = "train",
    epochs: int = 25,
    batch_size: int = 128,
    nz: int = 100,
    ngf: int = 64,
    ndf: int = 64,
    lr: float = 2e-4,
    beta1: float = 0.5,
    conditional: bool = True,
    max_samples: int | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    progress: bool = True,
    data_dir: str | os.PathLike | None = None,
    max_steps: int | None = None,
) -> GeneratorCheckpoint:
    """Train a (conditional) DCGAN on ``classes`` of ``dataset``/``split``; return the checkpoint.

    ``epochs``: passes over the selected samples (default 25: a CPU-friendly budget; GIAS
    trained its CIFAR-10 DCGAN for 200 epochs, DCGAN reports LSUN after 1-5). ``max_steps``
    stops earlier, after that many batches in total (for tests and timing a fraction of an
    epoch). ``max_samples``: a seeded random subset of the selected samples. The last
    incomplete batch of each epoch is dropped (BatchNorm on tiny batches is unstable).
    Seeded: weights (CPU RNG, forked so the global state is untouched), the shuffling
    (CPU generator) and the latents (a generator on ``device``).
    """
    from fl_privacy.data.datasets import load_dataset

    for name, value, minimum in (("epochs", epochs, 1), ("batch_size", batch_size, 1), ("nz", nz, 1),
                                 ("ngf", ngf, 1), ("ndf", ndf, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
        raise ValueError(f"max_steps must be a positive integer or None, got {max_steps!r}")
    if not lr > 0 or not 0 <= beta1 < 1:
        raise ValueError(f"need lr > 0 and 0 <= beta1 < 1, got lr={lr!r}, beta1={beta1!r}")
    dev = torch.device(device) if device is not None else _default_device()

    data = load_dataset(dataset, split, data_dir=data_dir)
    nc, height, width = data.shape
    if height != width or height not in SUPPORTED_SIZES:
        raise ValueError(f"the DCGAN supports square images of size {SUPPORTED_SIZES}, {dataset} has {height}x{width}")
    labels_all = np.asarray(data.labels, dtype=np.int64)
    idx, chosen = _select(labels_all, classes, data.num_classes, max_samples, seed)
    images = torch.from_numpy(np.ascontiguousarray(data.images[idx])).to(dev)  # uint8, converted per batch
    labels = torch.from_numpy(labels_all[idx]).to(dev)
    n = int(idx.size)
    bs = min(batch_size, n)
    steps_per_epoch = n // bs
    total_steps = epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)

    num_classes = data.num_classes if conditional else 0
    g_kwargs = {"nz": nz, "ngf": ngf, "nc": nc, "num_classes": num_classes, "image_size": height}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = Generator(**g_kwargs)
        discriminator = Discriminator(ndf=ndf, nc=nc, num_classes=num_classes, image_size=height)
    g_kwargs["embed_dim"] = generator.embed_dim if num_classes else None
    generator.to(dev).train()
    discriminator.to(dev).train()
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=(beta1, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=(beta1, 0.999))
    shuffle = torch.Generator().manual_seed(seed)
    noise = torch.Generator(device=dev).manual_seed(seed + 1)
    ones = torch.ones(bs, device=dev)
    zeros = torch.zeros(bs, device=dev)

    bar = None
    if progress:
        from fl_privacy.progress import progress_bar

        bar = progress_bar(total=total_steps, desc=f"DCGAN {dataset} classes {chosen}", leave=False)
    history: dict[str, list[float]] = {"d_loss": [], "g_loss": [], "d_real": [], "d_fake": []}
    step = 0
    start = time.perf_counter()
    for _epoch in range(epochs):
        if step >= total_steps:
            break
        perm = torch.randperm(n, generator=shuffle).to(dev)
        sums = torch.zeros(4, device=dev)
        done = 0
        for s in range(steps_per_epoch):
            if step >= total_steps:
                break
            batch = perm[s * bs:(s + 1) * bs]
            real = images[batch].float() / 127.5 - 1.0
            y = labels[batch] if num_classes else None
            z = torch.randn(bs, nz, generator=noise, device=dev)
            fake = generator(z, y)

            opt_d.zero_grad(set_to_none=True)
            d_real = discriminator(real, y)
            d_fake = discriminator(fake.detach(), y)
            loss_d = F.binary_cross_entropy_with_logits(d_real, ones) + F.binary_cross_entropy_with_logits(d_fake, zeros)
            loss_d.backward()
            opt_d.step()

            opt_g.zero_grad(set_to_none=True)
            loss_g = F.binary_cross_entropy_with_logits(discriminator(fake, y), ones)
            loss_g.backward()
            opt_g.step()

            with torch.no_grad():
                sums += torch.stack([loss_d, loss_g, torch.sigmoid(d_real).mean(), torch.sigmoid(d_fake).mean()])
            step += 1
            done += 1
            if bar is not None:
                bar.update(1)
        means = (sums / max(done, 1)).tolist()  # one host sync per epoch
        for key, value in zip(history, means):
            history[key].append(float(value))
        if bar is not None:
            bar.set_postfix(d_loss=f"{means[0]:.3f}", g_loss=f"{means[1]:.3f}")
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()

    generator.eval()
    discriminator.eval()
    config = {
        "dataset": dataset, "split": split, "epochs": epochs, "batch_size": bs, "nz": nz, "ngf": ngf, "ndf": ndf,
        "lr": float(lr), "beta1": float(beta1), "conditional": bool(conditional), "max_samples": max_samples,
        "max_steps": max_steps, "seed": seed, "device": str(dev), "generator": g_kwargs,
        "generator_parameters": sum(p.numel() for p in generator.parameters()),
    }
    return GeneratorCheckpoint(
        generator=generator, config=config, classes=chosen, mean=tuple(data.mean), std=tuple(data.std),
        image_shape=(nc, height, width), num_samples=n, seconds=seconds, epochs=step / steps_per_epoch,
        steps=step, history=history, discriminator=discriminator,
    )
