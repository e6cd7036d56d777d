"""Score one reconstruction against the victim's ground truth and save its picture and objective trace.

The evaluator's half of an attack: the attack never sees ``VictimTruth``. The
reconstruction is matched to the originals (optimal assignment), scored with
the catalog's metrics, and drawn next to them under ``attacks/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fl_privacy.attacks.cocktail_party import matched_correlation
from fl_privacy.attacks.threat import Observation
from fl_privacy.audit.observe import VictimTruth
from fl_privacy.federation.recording import RecordedUpdate
from fl_privacy.metrics import label_accuracy, score_reconstruction
from fl_privacy.metrics.catalog import VICTIM_SCORES
from fl_privacy.reporting.images import save_comparison_grid, save_trace
from fl_privacy.reporting.records import AttackOutcome


def score_and_save(result: Any, obs: Observation, truth: VictimTruth, recorded: RecordedUpdate, attack: str,
                   out_dir: Path, lpips_metric: Any) -> AttackOutcome:
    """Score one reconstruction (``result`` of any attack) against ground truth; save its picture and trace."""
    recon = obs.to_pixels(result.images.detach().cpu())
    originals = obs.to_pixels(truth.images.cpu())
    scores = score_reconstruction(recon, originals, lpips=lpips_metric)
    # labels come out as a multiset (inferred counts, or given): compare without the pixel matching
    scores["label_acc"] = (label_accuracy(result.labels.cpu(), truth.labels.cpu(), ordered=False)
                           if result.labels.numel() else None)
    perm = np.asarray(scores["perm"])
    who = "aggregate" if recorded.partition_id < 0 else f"client_{recorded.partition_id:04d}"
    stem = f"round_{recorded.server_round:03d}_{who}"
    captions = [f"{p:.1f} dB" for p in scores["psnr"]]
    grid = save_comparison_grid(originals, recon[perm], out_dir / f"{stem}.png", captions)
    trace = save_trace(result.trace, out_dir / f"{stem}_trace.png") if len(result.trace) else None
    return AttackOutcome(
        attack=attack, images=len(truth.indices), scores={k: scores.get(k) for k in VICTIM_SCORES},
        lpips="unavailable" if lpips_metric is None else "alex",
        psnr=scores["psnr"], ssim=scores["ssim"], ssim_window=scores["ssim_window"],
        labels_true=truth.labels.tolist(), labels_used=result.labels.cpu().tolist(),
        objective=result.objective, iterations=result.iterations,
        iterations_used=getattr(result, "iterations_used", 0) or result.iterations,
        seconds_per_iteration=result.seconds_per_iteration, restarts=len(result.restart_objectives),
        notes=list(getattr(result, "notes", []) or []), corr_mean=matched_mean_correlation(recon, originals),
        aggregated_clients=obs.aggregated_clients, grid=str(grid.relative_to(out_dir.parent)),
        trace=None if trace is None else str(trace.relative_to(out_dir.parent)),
    )


def matched_mean_correlation(recon: torch.Tensor, originals: torch.Tensor) -> float:
    """Mean |Pearson correlation| after optimal matching: blind to sign, scale and offset (the Cocktail Party
    Attack's evaluation; for other attacks a second, scale-free view of the same reconstructions)."""
    return float(np.mean(matched_correlation(recon, originals)[0]))
