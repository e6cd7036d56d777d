"""Dimitrov et al. 2022, "Data Leakage in Federated Averaging" (TMLR): GIA-O on a FedAvg update, batch order unknown.

The client ran E local epochs of mini-batch SGD over its N images, in an order
the server does not know, and shared ``delta = w_client - w_global``. The attack:

* optimises one dummy copy of the N images **per epoch** (E x N dummy images);
* simulates the client's whole local SGD on them, differentiably through every
  step (``unroll.unrolled_delta``, the client's own training code), with a
  batching the attacker chooses: each epoch's copy cut into consecutive
  mini-batches (the paper's observation: the update after an epoch hardly
  depends on the batch order). When the threat level grants the batch schedule,
  its batching is used instead;
* matches ``-sim_delta / lr`` to ``-delta / lr`` (squared L2 with exponentially
  decaying layer weights, divided by the number of steps, times a factor that
  decays from 4 to 2 over the first half of the run);
* adds the epoch-order-invariant prior: every epoch's copy is the same *set* of
  images, so a permutation-invariant summary of each copy (the element-wise max
  over its images of a random 3x3 convolution with 96 channels) must agree
  between all pairs of epochs; plus TV and a pixel-box ("clip") prior;
* infers the label counts from the update by simulating training
  (``fedavg_labels``) unless the labels are granted;
* returns the mean of the epoch copies after matching each copy's images to the
  first copy's (optimal assignment on PSNR).

Every default is the authors' (eth-sri/fedavg_leakage, ``scripts/reconstruct_cifar_table1.sh``
and ``table3.sh``, CIFAR "FedAvg + prior" rows); the field docs name the flag.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from fl_privacy.attacks.gia.engine import (
    GIAConfig,
    GIAProblem,
    GIAResult,
    _log_step,
    _logged_iterations,
    check_choices,
    default_device,
    from_presets,
    pick_best_restart,
)
from fl_privacy.attacks.gia.objectives import cosine_distance, l2_distance
from fl_privacy.attacks.threat import LocalTraining, Observation, Schedule

__all__ = ["Batching", "FEDAVG_PRESETS", "FedAvgAttackConfig", "FedAvgProblem", "fedavg_preset",
           "reconstruct_fedavg"]


@dataclass
class FedAvgAttackConfig:
    """Settings of Dimitrov et al.'s FedAvg attack; defaults are the authors' CIFAR settings."""

    iterations: int = 400
    """Adam steps (``2 * --att_epochs``, att_epochs = 200)."""
    lr: float = 0.1
    """Adam step size (``--att_lr``), decayed by ``lr_decay`` every ``lr_decay_steps`` steps (continuously)."""
    lr_decay: float = 0.997
    """``--exp_decay_factor``."""
    lr_decay_steps: int = 20
    """``--exp_decay_steps``."""
    objective: Literal["l2", "cosine"] = "l2"
    """``--att_metric l2``: squared L2 between ``-delta / lr`` and the simulated one."""
    layer_weights: Literal["exponential", "uniform"] = "exponential"
    """``--att_exp_layers``: layer ``l`` (0 = input side; weight and bias alike) weighs ``exp(-l)``."""
    match_weight_start: float = 4.0
    """``--att_fac_start``: factor on the distance at the start ..."""
    match_weight: float = 2.0
    """... decaying geometrically to this one (``--att_total_var``) over the first half of the run."""
    tv: float = 2e-4
    """``--reg_tv``: per image the sum of squared (circular) neighbour differences, mean over images."""
    clip: float = 10.0
    """``--reg_clip``: squared distance of the pixels outside [0, 1]."""
    order_prior: float = 6.075
    """``--reg_reorder`` (CIFAR; FEMNIST 1000): weight of the epoch-order-invariant prior (``l2_max_conv``)."""
    projection_channels: int = 96
    """Channels of the prior's random 3x3 convolution (the reference's ``nn.Conv(features=96)``)."""
    restarts: int = 1
    """``--att_restarts``: independent trials, optimised together; the lowest final distance wins."""
    labels: Literal["known", "infer"] = "infer"
    """Given (``attack.threat.labels``) or inferred from the update."""
    label_method: str = "fedavg"
    """"fedavg": the paper's counts by simulated training (``--res_label aaai_avg_full``); "llg", "llg+", "yin",
    "idlg": the single-gradient methods of ``labels`` on ``-delta``."""
    model_mode: Literal["train", "eval"] = "train"
    """Mode of the attacker's model copy (the client's, from ``training.model_mode``)."""
    seed: int = 0
    """Seed of the dummy images (N(0, 1), ``--att_init normal``) and of the prior's random convolution."""
    log_every: int = 0
    """Trace interval in iterations; 0 = automatic (about 100 points)."""

    def __post_init__(self) -> None:
        check_choices(self)
        for name in ("lr", "lr_decay", "match_weight_start", "match_weight"):
            if not getattr(self, name) > 0:
                raise ValueError(f"FedAvgAttackConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("tv", "clip", "order_prior"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"FedAvgAttackConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        for name, minimum in (("iterations", 1), ("restarts", 1), ("lr_decay_steps", 1), ("projection_channels", 1),
                              ("log_every", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"FedAvgAttackConfig.{name} must be an integer >= {minimum}, got {value!r}")


FEDAVG_PRESETS: dict[str, FedAvgAttackConfig] = {"dimitrov_fedavg": FedAvgAttackConfig()}


def fedavg_preset(name: str, **overrides: object) -> FedAvgAttackConfig:
    """A copy of preset ``name`` with ``overrides`` applied."""
    return from_presets(FEDAVG_PRESETS, name, overrides, "FedAvg attack")


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


def _labels(obs: Observation, cfg: FedAvgAttackConfig, problem: FedAvgProblem) -> tuple[torch.Tensor, str]:
    """Labels of one copy (N,) and how they were obtained; inferred ones come sorted by class."""
    n = problem.batching.per_copy
    if cfg.labels == "known":
        if obs.labels is None:
            raise ValueError("FedAvgAttackConfig.labels='known' but the threat level does not grant the labels "
                             "(attack.threat.labels); use labels='infer'")
        return obs.labels.detach().reshape(-1).long().cpu(), "labels given"
    if cfg.label_method == "fedavg":
        from fl_privacy.attacks.gia.fedavg_labels import fedavg_label_counts

        counts = fedavg_label_counts(obs, n, len(problem.batching.steps), problem.lr, cfg.model_mode, seed=cfg.seed)
    else:
        from fl_privacy.attacks.gia.labels import infer_labels

        labels = torch.as_tensor(infer_labels(obs, n, cfg.label_method)).reshape(-1).long()
        counts = torch.bincount(labels, minlength=obs.num_classes)
    labels = torch.repeat_interleave(torch.arange(len(counts)), counts)
    return labels, f"label counts inferred ({cfg.label_method}), positions sorted by class"


def reconstruct_fedavg(obs: Observation, cfg: FedAvgAttackConfig, device: torch.device | str | None = None,
                       progress: bool = False) -> GIAResult:
    """Reconstruct the client's N images from its FedAvg update ``obs`` (Dimitrov et al. 2022)."""
    device = torch.device(device) if device is not None else default_device()
    problem = FedAvgProblem(obs, cfg, device)
    R, E, N = cfg.restarts, problem.batching.copies, problem.batching.per_copy
    labels, how = _labels(obs, cfg, problem)
    if labels.numel() != N:
        raise ValueError(f"got {labels.numel()} labels for {N} samples")
    y = labels.repeat(E).to(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn((R, E * N, *obs.image_shape), generator=gen, dtype=problem.dtype).to(device).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=cfg.lr)
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: cfg.lr_decay ** (t / cfg.lr_decay_steps))
    half = max(1, cfg.iterations // 2)
    ratio = (cfg.match_weight / cfg.match_weight_start) ** (1.0 / half)
    logged = _logged_iterations(cfg)  # type: ignore[arg-type]
    slot = {it: j for j, it in enumerate(logged)}
    trace = torch.full((len(logged), R), float("nan"), device=device)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.iterations, desc="GIA dimitrov_fedavg", leave=False)
    start = time.perf_counter()
    for it in range(cfg.iterations):
        factor = cfg.match_weight_start * ratio ** min(it + 1, half)  # the reference's curr_fac
        opt.zero_grad()
        total = factor * problem.distance(x, y) + problem.priors(x)
        total.sum().backward()
        opt.step()
        decay.step()
        _log_step(it, total.detach(), trace, slot, bar, cfg.iterations)
    if bar is not None:
        bar.close()
    with torch.no_grad():
        distance = problem.distance(x, y)
    seconds = time.perf_counter() - start
    notes = [how, f"simulated {len(problem.batching.steps)} local steps over {E} epoch copies of {N} images "
                  f"({'granted' if problem.batching.aligned else 'attacker-chosen'} batching)"]
    finals, best = pick_best_restart(distance, notes)
    with torch.no_grad():
        images = problem.combine(x[best].detach())
    trace_np = np.column_stack([np.asarray(logged, dtype=np.float64), trace.cpu().double().numpy()])
    return GIAResult(
        images=images.cpu(), labels=labels, objective=float(finals[best]),
        restart_objectives=[float(v) for v in finals], trace=trace_np, iterations=cfg.iterations,
        seconds=seconds, seconds_per_iteration=seconds / cfg.iterations, objective_used=cfg.objective,
        update_model="dimitrov_" + ("known_order" if problem.batching.aligned else "unknown_order"),
        best_restart=best, notes=notes,
    )
