"""Multi-round update MIA on a run's recorded updates: FedMIA and trajectories vs the one-update gradient MIA.

The run must have recorded, in the chosen rounds, the updates of the target clients
and of other clients (FedMIA's non-member references): ``attack.rounds`` holds the
rounds and ``attack.victim_ids`` the clients (only these are kept: bounded memory).
One round at a time is loaded and reduced to ``clients x candidates`` measurements.

Members of a target: its samples (the evaluator's ground truth of its recorded
rounds); non-members: one seeded draw of test-split samples shared by every target
and method (paired). TPR at an FPR ``f`` is reported only with at least ``1 / f``
non-members (one false positive allowed): fewer than 1000 leave TPR at 0.1% FPR
unmeasured (``None`` and a note), never a number read off an empty corner of the ROC.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fl_privacy.attacks.mia import plot_roc, roc_metrics
from fl_privacy.attacks.mia.multiround import fedmia_scores, round_measurements, trajectory_scores
from fl_privacy.data import ImageData
from fl_privacy.federation.recording import RecordedUpdate
from fl_privacy.metrics.catalog import MIA_SUMMARY, MULTIROUND_MIA_METHODS, MULTIROUND_MIA_SUMMARY
from fl_privacy.reporting import RunDirectory

TITLES = {"fedmia": "FedMIA-II (cosine)", "fedmia_loss": "FedMIA-I (loss)", "gradient_trajectory": "Avg-Cosine",
          "loss_trajectory": "Loss-Series", "gradient_update": "Grad-Cosine (one update)"}
"""The methods as Zhu et al. (2024) name them."""
FPR_OF = {"tpr_at_1pct_fpr": 0.01, "tpr_at_0.1pct_fpr": 0.001}

Measured = list[tuple[list[int], dict[str, np.ndarray]]]
"""Per scored round: the recorded client ids and their ``{"cosine": (K, M), "loss": (K, M)}``."""


def _members(run: RunDirectory, rounds: list[int], client: int) -> np.ndarray:
    """The target's samples over its recorded rounds, from the evaluator's ground truth."""
    indices: set[int] = set()
    for r in rounds:
        truth = json.loads(run.ground_truth_path(r, client).read_text())
        if truth.get("split", "train") != "train":
            raise ValueError(f"round {r}: the target's samples come from the {truth['split']} split, not train")
        indices.update(int(i) for step in truth["steps"] for i in step)
    return np.array(sorted(indices))


def _measure(run: RunDirectory, rounds: list[int], model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
             device: str | torch.device) -> Measured:
    """Every recorded client's measurements of every candidate, one round's updates in memory at a time."""
    recorded, names = run.recorded_clients(), {n for n, _ in model.named_parameters()}
    measured: Measured = []
    for r in rounds:
        updates = [RecordedUpdate.load(run.update_path(r, c)) for c in recorded[r]]
        if any(u.kind != "delta" for u in updates):
            raise ValueError("the multi-round MIA reads FedAvg updates (training.algorithm=fedavg)")
        state = updates[0].global_state
        params = {k: v for k, v in state.items() if k in names}
        buffers = {k: v for k, v in state.items() if k not in names}
        measured.append((list(recorded[r]), round_measurements(model, params, buffers, [u.update for u in updates],
                                                                x, y, device)))
        del updates
    return measured


def _method_scores(measured: Measured, target: int, methods: Sequence[str]) -> dict[str, np.ndarray]:
    """Each method's membership score of every candidate for ``target`` (higher = member)."""
    series = {key: np.stack([m[key][ids.index(target)] for ids, m in measured]) for key in ("cosine", "loss")}

    def others(key: str) -> np.ndarray:
        """The other clients recorded in *every* scored round (rounds may record different clients)."""
        common = sorted(set.intersection(*(set(ids) for ids, _ in measured)) - {target})
        if len(common) < 2:
            raise ValueError(f"FedMIA compares client {target} with at least two other clients recorded in every "
                             f"scored round, found {common}: record them with attack.victim_ids")
        return np.stack([m[key][[ids.index(c) for c in common]] for ids, m in measured])

    make = {"fedmia": lambda: fedmia_scores(series["cosine"], others("cosine"), outlier=True),
            "fedmia_loss": lambda: fedmia_scores(series["loss"], others("loss")),
            "gradient_trajectory": lambda: trajectory_scores(series["cosine"]),
            "loss_trajectory": lambda: trajectory_scores(series["loss"]),
            "gradient_update": lambda: series["cosine"][-1]}
    return {method: make[method]() for method in methods}


def _summary(metrics: dict[str, Any], nonmembers: int) -> dict[str, float | None]:
    """AUC and the TPRs that ``nonmembers`` can measure (else None)."""
    return {k: (float(metrics[k]) if nonmembers * FPR_OF.get(k, 1.0) >= 1 else None) for k in MIA_SUMMARY}


def _rounds_of(run: RunDirectory, rounds: Sequence[int] | None, targets: Sequence[int], fedmia: bool) -> list[int]:
    """The chosen rounds that recorded every target (and, for FedMIA, at least two other clients)."""
    recorded = run.recorded_clients()
    chosen = sorted(recorded) if rounds is None else sorted(rounds)
    least = 3 if fedmia else 1
    usable = [r for r in chosen if all(t in recorded.get(r, []) for t in targets) and len(recorded.get(r, [])) >= least]
    if not usable:
        raise ValueError(f"no round of {run.root} recorded clients {list(targets)}" + (" and at least two others" if
                         fedmia else "") + ": record them with attack.rounds=[...] and attack.victim_ids=[...]")
    return usable


def mean_metrics(per_target: list[dict[str, Any]], methods: Sequence[str]) -> dict[str, float | None]:
    """The run metrics (``mia_auc_fedmia``, ...): each summary number's mean over the targets (None if unmeasured)."""
    out: dict[str, float | None] = {}
    for method in methods:
        for key, prefix in MULTIROUND_MIA_SUMMARY.items():
            values = [t["scores"][method][key] for t in per_target]
            out[f"{prefix}{method}"] = None if None in values else float(np.mean(values))
    return out


def multiround_mia(root: str | Path, model: torch.nn.Module, train: ImageData, test: ImageData,
                   targets: Sequence[int] = (0,), rounds: Sequence[int] | None = None,
                   methods: Sequence[str] = MULTIROUND_MIA_METHODS, nonmembers: int = 1000, normalize: bool = True,
                   seed: int = 0, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Each method's ROC for each target's members vs ``nonmembers`` test samples; metrics = mean over targets."""
    root, targets = Path(root), [int(t) for t in targets]
    run = RunDirectory(root)
    used = _rounds_of(run, rounds, targets, any(m.startswith("fedmia") for m in methods))
    if nonmembers > len(test):
        raise ValueError(f"asked for {nonmembers} non-members but the test split has {len(test)} samples")
    members = {t: _members(run, used, t) for t in targets}
    pool = np.unique(np.concatenate(list(members.values())))
    outsiders = np.sort(np.random.default_rng([seed, 29]).permutation(len(test))[:nonmembers])
    xm, ym = train.batch(pool, normalize=normalize)
    xn, yn = test.batch(outsiders, normalize=normalize)
    measured = _measure(run, used, model, torch.cat([xm, xn]), torch.cat([ym, yn]), device)
    (root / "mia").mkdir(exist_ok=True)
    per_target = []
    for t in targets:
        rows = np.r_[np.searchsorted(pool, members[t]), len(pool) + np.arange(len(outsiders))]
        is_member = np.r_[np.ones(len(members[t]), bool), np.zeros(len(outsiders), bool)]
        metrics = {m: roc_metrics(s[rows], is_member) for m, s in _method_scores(measured, t, methods).items()}
        plot = plot_roc({TITLES[m]: v for m, v in metrics.items()}, root / "mia" / f"multiround_client_{t:04d}_roc.png",
                        title=f"client {t}, rounds {used[0]}..{used[-1]} ({len(used)} recorded)")
        per_target.append({"target": t, "members": len(members[t]), "roc": str(Path(plot).relative_to(root)),
                           "scores": {m: _summary(v, len(outsiders)) for m, v in metrics.items()}})
    notes = [f"only {len(outsiders)} non-members: TPR at {100 * f:g}% FPR is not measurable (needs >= {round(1 / f)})"
             for f in FPR_OF.values() if len(outsiders) * f < 1]
    return {"targets": targets, "rounds": used, "methods": list(methods), "nonmembers": len(outsiders),
            "per_target": per_target, "metrics": mean_metrics(per_target, methods), "notes": notes}


def summary_lines(block: dict[str, Any]) -> list[str]:
    """The multi-round MIA in a run's summary: one line per method, then the notes."""
    def number(value: float | None) -> str:
        return "not measurable" if value is None else f"{value:.3f}"

    members = ", ".join(f"client {t['target']}: {t['members']}" for t in block["per_target"])
    head = (f"- **multi-round update MIA** (rounds {block['rounds']}; members {members}; "
            f"{block['nonmembers']} test non-members; ROC on log axes in mia/multiround_client_*_roc.png):")
    lines = [head]
    metrics = block["metrics"]
    for method in block["methods"]:
        auc, tpr1, tpr01 = (metrics[f"{prefix}{method}"] for prefix in MULTIROUND_MIA_SUMMARY.values())
        lines.append(f"  - {TITLES[method]}: AUC {number(auc)}, TPR at 1% FPR {number(tpr1)}, "
                     f"TPR at 0.1% FPR {number(tpr01)}")
    return lines + [f"  - note: {note}" for note in block["notes"]]
