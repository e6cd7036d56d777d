"""GIA-O: one optimisation engine for gradient inversion in pixel space.

The attacker optimises dummy images (and, for DLG, dummy soft labels) so that
the update they would produce matches the observed one (SoK "Gradient Leakage
in FL", Du et al. 2024, §2.3, Definition 1). Pluggable parts: the distance
(``objectives``), the image priors (``priors``), how a candidate update is
produced (one gradient for FedSGD; the unrolled local SGD for FedAvg with a
known schedule, ``unroll``; one sign-corrected gradient for FedAvg with an
unknown schedule), the optimiser, its lr schedule, and the labels (known,
inferred, or optimised jointly). ``presets`` holds the reference attacks.

Design:

* The ONLY input is an ``Observation``; ground truth never enters.
* Restarts are batched: all ``R`` restarts go through the model in one pass
  (``problem.GIAProblem``), then one batched distance. The attack loss is the
  sum over restarts of independent terms, so one backward gives every restart
  its own gradient. Victims of one global model batch the same way.
* BatchNorm: the engine works on a private deep copy of ``obs.model``. In
  train mode its BN layers are made stateless
  (``torch.func.replace_all_batch_norm_modules_``): each restart normalises
  with its own batch statistics, as the client did, and nothing is updated in
  place. In eval mode BN uses the received running statistics (functional
  buffers), which are only read.
* No host syncs in the hot loop (Adam, ``optimise``): the per-restart objective
  is written into a device tensor every ``log_every`` iterations and copied to
  the host once at the end; the progress bar reads it every 100 iterations only.
  L-BFGS (``torch.optim.LBFGS``) reads the loss on the host by its design.

Module map: ``options`` (``GIAConfig``), ``problem_setup`` and ``problem``
(``GIAProblem``), ``optimise`` (the loop), ``result`` (``GIAResult``), here the
start of the candidates and the per-victim results.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from fl_privacy.attacks.gia.labels import resolve_labels
from fl_privacy.attacks.gia.optimise import Candidates, LoopOutcome, optimise, uses_cuda_graph
from fl_privacy.attacks.gia.options import GIAConfig, from_presets  # noqa: F401  (``presets`` imports it from here)
from fl_privacy.attacks.gia.precision import attack_precision, precision_note
from fl_privacy.attacks.gia.problem import GIAProblem
from fl_privacy.attacks.gia.problem_setup import default_device
from fl_privacy.attacks.gia.result import GIAResult, pick_best_restart
from fl_privacy.attacks.gia.tracing import trace_table
from fl_privacy.attacks.threat import Observation

__all__ = ["initial_images", "reconstruct", "reconstruct_victims", "start_candidates"]


def reconstruct(obs: Observation, cfg: GIAConfig, device: torch.device | str | None = None,
                progress: bool = False) -> GIAResult:
    """Reconstruct the client's batch from ``obs`` with ``cfg``; return the best restart."""
    return reconstruct_victims([obs], cfg, device, progress)[0]


def reconstruct_victims(observations: Sequence[Observation], cfg: GIAConfig,
                        device: torch.device | str | None = None, progress: bool = False) -> list[GIAResult]:
    """Attack several victims of one global model at once; one result per victim, in order.

    Adam: all restarts of all victims run as one batch through the model (Adam is element-wise and
    the loss a sum of independent terms, one per restart and victim, so every one of them gets the
    result it would get alone). L-BFGS: its line search and curvature history would couple problems
    stacked into one (one diverging restart drags the others), so each restart of each victim is its
    own L-BFGS run (seed ``cfg.seed + r``), one after another.
    """
    if not observations:
        return []
    if cfg.optimizer == "lbfgs" and (cfg.restarts > 1 or len(observations) > 1):
        return [_independent_restarts(obs, cfg, device, progress) for obs in observations]
    device = torch.device(device) if device is not None else default_device()
    problem = GIAProblem(observations, cfg, device)
    lo, hi = observations[0].pixel_box(device)
    box = (lo.to(problem.dtype).unsqueeze(0), hi.to(problem.dtype).unsqueeze(0))  # (1, 1, C, 1, 1)
    cand = start_candidates(observations, cfg, problem, box)
    with attack_precision(cfg.precision, device):
        run = optimise(problem, cand, cfg, box, progress)
    with torch.no_grad(), attack_precision("float32", device):  # scored in float32, whatever the attack ran in
        _, distance = problem.evaluate(run.final[0], cand.labels(run.final[1] if cand.logits is not None else None))
    seconds = time.perf_counter() - run.start
    notes = _run_notes(problem, cfg, len(observations))
    if cfg.early_stop_window and run.steps < cfg.iterations:
        notes.append(f"early stopping: all restarts stopped by iteration {run.steps} of {cfg.iterations}")
    return _victim_results(problem, cfg, cand, run, distance, seconds, notes)


def start_candidates(observations: Sequence[Observation], cfg: GIAConfig, problem: GIAProblem,
                     box: tuple[torch.Tensor, torch.Tensor]) -> Candidates:
    """Initial images (and label logits for "joint") of every restart of every victim, and the labels.

    Each victim starts exactly where it would start alone (its own generator seeded with ``cfg.seed``)."""
    R, B, device = cfg.restarts, problem.batch_size, problem.device
    shape = (R, B, *observations[0].image_shape)
    x_parts, logit_parts, hard_parts = [], [], []
    for victim in observations:
        gen = torch.Generator().manual_seed(cfg.seed)
        x_parts.append(initial_images(cfg, shape, (box[0][0], box[1][0]), gen, problem.dtype))
        hard_parts.append(resolve_labels(victim, cfg, B, device))
        if hard_parts[-1] is None:
            logit_parts.append(torch.randn((R, B, observations[0].num_classes), generator=gen, dtype=problem.dtype))
    x = torch.cat(x_parts).to(device).requires_grad_(True)  # (V * R, B, C, H, W), victim-major
    if hard_parts[0] is not None:
        return Candidates(x=x, hard=torch.stack(hard_parts).repeat_interleave(R, 0), logits=None)  # (V * R, B)
    return Candidates(x=x, hard=None, logits=torch.cat(logit_parts).to(device).requires_grad_(True))


def initial_images(cfg: GIAConfig, shape: tuple[int, ...], box: tuple[torch.Tensor, torch.Tensor],
                   gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Drawn on the CPU from the seeded generator (same start on every device)."""
    if cfg.init == "randn":
        return torch.randn(shape, generator=gen, dtype=dtype)
    if cfg.init == "uniform":
        lo, hi = (b.cpu().to(dtype).unsqueeze(0) for b in box)
        return lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=dtype)
    return torch.zeros(shape, dtype=dtype)


def _run_notes(problem: GIAProblem, cfg: GIAConfig, victims: int) -> list[str]:
    """The caveats every victim's result carries."""
    notes = list(problem.notes)
    if problem.update_model == "known_schedule" and cfg.labels == "infer":
        notes.append("inferred labels are a multiset; their assignment to schedule positions is arbitrary")
    if victims > 1:
        notes.append(f"optimised together with {victims - 1} other victim(s) of the same global model")
    note = precision_note(cfg.precision, problem.device)
    if note:
        notes.append(note)
    if cfg.cuda_graph and not uses_cuda_graph(cfg, problem.device):
        notes.append("cuda_graph needs Adam on a CUDA device: ran without a CUDA graph")
    return notes


def _victim_results(problem: GIAProblem, cfg: GIAConfig, cand: Candidates, run: LoopOutcome,
                    distance: torch.Tensor, seconds: float, notes: list[str]) -> list[GIAResult]:
    """Per victim: its best restart (by final gradient distance), its labels and its columns of the trace."""
    R = cfg.restarts
    used = run.used.cpu().tolist()
    trace_np = trace_table(run.logged, run.trace)
    results = []
    for v in range(cand.x.shape[0] // R):
        rows = slice(v * R, (v + 1) * R)
        victim_notes = list(notes)
        finals, best = pick_best_restart(distance[rows], victim_notes)
        row = v * R + best
        soft = None
        if cand.logits is None:
            labels = cand.hard[row].detach().cpu()
        else:
            soft = torch.softmax(run.final[1][row].detach(), dim=-1).cpu()
            labels = soft.argmax(dim=-1)
        results.append(GIAResult(
            images=run.final[0][row].detach().cpu(), labels=labels, objective=float(finals[best]),
            restart_objectives=[float(f) for f in finals],
            trace=np.column_stack([trace_np[:, 0], trace_np[:, 1 + v * R:1 + (v + 1) * R]]),
            iterations=cfg.iterations, seconds=seconds, seconds_per_iteration=seconds / max(run.steps, 1),
            objective_used=problem.objective, update_model=problem.update_model, best_restart=best,
            soft_labels=soft, notes=victim_notes, iterations_used=int(used[row]),
        ))
    return results


def _independent_restarts(obs: Observation, cfg: GIAConfig, device: torch.device | str | None,
                          progress: bool) -> GIAResult:
    """R single-restart runs (different seeds); the best by final gradient distance wins."""
    runs = [reconstruct(obs, replace(cfg, restarts=1, seed=cfg.seed + r), device, progress)
            for r in range(cfg.restarts)]
    finals = [run.objective for run in runs]
    best = int(np.argmin(np.nan_to_num(np.asarray(finals, dtype=np.float64), nan=np.inf)))
    seconds = sum(run.seconds for run in runs)
    trace = np.column_stack([runs[0].trace[:, 0]] + [run.trace[:, 1] for run in runs])
    notes = [n for run in runs for n in run.notes]
    return replace(runs[best], restart_objectives=finals, trace=trace, seconds=seconds,
                   seconds_per_iteration=seconds / cfg.iterations, best_restart=best,
                   notes=sorted(set(notes)) + ["L-BFGS restarts ran one after another (independent line searches)"])
