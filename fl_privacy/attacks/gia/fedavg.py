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

import time

import numpy as np
import torch

from fl_privacy.attacks.gia.fedavg_options import FedAvgAttackConfig
from fl_privacy.attacks.gia.fedavg_problem import FedAvgProblem
from fl_privacy.attacks.gia.options import from_presets
from fl_privacy.attacks.gia.problem_setup import default_device
from fl_privacy.attacks.gia.result import GIAResult, pick_best_restart
from fl_privacy.attacks.gia.tracing import log_step, logged_iterations, trace_table
from fl_privacy.attacks.threat import Observation

__all__ = ["FEDAVG_PRESETS", "fedavg_preset", "reconstruct_fedavg"]


FEDAVG_PRESETS: dict[str, FedAvgAttackConfig] = {"dimitrov_fedavg": FedAvgAttackConfig()}


def fedavg_preset(name: str, **overrides: object) -> FedAvgAttackConfig:
    """A copy of preset ``name`` with ``overrides`` applied."""
    return from_presets(FEDAVG_PRESETS, name, overrides, "FedAvg attack")


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
    start = time.perf_counter()
    trace = _optimise(problem, cfg, x, y, progress)
    with torch.no_grad():
        distance = problem.distance(x, y)
    seconds = time.perf_counter() - start
    notes = [how, (f"simulated {len(problem.batching.steps)} local steps over {E} epoch copies of {N} images "
                   f"({'granted' if problem.batching.aligned else 'attacker-chosen'} batching)")]
    finals, best = pick_best_restart(distance, notes)
    with torch.no_grad():
        images = problem.combine(x[best].detach())
    return GIAResult(
        images=images.cpu(), labels=labels, objective=float(finals[best]),
        restart_objectives=[float(v) for v in finals], trace=trace, iterations=cfg.iterations,
        seconds=seconds, seconds_per_iteration=seconds / cfg.iterations, objective_used=cfg.objective,
        update_model="dimitrov_" + ("known_order" if problem.batching.aligned else "unknown_order"),
        best_restart=best, notes=notes,
    )


def _optimise(problem: FedAvgProblem, cfg: FedAvgAttackConfig, x: torch.Tensor, y: torch.Tensor,
              progress: bool) -> np.ndarray:
    """Adam on the dummy images ``x`` in place, lr decayed exponentially; the distance's factor decays from
    ``match_weight_start`` to ``match_weight`` over the first half of the run. Returns the trace."""
    opt = torch.optim.Adam([x], lr=cfg.lr)
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: cfg.lr_decay ** (t / cfg.lr_decay_steps))
    half = max(1, cfg.iterations // 2)
    ratio = (cfg.match_weight / cfg.match_weight_start) ** (1.0 / half)
    logged = logged_iterations(cfg)  # type: ignore[arg-type]
    slot = {it: j for j, it in enumerate(logged)}
    trace = torch.full((len(logged), cfg.restarts), float("nan"), device=x.device)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.iterations, desc="GIA dimitrov_fedavg", leave=False)
    for it in range(cfg.iterations):
        factor = cfg.match_weight_start * ratio ** min(it + 1, half)  # the reference's curr_fac
        opt.zero_grad()
        total = factor * problem.distance(x, y) + problem.priors(x)
        total.sum().backward()
        opt.step()
        decay.step()
        log_step(it, total.detach(), trace, slot, bar, cfg.iterations)
    if bar is not None:
        bar.close()
    return trace_table(logged, trace)
