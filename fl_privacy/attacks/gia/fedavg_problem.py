"""The simulated client of Dimitrov et al.'s FedAvg attack ("Data Leakage in Federated Averaging", TMLR 2022).

The attacker's batching of its E x N dummy images (its own, or the granted
schedule's), the paper's distance between ``-sim_delta / lr`` and ``-delta / lr``
with exponentially decaying layer weights, and its priors: TV, the pixel box
("clip"), and the epoch-order-invariant prior (every epoch's copy is the same set
of images, so max-pooled random features of the copies must agree).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from scipy.optimize import linear_sum_assignment

from fl_privacy.attacks.gia.fedavg_options import FedAvgAttackConfig
from fl_privacy.attacks.gia.objectives import cosine_distance, l2_distance
from fl_privacy.attacks.gia.options import GIAConfig
from fl_privacy.attacks.gia.problem import GIAProblem
from fl_privacy.attacks.gia.problem_setup import default_device
from fl_privacy.attacks.threat import LocalTraining, Observation, Schedule

__all__ = ["Batching", "FedAvgProblem", "chosen_batching", "exponential_layer_weights", "granted_batching"]


@dataclass(frozen=True)
class Batching:
    """The simulated local training: steps over positions of the (copies x per_copy) dummy images."""

    steps: tuple[tuple[int, ...], ...]
    copies: int
    per_copy: int
    aligned: bool
    """True when position i of every copy is known to be the same image (a granted schedule)."""

    @property
    def complete(self) -> list[int]:
        """Copies all of whose images enter some step (a partial last epoch is left out of the mean)."""
        used = {p for s in self.steps for p in s}
        return [e for e in range(self.copies) if all(e * self.per_copy + i in used for i in range(self.per_copy))]


def chosen_batching(training: LocalTraining, n: int) -> Batching:
    """The attacker's batching: each epoch's copy cut into consecutive mini-batches, as the client would."""
    steps: list[tuple[int, ...]] = []
    for epoch in range(training.epochs):
        for start in range(0, n, training.batch_size):
            chunk = tuple(epoch * n + j for j in range(start, min(start + training.batch_size, n)))
            if training.drop_last and len(chunk) < training.batch_size:
                continue
            steps.append(chunk)
            if training.local_steps and len(steps) == training.local_steps:
                return Batching(tuple(steps), epoch + 1, n, aligned=False)
    if not steps:
        raise ValueError(f"no local step: {n} samples, batch size {training.batch_size}, drop_last")
    return Batching(tuple(steps), training.epochs, n, aligned=False)


def granted_batching(schedule: Schedule, n: int) -> Batching:
    """A granted schedule's batching; a new epoch (copy) starts when a sample comes back."""
    steps, seen, epoch = [], set(), 0
    for step in schedule.steps:
        if seen & set(step):
            epoch, seen = epoch + 1, set()
        seen |= set(step)
        steps.append(tuple(epoch * n + p for p in step))
    return Batching(tuple(steps), epoch + 1, n, aligned=True)


def exponential_layer_weights(names: list[str]) -> list[float]:
    """``exp(-l)`` for the l-th module (in parameter order), shared by its weight and bias (``--att_exp_layers``)."""
    modules: list[str] = []
    for n in names:
        module = n.rsplit(".", 1)[0] if "." in n else ""
        if module not in modules:
            modules.append(module)
    return [math.exp(-modules.index(n.rsplit(".", 1)[0] if "." in n else "")) for n in names]


class FedAvgProblem:
    """The simulated client on E x N dummy images, the paper's distance and priors, batched over restarts."""

    def __init__(self, obs: Observation, cfg: FedAvgAttackConfig, device: torch.device | str | None = None) -> None:
        if obs.kind != "delta":
            raise ValueError("dimitrov_fedavg attacks FedAvg updates (w_client - w_global); this update is a "
                             "gradient (FedSGD): use a single-gradient attack such as inverting_gradients")
        if not obs.num_examples:
            raise ValueError("dimitrov_fedavg needs the number of samples behind the update: grant it "
                             "(attack.threat.num_examples)")
        if obs.schedule is None and obs.training is None:
            raise ValueError("dimitrov_fedavg needs the FedAvg hyperparameters the server sent (lr, epochs, batch "
                             "size): the Observation carries none (obs.training)")
        self.cfg, self.obs = cfg, obs
        self.device = torch.device(device) if device is not None else default_device()
        n = int(obs.num_examples)
        if obs.schedule is not None:
            self.batching = granted_batching(obs.schedule, n)
            lr, momentum, decay = obs.schedule.lr, obs.schedule.momentum, obs.schedule.weight_decay
        else:
            t = obs.training
            self.batching = chosen_batching(t, n)
            lr, momentum, decay = t.lr, t.momentum, t.weight_decay
        self.lr = lr
        simulated = Schedule(lr=lr, steps=self.batching.steps, momentum=momentum, weight_decay=decay)
        sim_obs = replace(obs, schedule=simulated, num_examples=self.batching.copies * n, labels=None,
                          bn_statistics=None)
        self.inner = GIAProblem(sim_obs, GIAConfig(objective="l2", schedule="known", labels="known", tv=0.0,
                                                   model_mode=cfg.model_mode), self.device)
        self.target = [t / -lr for t in self.inner.target]  # -delta / lr: the sum of the steps' gradients
        self.weights = (exponential_layer_weights(self.inner.names) if cfg.layer_weights == "exponential"
                        else None)
        self.dtype = self.inner.dtype
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        channels = obs.image_shape[0]
        std = 1.0 / math.sqrt(channels * 9)  # LeCun normal, flax's default kernel init
        self.projection = (torch.randn((cfg.projection_channels, channels, 3, 3), generator=gen) * std).to(
            self.device, self.dtype)
        mean = obs.mean if obs.normalized else (0.0,) * channels
        scale = obs.std if obs.normalized else (1.0,) * channels
        self.pixel_mean = torch.tensor(mean, device=self.device, dtype=self.dtype).view(1, 1, -1, 1, 1)
        self.pixel_std = torch.tensor(scale, device=self.device, dtype=self.dtype).view(1, 1, -1, 1, 1)

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Gradient distance of every restart, (R,); ``x`` (R, E*N, C, H, W), ``y`` (E*N,)."""
        cand, _ = self.inner.candidates(x, y)
        cand = [c / -self.lr for c in cand]
        fn = l2_distance if self.cfg.objective == "l2" else cosine_distance
        return fn(cand, self.target, self.weights) / len(self.batching.steps)

    def priors(self, x: torch.Tensor) -> torch.Tensor:
        """TV + clip + epoch-order-invariant prior of every restart, (R,), with the configured weights."""
        total = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        if self.cfg.tv:
            dh = x - torch.roll(x, -1, dims=-2)
            dw = x - torch.roll(x, -1, dims=-1)
            total = total + self.cfg.tv * (dh.pow(2) + dw.pow(2) + 1e-7).flatten(2).sum(2).mean(1)
        if self.cfg.clip:
            pixels = x * self.pixel_std + self.pixel_mean
            total = total + self.cfg.clip * (pixels - pixels.clamp(0, 1)).pow(2).mean(1).flatten(1).sum(1)
        if self.cfg.order_prior and self.batching.copies > 1:
            total = total + self.cfg.order_prior * self.order_prior(x)
        return total

    def order_prior(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over all epoch pairs of the squared difference of the copies' max-pooled random features, (R,)."""
        R, E, N = x.shape[0], self.batching.copies, self.batching.per_copy
        features = torch.nn.functional.conv2d(x.flatten(0, 1), self.projection, padding=1)
        summary = features.view(R, E, N, -1).amax(dim=2)              # (R, E, F*H*W): invariant to the order
        gaps = (summary[:, :, None] - summary[:, None, :]).pow(2).mean(-1)  # (R, E, E)
        return gaps.flatten(1).mean(1)

    def combine(self, x: torch.Tensor) -> torch.Tensor:
        """One restart's copies (E*N, C, H, W) -> the N images: the mean of the matched complete copies."""
        E, N = self.batching.copies, self.batching.per_copy
        copies = x.view(E, N, *x.shape[1:])
        keep = self.batching.complete or [0]
        if self.batching.aligned:
            return copies[keep].mean(0)
        pixels = (copies * self.pixel_std[0] + self.pixel_mean[0]).clamp(0, 1).flatten(2)
        matched = [copies[keep[0]]]
        for e in keep[1:]:
            mse = (pixels[keep[0]][:, None] - pixels[e][None]).pow(2).mean(-1).clamp_min(1e-10)
            _, cols = linear_sum_assignment((10 * torch.log10(mse)).cpu().numpy())  # = -PSNR
            matched.append(copies[e][torch.as_tensor(cols, device=x.device)])
        return torch.stack(matched).mean(0)
