"""The two stages of GIA-L: the latent search (GGL, GIAS stage 1) and GIAS's per-image generator fit.

Stage 1 optimises latents ``w`` of all ``R`` restarts x ``B`` images together: one
batched generator call (eval mode, so the images do not interact), one
``GIAProblem.evaluate`` over all restarts, Adam on ``w``. Stage 2 (Jeon et al.,
"Gradient Inversion with Generative Image Prior", NeurIPS 2021) freezes ``z`` and
optimises one copy of the generator's parameters per image
(``torch.func.stack_module_state`` + ``vmap``). No host syncs in the hot loops.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from fl_privacy.attacks.generators.saved import to_attack_space
from fl_privacy.attacks.gia.latent_options import GIALConfig
from fl_privacy.attacks.gia.problem import GIAProblem
from fl_privacy.attacks.gia.tracing import ProgressBar, log_step, logged_iterations, lr_scheduler, trace_table
from fl_privacy.attacks.threat import Observation

__all__ = ["GeneratedCandidates", "LatentSearch", "fit_generator", "latent_prior", "search_latents"]


def latent_prior(z: torch.Tensor, kind: str) -> torch.Tensor:
    """Prior on latents ``z`` of shape (R, B, nz): one value per restart, (R,). See ``GIALConfig.latent_prior``."""
    if z.dim() != 3:
        raise ValueError(f"latents must have shape (R, B, nz), got {tuple(z.shape)}")
    if kind == "kl":
        var, mean = torch.var_mean(z, dim=-1, unbiased=False)
        return (0.5 * (var + mean.pow(2) - 1.0 - torch.log(var + 1e-10))).mean(dim=1)
    if kind == "norm":
        return z.flatten(1).norm(dim=1)
    if kind == "none":
        return z.new_zeros(z.shape[0])
    raise ValueError(f"unknown latent prior {kind!r}; expected 'none', 'kl' or 'norm'")


class GeneratedCandidates:
    """A frozen eval-mode copy of the generator and the map from its images to the attack's candidates."""

    def __init__(self, generator: nn.Module, obs: Observation, problem: GIAProblem, cfg: GIALConfig) -> None:
        device = problem.device
        self.G = copy.deepcopy(generator).to(device).eval()
        for p in self.G.parameters():
            p.requires_grad_(False)
        self.dtype = next((p.dtype for p in self.G.parameters()), torch.float32)
        self.mean = torch.tensor(obs.mean, dtype=self.dtype, device=device)
        self.std = torch.tensor(obs.std, dtype=self.dtype, device=device)
        lo, hi = obs.pixel_box(device)
        self.lo, self.hi = lo.to(problem.dtype).unsqueeze(0), hi.to(problem.dtype).unsqueeze(0)  # (1, 1, C, 1, 1)
        self.shape = tuple(obs.image_shape)
        self.normalized, self.boxed = obs.normalized, cfg.boxed
        self.batch, self.problem_dtype = problem.batch_size, problem.dtype

    def check_shape(self, nz: int, condition: torch.Tensor | None) -> None:
        """The generator makes images of the victim's shape (one probe latent)."""
        with torch.no_grad():
            probe = self.G(torch.zeros(1, nz, dtype=self.dtype, device=self.mean.device), condition)
        if tuple(probe.shape[1:]) != self.shape:
            raise ValueError(f"the generator makes images of shape {tuple(probe.shape[1:])}, the victim's are "
                             f"{self.shape}")

    def __call__(self, images: torch.Tensor, restarts: int) -> torch.Tensor:
        """Generator output (restarts * B, C, H, W) in [-1, 1] -> candidates (restarts, B, C, H, W)."""
        x = to_attack_space(images, self.mean, self.std, self.normalized)
        x = x.reshape(restarts, self.batch, *self.shape).to(self.problem_dtype)
        return torch.clamp(x, min=self.lo, max=self.hi) if self.boxed else x


@dataclass
class LatentSearch:
    """Stage 1's outcome: the final candidates and latents of every restart, their distances and the trace."""

    x: torch.Tensor
    """(R, B, C, H, W) candidates at the final latents."""
    z: torch.Tensor
    """(R * B, nz) final latents (after ``bound``)."""
    distance: torch.Tensor
    """(R,) final gradient distance."""
    trace: np.ndarray
    """(n_logged, 1 + R)."""
    start: float
    """``time.perf_counter()`` when the search started."""


def search_latents(problem: GIAProblem, cfg: GIALConfig, candidates: GeneratedCandidates, labels: torch.Tensor,
                   conditional: bool, nz: int, bar: ProgressBar | None) -> LatentSearch:
    """Stage 1: Adam on the latents of all restarts; ``labels`` (B,) also condition a conditional generator."""
    R, B, device = cfg.restarts, problem.batch_size, problem.device
    gcfg = problem.cfg

    def latent(w: torch.Tensor) -> torch.Tensor:
        return torch.tanh(w) if cfg.bound == "tanh" else w

    gen = torch.Generator().manual_seed(cfg.seed)
    w = torch.randn((R * B, nz), generator=gen, dtype=candidates.dtype).to(device).requires_grad_(True)
    y_gen = labels.repeat(R) if conditional else None  # row r*B + b <-> restart r, image b
    opt = torch.optim.Adam([w], lr=cfg.lr)
    scheduler = lr_scheduler(opt, gcfg)
    logged = logged_iterations(gcfg)
    slot = {it: j for j, it in enumerate(logged)}
    trace = torch.full((len(logged), R), float("nan"), device=device)
    use_prior = cfg.latent_prior != "none" and cfg.latent_weight > 0
    start = time.perf_counter()
    for it in range(cfg.iterations):
        opt.zero_grad(set_to_none=True)
        z = latent(w)
        total, _ = problem.evaluate(candidates(candidates.G(z, y_gen), R), labels)
        if use_prior:
            total = total + cfg.latent_weight * latent_prior(z.view(R, B, nz), cfg.latent_prior).to(total.dtype)
        total.sum().backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
        log_step(it, total.detach(), trace, slot, bar, cfg.iterations)
    with torch.no_grad():
        z = latent(w)
        x = candidates(candidates.G(z, y_gen), R)
        _, distance = problem.evaluate(x, labels)
    return LatentSearch(x=x, z=z, distance=distance, trace=trace_table(logged, trace), start=start)


def _per_image_generator(G: nn.Module, condition: torch.Tensor | None) -> Callable[..., torch.Tensor]:
    """``generate(params, z, [condition])``: one generator copy per image in one ``vmap``ped call."""
    buffers = dict(G.named_buffers())
    if condition is None:
        def one(p: dict, z1: torch.Tensor) -> torch.Tensor:
            return functional_call(G, (p, buffers), (z1[None],))[0]
        return torch.func.vmap(one, in_dims=(0, 0))

    def one_c(p: dict, z1: torch.Tensor, y1: torch.Tensor) -> torch.Tensor:
        return functional_call(G, (p, buffers), (z1[None], y1[None]))[0]
    return torch.func.vmap(one_c, in_dims=(0, 0, 0))


def fit_generator(problem: GIAProblem, cfg: GIALConfig, candidates: GeneratedCandidates, z: torch.Tensor,
                  condition: torch.Tensor | None, labels: torch.Tensor,
                  bar: ProgressBar | None) -> tuple[torch.Tensor, float, np.ndarray]:
    """GIAS stage 2: optimise one copy of the generator's parameters per image, ``z`` (B, nz) fixed.

    The B copies are stacked (``stack_module_state``) and run in one ``vmap``ped call; buffers
    (BN running statistics) are shared and only read (eval mode). Returns the images (B, C, H, W)
    in the attack space, the final gradient distance and the trace ((n, 2): step, loss).
    """
    G = candidates.G
    copies = [G] * z.shape[0]  # stack_module_state copies the tensors; the module itself is only a template
    params, _ = stack_module_state(copies)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    generate = _per_image_generator(G, condition)
    args = (z,) if condition is None else (z, condition)
    scfg = cfg.gia_config(iterations=cfg.generator_steps, lr=cfg.generator_lr)
    opt = torch.optim.Adam(list(params.values()), lr=cfg.generator_lr)
    scheduler = lr_scheduler(opt, scfg)
    logged = logged_iterations(scfg)
    slot = {it: j for j, it in enumerate(logged)}
    trace = torch.full((len(logged),), float("nan"), device=z.device)
    for it in range(cfg.generator_steps):
        opt.zero_grad(set_to_none=True)
        total, _ = problem.evaluate(candidates(generate(params, *args), 1), labels)
        total.sum().backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
        log_step(it, total.detach()[0], trace, slot, bar, cfg.generator_steps)
    with torch.no_grad():
        x = candidates(generate(params, *args), 1)
        _, distance = problem.evaluate(x, labels)
    return x[0].detach(), float(distance[0]), trace_table(logged, trace)
