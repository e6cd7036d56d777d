"""GIA-L: gradient inversion in the latent space of a generator.

SoK "Gradient Leakage in FL" (Du et al. 2024), §2.3 Definition 2: instead of the
pixels, the attacker optimises latent vectors ``z`` so that the update produced by
the images ``G(z)`` matches the observed one; ``G`` was trained beforehand on
public auxiliary data (``fl_privacy.attacks.generators``). The search space is
small and every candidate is a plausible image, which is why GIA-L copes with
larger batches than GIA-O, and why it fails on images outside the generator's
range (out-of-distribution victims, SoK §4.2.2).

Everything about the update is shared with GIA-O: the candidate images go
through ``GIAProblem.evaluate`` (same objectives, FedSGD gradient / known FedAvg
schedule unrolled / unknown schedule sign-corrected, same Observation contract,
same label rules: ``known`` needs ``obs.labels``, ``infer`` uses
``fl_privacy.attacks.gia.labels``). This module adds only the latent
parametrisation, the latent priors and GIAS's second stage:

* Stage 1 (GGL, GIAS): ``R`` restarts x ``B`` images of latents ``w`` (R*B, nz),
  ``z = w`` or ``tanh(w)`` (``bound``), one batched generator call
  ``G(z, labels)`` (eval mode: BatchNorm uses its running statistics, so the R*B
  images do not interact), mapped to the attack space with the Observation's
  normalisation and reshaped to (R, B, C, H, W); one ``evaluate`` over all
  restarts; Adam on ``w``. A conditional generator is conditioned on the
  known/inferred labels. The best restart is the one with the smallest final
  gradient distance.
* Stage 2 (GIAS, ``generator_steps > 0``): ``z`` of the best restart is frozen
  and the generator's parameters are optimised instead, one copy of the
  generator per image as in GIAS (``torch.func.stack_module_state`` +
  ``vmap``: the B copies run in one call; for B = 1 this is a single deep copy),
  starting from the trained weights, in eval mode (the running BN statistics are
  not updated). Only the best restart goes to stage 2 (GIAS runs it for every
  restart, but all of them start from the same best ``z``). The stage-2 image is
  returned unless its final gradient distance is worse than stage 1's (GIAS
  always returns stage 2; choosing by the distance is the same rule as for
  restarts and uses no ground truth); both distances are in ``notes``.

No host syncs in the hot loops: traces are written into device tensors and read
once at the end; the progress bar reads the objective every 100 iterations.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from fl_privacy.attacks.gia.labels import resolve_labels
from fl_privacy.attacks.gia.latent_options import GIALConfig
from fl_privacy.attacks.gia.latent_stages import GeneratedCandidates, fit_generator, search_latents
from fl_privacy.attacks.gia.options import from_presets
from fl_privacy.attacks.gia.problem import GIAProblem
from fl_privacy.attacks.gia.problem_setup import default_device
from fl_privacy.attacks.gia.result import GIAResult, pick_best_restart
from fl_privacy.attacks.gia.tracing import ProgressBar
from fl_privacy.attacks.threat import Observation

__all__ = ["LATENT_PRESETS", "latent_preset", "reconstruct_latent"]


LATENT_PRESETS: dict[str, GIALConfig] = {
    # Li, Zhang, Wang, Wang, "Auditing Privacy Defenses in Federated Learning via Generative Gradient Leakage"
    # (GGL), CVPR 2022 (github.com/zhuohangli/GGL, reconstructor.py):
    "ggl": GIALConfig(
        objective="l2",          # squared L2 distance per layer ...
        layer_mean=True,         # ... averaged over the layers
        iterations=2500,         # its Adam reconstructor's budget (the paper's default optimiser is CMA-ES with
                                 # ~25k evaluations, or Bayesian optimisation: gradient-free; Adam here)
        lr=0.1,                  # Adam lr 0.1, betas (0.9, 0.999) ...
        lr_schedule="none",      # ... constant
        restarts=1,              # one start per run
        latent_prior="kl",       # KL(N(mean z, var z) || N(0, 1)) ...
        latent_weight=0.1,       # ... weight 0.1 (the alternative is bound="tanh" without KL)
        bound="none",
        generator_steps=0,       # the generator stays fixed
        labels="infer",          # inferred from the output layer (iDLG rule, batch size 1 in GGL); LLG+ here,
        label_method="llg+",     # which also handles batches
        tv=0.0,                  # no image prior
    ),
    # Jeon, Kim, Lee, Ok, "Gradient Inversion with Generative Image Prior" (GIAS), NeurIPS 2021
    # (github.com/ml-postech/gradient-inversion-generative-image-prior, rec_mult.py and scripts/):
    "gias": GIALConfig(
        objective="cosine",      # "sim": 1 - cosine over all parameters
        iterations=2000,         # stage 1 on z (defaults 4800; its ImageNet-32 script 500)
        lr=0.1,                  # unsigned Adam lr 0.1 (its scripts: 3e-2) ...
        lr_schedule="steps",     # ... x0.1 at 3/8, 5/8, 7/8, in both stages
        restarts=4,              # restarts (its scripts: 3)
        latent_prior="none",     # z_norm off by default
        latent_weight=0.0,
        bound="none",
        generator_steps=2000,    # stage 2: per-image generator parameters, z fixed (its scripts: 5000)
        generator_lr=1e-3,       # gias_lr 1e-3
        labels="infer",          # labels given or inferred (iDLG for one image); LLG+ here
        label_method="llg+",
        tv=1e-6,                 # TV 1e-6 (its scripts)
    ),
}


def latent_preset(name: str, **overrides: object) -> GIALConfig:
    """A copy of GIA-L preset ``name`` with ``overrides`` applied (validated like any GIALConfig)."""
    return from_presets(LATENT_PRESETS, name, overrides, "GIA-L")


def _latent_spec(generator: nn.Module, info: dict[str, Any]) -> tuple[int, int]:
    """(nz, num_classes) of the generator; num_classes 0 = unconditional."""
    g_cfg = (info.get("config") or {}).get("generator") or {}
    nz = getattr(generator, "nz", None) or g_cfg.get("nz") or info.get("nz")
    if not nz:
        raise ValueError("cannot tell the generator's latent size: give it an ``nz`` attribute or info['nz']")
    num_classes = getattr(generator, "num_classes", None)
    if num_classes is None:
        num_classes = g_cfg.get("num_classes", info.get("num_classes", 0))
    return int(nz), int(num_classes or 0)


def _matched_layers(obs: Observation) -> int:
    return sum(1 for name, _ in obs.model.named_parameters() if name in obs.update)


def _label_notes(obs: Observation, labels: list[int], gen_classes: int,
                 trained_classes: Sequence[int] | None) -> list[str]:
    """Caveats of the labels against the generator's classes (a label outside a conditional generator: error)."""
    notes = []
    if gen_classes > 0:
        if gen_classes != obs.num_classes:
            notes.append(f"the generator has {gen_classes} classes, the victim's task {obs.num_classes}")
        if max(labels) >= gen_classes or min(labels) < 0:
            raise ValueError(f"labels {labels} are outside the conditional generator's {gen_classes} classes")
    if trained_classes is not None:
        outside = sorted({c for c in labels if c not in set(trained_classes)})
        if outside:
            notes.append(f"label(s) {outside} are not among the generator's training classes {list(trained_classes)}: "
                         "out-of-distribution for the generator")
    return notes


def reconstruct_latent(obs: Observation, cfg: GIALConfig, generator: nn.Module,
                       generator_info: dict[str, Any] | None = None, device: torch.device | str | None = None,
                       progress: bool = False) -> GIAResult:
    """Reconstruct the client's batch from ``obs`` by searching the latent space of ``generator``.

    ``generator``: ``G(z (N, nz), labels (N,) or None) -> images (N, C, H, W)`` in [-1, 1] (the
    DCGAN of ``fl_privacy.attacks.generators``; any module with ``nz`` and ``num_classes``
    attributes, or those in ``generator_info``). It is deep-copied, never modified.
    ``generator_info``: the info dict of ``load_generator`` (training classes, image shape), used
    for checks and notes. Returns a ``GIAResult`` like GIA-O: images of the best restart in the
    attack's (normalised) space on the CPU, the labels used, the final distance, the trace
    ((n, 1 + R): iteration, then the optimised loss per restart; stage-2 rows continue the
    iteration count and fill only the best restart's column), timings over both stages.
    """
    info = dict(generator_info or {})
    device = torch.device(device) if device is not None else default_device()
    nz, gen_classes = _latent_spec(generator, info)
    conditional = gen_classes > 0
    notes: list[str] = []
    trained_shape = info.get("image_shape")
    if trained_shape is not None and tuple(trained_shape) != tuple(obs.image_shape):
        raise ValueError(f"the generator makes images of shape {tuple(trained_shape)}, the victim's are "
                         f"{tuple(obs.image_shape)}")
    problem = GIAProblem(obs, cfg.gia_config(max(_matched_layers(obs), 1)), device)
    notes.extend(problem.notes)
    labels = resolve_labels(obs, problem.cfg, problem.batch_size, device)
    assert labels is not None  # "joint" is not a GIA-L option
    if problem.update_model == "known_schedule" and cfg.labels == "infer":
        notes.append("inferred labels are a multiset; their assignment to schedule positions is arbitrary")
    notes.extend(_label_notes(obs, labels.tolist(), gen_classes, info.get("classes")))  # one host read
    candidates = GeneratedCandidates(generator, obs, problem, cfg)
    candidates.check_shape(nz, labels[:1] if conditional else None)
    bar = None
    if progress:
        from fl_privacy.progress import progress_bar

        bar = progress_bar(total=cfg.iterations + cfg.generator_steps, desc="GIA-L", leave=False)
    search = search_latents(problem, cfg, candidates, labels, conditional, nz, bar)
    stage1_seconds = time.perf_counter() - search.start
    finals, best = pick_best_restart(search.distance, notes)
    images, objective, trace = search.x[best].detach(), float(finals[best]), search.trace
    if cfg.generator_steps > 0:
        z_best = search.z.view(cfg.restarts, problem.batch_size, nz)[best].detach()
        images, objective, trace = _with_stage_two(problem, cfg, candidates, z_best, labels, conditional, best,
                                                   (images, objective, trace), notes, bar)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - search.start
    if cfg.generator_steps > 0:
        notes.append(f"stage 1: {stage1_seconds:.2f} s ({stage1_seconds / cfg.iterations:.4g} s/it); stage 2: "
                     f"{seconds - stage1_seconds:.2f} s ({(seconds - stage1_seconds) / cfg.generator_steps:.4g} s/it)")
    total_its = cfg.iterations + cfg.generator_steps
    return GIAResult(
        images=images.cpu(), labels=labels.detach().cpu(), objective=objective,
        restart_objectives=[float(v) for v in finals], trace=trace, iterations=total_its, seconds=seconds,
        seconds_per_iteration=seconds / total_its, objective_used=problem.objective,
        update_model=problem.update_model, best_restart=best, soft_labels=None, notes=notes,
    )


def _with_stage_two(problem: GIAProblem, cfg: GIALConfig, candidates: GeneratedCandidates, z_best: torch.Tensor,
                    labels: torch.Tensor, conditional: bool, best: int,
                    stage_one: tuple[torch.Tensor, float, np.ndarray], notes: list[str],
                    bar: ProgressBar | None) -> tuple[torch.Tensor, float, np.ndarray]:
    """GIAS stage 2 from the best restart's ``z``: (images, distance, trace with stage 2's rows appended).

    Stage 2's image replaces stage 1's unless its final gradient distance is worse; the trace rows of
    stage 2 continue the iteration count and fill only the best restart's column."""
    images, objective, trace = stage_one
    images2, objective2, trace2 = fit_generator(problem, cfg, candidates, z_best, labels if conditional else None,
                                                labels, bar)
    keep = objective2 <= objective or not math.isfinite(objective)
    notes.append(f"GIAS stage 2: gradient distance {objective:.6g} after stage 1 (z), {objective2:.6g} after "
                 f"{cfg.generator_steps} steps on per-image generator copies; returned: stage "
                 f"{2 if keep else 1}")
    if keep:
        images, objective = images2, objective2
    rows = np.full((trace2.shape[0], 1 + cfg.restarts), np.nan)
    rows[:, 0] = trace2[:, 0] + cfg.iterations
    rows[:, 1 + best] = trace2[:, 1]
    return images, objective, np.vstack([trace, rows])
