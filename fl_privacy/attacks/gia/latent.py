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

import copy
import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from fl_privacy.attacks.generators.train import to_attack_space
from fl_privacy.attacks.gia.engine import (
    GIAConfig,
    GIAProblem,
    GIAResult,
    _log_step,
    _logged_iterations,
    _resolve_labels,
    _scheduler,
    check_choices,
    default_device,
    from_presets,
    pick_best_restart,
)
from fl_privacy.attacks.gia.labels import LABEL_METHODS
from fl_privacy.attacks.threat import Observation

__all__ = ["LATENT_PRESETS", "GIALConfig", "latent_preset", "latent_prior", "reconstruct_latent"]


@dataclass
class GIALConfig:
    """Settings of one GIA-L attack. ``LATENT_PRESETS`` holds the reference attacks' values."""

    objective: Literal["l2", "cosine", "scaled_l2"] = "cosine"
    """Gradient distance, as GIA-O's ``GIAConfig.objective``: GIAS uses 1 - cosine ("sim" in its code), GGL
    the squared L2 distance per layer (``layer_mean``)."""
    layer_mean: bool = False
    """Divide the distance by the number of matched parameter tensors (GGL: the per-layer squared L2 distances
    are averaged). Changes the balance against the latent prior, not the best restart."""
    iterations: int = 2000
    """Adam steps on the latents (stage 1). GGL's Adam reconstructor: 2500; GIAS: 4800 by default in its
    ``rec_mult.py``, 500 in its ImageNet-32 script."""
    lr: float = 0.1
    """Adam step size on the latents: 0.1 (GGL's Adam reconstructor, GIAS's default; its scripts 3e-2)."""
    lr_schedule: Literal["none", "steps", "cosine"] = "steps"
    """As GIA-O, for both stages: "steps" = x0.1 at 3/8, 5/8, 7/8 (GIAS's ``lr_decay``), "none" (GGL: its
    MultiStepLR is commented out), "cosine"."""
    restarts: int = 4
    """Independent latent initialisations optimised together (batched); best by final distance (GIAS: 3-4;
    GGL: one start per run)."""
    latent_prior: Literal["none", "kl", "norm"] = "kl"
    """Regulariser on the latent ``z`` fed to the generator (after ``bound``), per restart:
    "kl" - GGL: KL divergence between N(mean(z_b), var(z_b)) fitted to the entries of each latent vector and
    N(0, 1), ``0.5 (var + mean^2 - 1 - log var)``, averaged over the batch (GGL has batch size 1);
    "norm" - GIAS's ``z_norm``: the L2 norm of the restart's latents (B, nz); "none"."""
    latent_weight: float = 0.1
    """Weight of ``latent_prior`` (GGL: 0.1 on the KL term; GIAS: ``z_norm`` 0 = off by default)."""
    bound: Literal["none", "tanh"] = "none"
    """"tanh": optimise ``w`` and feed ``z = tanh(w)`` in (-1, 1) (GGL's ``use_tanh``, used there instead of the
    KL term); "none": ``z = w``."""
    generator_steps: int = 0
    """GIAS stage 2: Adam steps on the generator's parameters (one copy per image) with ``z`` fixed; 0 = off
    (GGL, GIAS's "GIAS-z only" ablation). GIAS's ImageNet-32 script: 5000."""
    generator_lr: float = 1e-3
    """Adam step size of stage 2 (GIAS scripts: 1e-3)."""
    labels: Literal["known", "infer"] = "infer"
    """Labels of the victim's batch (and the generator's condition): given (needs ``attack.threat.labels``)
    or inferred from the update with ``label_method``; GGL and GIAS infer (iDLG rule for one image)."""
    label_method: str = "llg+"
    """As GIA-O's ``GIAConfig.label_method``: "idlg" (one image), "yin", "llg", "llg+"."""
    schedule: Literal["auto", "known", "unknown"] = "auto"
    """FedAvg updates, as GIA-O: unroll the known batch schedule or match one sign-corrected gradient."""
    model_mode: Literal["train", "eval"] = "train"
    """Mode of the attacker's copy of the victim model, as GIA-O (the generator is always in eval mode)."""
    tv: float = 0.0
    """Total-variation weight on the generated images (GIAS scripts: 1e-6; GGL: none)."""
    boxed: bool = True
    """Clamp the generated images to the pixel box. A Tanh-output generator is inside the box by construction
    (also in stage 2, whatever the parameters), so this only matters for unbounded generators."""
    seed: int = 0
    """Seed of the initial latents (drawn on the CPU: the same start on every device)."""
    log_every: int = 0
    """Trace interval in iterations (both stages); 0 = automatic (about 100 points per stage)."""

    def __post_init__(self) -> None:
        check_choices(self)
        if self.label_method not in LABEL_METHODS:
            raise ValueError(f"GIALConfig.label_method must be one of {list(LABEL_METHODS)}, got {self.label_method!r}")
        for name in ("lr", "generator_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"GIALConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("tv", "latent_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"GIALConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        for name, minimum in (("iterations", 1), ("restarts", 1), ("generator_steps", 0), ("log_every", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"GIALConfig.{name} must be an integer >= {minimum}, got {value!r}")
        if not isinstance(self.layer_mean, bool) or not isinstance(self.boxed, bool):
            raise TypeError("GIALConfig.layer_mean and GIALConfig.boxed must be booleans")

    def gia_config(self, n_layers: int = 1, iterations: int | None = None, lr: float | None = None) -> GIAConfig:
        """The GIA-O settings of the shared gradient-matching part (``GIAProblem``, labels, lr schedule)."""
        return GIAConfig(
            objective=self.objective, optimizer="adam", signed=False, lr=lr if lr is not None else self.lr,
            iterations=iterations if iterations is not None else self.iterations, lr_schedule=self.lr_schedule,
            boxed=self.boxed, tv=self.tv, l2=0.0, bn=0.0, restarts=self.restarts, labels=self.labels,
            label_method=self.label_method, schedule=self.schedule, model_mode=self.model_mode, seed=self.seed,
            objective_scale=1.0 / n_layers if self.layer_mean else 1.0, log_every=self.log_every,
        )


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


# ---------------------------------------------------------------------- latent priors
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


# ---------------------------------------------------------------------- the attack
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

    n_layers = max(_matched_layers(obs), 1)
    gcfg = cfg.gia_config(n_layers)
    problem = GIAProblem(obs, gcfg, device)
    notes.extend(problem.notes)
    R, B = cfg.restarts, problem.batch_size
    labels = _resolve_labels(obs, gcfg, B, device)
    assert labels is not None  # "joint" is not a GIA-L option
    if problem.update_model == "known_schedule" and cfg.labels == "infer":
        notes.append("inferred labels are a multiset; their assignment to schedule positions is arbitrary")
    label_list = labels.tolist()  # one host read, before the loop
    if conditional:
        if gen_classes != obs.num_classes:
            notes.append(f"the generator has {gen_classes} classes, the victim's task {obs.num_classes}")
        if max(label_list) >= gen_classes or min(label_list) < 0:
            raise ValueError(f"labels {label_list} are outside the conditional generator's {gen_classes} classes")
    trained_classes = info.get("classes")
    if trained_classes is not None:
        outside = sorted({c for c in label_list if c not in set(trained_classes)})
        if outside:
            notes.append(f"label(s) {outside} are not among the generator's training classes {list(trained_classes)}: "
                         "out-of-distribution for the generator")

    G = copy.deepcopy(generator).to(device).eval()
    for p in G.parameters():
        p.requires_grad_(False)
    g_dtype = next((p.dtype for p in G.parameters()), torch.float32)
    mean = torch.tensor(obs.mean, dtype=g_dtype, device=device)
    std = torch.tensor(obs.std, dtype=g_dtype, device=device)
    lo, hi = obs.pixel_box(device)
    lo, hi = lo.to(problem.dtype).unsqueeze(0), hi.to(problem.dtype).unsqueeze(0)  # (1, 1, C, 1, 1)
    shape = tuple(obs.image_shape)

    with torch.no_grad():  # shape check with one latent
        probe = G(torch.zeros(1, nz, dtype=g_dtype, device=device), labels[:1] if conditional else None)
    if tuple(probe.shape[1:]) != shape:
        raise ValueError(f"the generator makes images of shape {tuple(probe.shape[1:])}, the victim's are {shape}")

    def to_candidates(images: torch.Tensor, restarts: int) -> torch.Tensor:
        x = to_attack_space(images, mean, std, obs.normalized).reshape(restarts, B, *shape).to(problem.dtype)
        return torch.clamp(x, min=lo, max=hi) if cfg.boxed else x

    def latent(w: torch.Tensor) -> torch.Tensor:
        return torch.tanh(w) if cfg.bound == "tanh" else w

    gen = torch.Generator().manual_seed(cfg.seed)
    w = torch.randn((R * B, nz), generator=gen, dtype=g_dtype).to(device).requires_grad_(True)
    y_gen = labels.repeat(R) if conditional else None  # row r*B + b <-> restart r, image b
    opt = torch.optim.Adam([w], lr=cfg.lr)
    scheduler = _scheduler(opt, gcfg)
    logged = _logged_iterations(gcfg)
    slot = {it: j for j, it in enumerate(logged)}
    trace = torch.full((len(logged), R), float("nan"), device=device)
    use_prior = cfg.latent_prior != "none" and cfg.latent_weight > 0

    bar = None
    total_its = cfg.iterations + cfg.generator_steps
    if progress:
        from fl_privacy.progress import progress_bar

        bar = progress_bar(total=total_its, desc="GIA-L", leave=False)

    start = time.perf_counter()
    for it in range(cfg.iterations):
        opt.zero_grad(set_to_none=True)
        z = latent(w)
        total, _ = problem.evaluate(to_candidates(G(z, y_gen), R), labels)
        if use_prior:
            total = total + cfg.latent_weight * latent_prior(z.view(R, B, nz), cfg.latent_prior).to(total.dtype)
        total.sum().backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
        _log_step(it, total.detach(), trace, slot, bar, cfg.iterations)

    with torch.no_grad():
        z = latent(w)
        x = to_candidates(G(z, y_gen), R)
        _, distance = problem.evaluate(x, labels)
    stage1_seconds = time.perf_counter() - start
    finals, best = pick_best_restart(distance, notes)
    images = x[best].detach()
    objective = float(finals[best])
    trace_np = np.column_stack([np.asarray(logged, dtype=np.float64), trace.cpu().double().numpy()])

    if cfg.generator_steps > 0:
        z_best = z.view(R, B, nz)[best].detach()
        images2, objective2, trace2 = _stage_two(problem, cfg, G, z_best, labels if conditional else None, labels,
                                                 to_candidates, bar)
        keep = objective2 <= objective or not math.isfinite(objective)
        notes.append(f"GIAS stage 2: gradient distance {objective:.6g} after stage 1 (z), {objective2:.6g} after "
                     f"{cfg.generator_steps} steps on per-image generator copies; returned: stage "
                     f"{2 if keep else 1}")
        if keep:
            images, objective = images2, objective2
        rows = np.full((trace2.shape[0], 1 + R), np.nan)
        rows[:, 0] = trace2[:, 0] + cfg.iterations
        rows[:, 1 + best] = trace2[:, 1]
        trace_np = np.vstack([trace_np, rows])
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    if cfg.generator_steps > 0:
        notes.append(f"stage 1: {stage1_seconds:.2f} s ({stage1_seconds / cfg.iterations:.4g} s/it); stage 2: "
                     f"{seconds - stage1_seconds:.2f} s ({(seconds - stage1_seconds) / cfg.generator_steps:.4g} s/it)")
    return GIAResult(
        images=images.cpu(),
        labels=labels.detach().cpu(),
        objective=objective,
        restart_objectives=[float(v) for v in finals],
        trace=trace_np,
        iterations=total_its,
        seconds=seconds,
        seconds_per_iteration=seconds / total_its,
        objective_used=problem.objective,
        update_model=problem.update_model,
        best_restart=best,
        soft_labels=None,
        notes=notes,
    )


def _stage_two(problem: GIAProblem, cfg: GIALConfig, G: nn.Module, z: torch.Tensor, condition: torch.Tensor | None,
               labels: torch.Tensor, to_candidates, bar) -> tuple[torch.Tensor, float, np.ndarray]:
    """GIAS stage 2: optimise one copy of the generator's parameters per image, ``z`` (B, nz) fixed.

    The B copies are stacked (``stack_module_state``) and run in one ``vmap``ped call; buffers
    (BN running statistics) are shared and only read (eval mode). Returns the images (B, C, H, W)
    in the attack space, the final gradient distance and the trace ((n, 2): step, loss).
    """
    B = z.shape[0]
    copies = [G] * B  # stack_module_state copies the tensors; the module itself is only a template
    params, _ = stack_module_state(copies)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    buffers = dict(G.named_buffers())

    if condition is None:
        def one(p: dict, z1: torch.Tensor) -> torch.Tensor:
            return functional_call(G, (p, buffers), (z1[None],))[0]
        generate = torch.func.vmap(one, in_dims=(0, 0))
        args: tuple = (z,)
    else:
        def one_c(p: dict, z1: torch.Tensor, y1: torch.Tensor) -> torch.Tensor:
            return functional_call(G, (p, buffers), (z1[None], y1[None]))[0]
        generate = torch.func.vmap(one_c, in_dims=(0, 0, 0))
        args = (z, condition)

    scfg = cfg.gia_config(iterations=cfg.generator_steps, lr=cfg.generator_lr)
    opt = torch.optim.Adam(list(params.values()), lr=cfg.generator_lr)
    scheduler = _scheduler(opt, scfg)
    logged = _logged_iterations(scfg)
    slot = {it: j for j, it in enumerate(logged)}
    trace = torch.full((len(logged),), float("nan"), device=z.device)
    for it in range(cfg.generator_steps):
        opt.zero_grad(set_to_none=True)
        total, _ = problem.evaluate(to_candidates(generate(params, *args), 1), labels)
        total.sum().backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
        _log_step(it, total.detach()[0], trace, slot, bar, cfg.generator_steps)
    with torch.no_grad():
        x = to_candidates(generate(params, *args), 1)
        _, distance = problem.evaluate(x, labels)
    trace_np = np.column_stack([np.asarray(logged, dtype=np.float64), trace.cpu().double().numpy()])
    return x[0].detach(), float(distance[0]), trace_np
