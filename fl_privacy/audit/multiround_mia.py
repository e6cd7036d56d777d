"""Multi-round update MIA on a finished federation run: FedMIA and trajectories vs the one-update gradient MIA.

The run must have recorded the updates of the target client and of the other
clients (the non-member references FedMIA needs) in the chosen rounds:
``attack.name: none``, ``attack.rounds: [...]``, ``attack.victim_ids: [all clients]``
(only these rounds and clients are kept: bounded memory). One round at a time is
loaded and reduced to ``clients x candidates`` measurements.

Members: the target client's samples (from the evaluator's ground truth of its
recorded rounds); non-members: a seeded draw of test-split samples, enough of them
to measure TPR at 0.1% FPR (>= 1000 gives at least one false positive per 0.1%).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fl_privacy.attacks.mia import plot_roc, roc_metrics
from fl_privacy.attacks.mia.multiround import fedmia_scores, round_measurements, trajectory_scores
from fl_privacy.data import ImageData
from fl_privacy.federation.recording import RecordedUpdate
from fl_privacy.metrics.catalog import MIA_SUMMARY
from fl_privacy.reporting import RunDirectory

SCORES = ("FedMIA-II (cosine)", "FedMIA-I (loss)", "Avg-Cosine", "Loss-Series", "Grad-Cosine (one update)")


def _members(run: RunDirectory, rounds: list[int], client: int) -> np.ndarray:
    """The target's samples over its recorded rounds, from the evaluator's ground truth."""
    indices: set[int] = set()
    for r in rounds:
        truth = json.loads(run.ground_truth_path(r, client).read_text())
        if truth.get("split", "train") != "train":
            raise ValueError(f"round {r}: the target's samples come from the {truth['split']} split, not train")
        indices.update(int(i) for step in truth["steps"] for i in step)
    return np.array(sorted(indices))


def multiround_mia(root: str | Path, model: torch.nn.Module, train: ImageData, test: ImageData, target: int,
                   nonmembers: int = 1000, normalize: bool = True, seed: int = 0,
                   device: str | torch.device = "cpu") -> dict[str, Any]:
    """Scores of every method for the target client's members vs ``nonmembers`` test samples; ROC on log axes."""
    root = Path(root)
    run = RunDirectory(root)
    recorded = run.recorded_clients()
    rounds = sorted(r for r, clients in recorded.items() if target in clients and len(clients) >= 3)
    if not rounds:
        raise ValueError(f"no round of {root} recorded client {target} and at least two other clients: record "
                         "them with attack.name=none, attack.rounds=[...], attack.victim_ids=[all clients]")
    members = _members(run, rounds, target)
    if nonmembers > len(test):
        raise ValueError(f"asked for {nonmembers} non-members but the test split has {len(test)} samples")
    outsiders = np.sort(np.random.default_rng([seed, 29]).permutation(len(test))[:nonmembers])
    xm, ym = train.batch(members, normalize=normalize)
    xn, yn = test.batch(outsiders, normalize=normalize)
    x, y = torch.cat([xm, xn]), torch.cat([ym, yn])
    names = {n for n, _ in model.named_parameters()}
    target_m: dict[str, list[np.ndarray]] = {"cosine": [], "loss": []}
    other_m: dict[str, list[np.ndarray]] = {"cosine": [], "loss": []}
    for r in rounds:
        updates = [RecordedUpdate.load(run.update_path(r, c)) for c in recorded[r]]
        if any(u.kind != "delta" for u in updates):
            raise ValueError("the multi-round MIA reads FedAvg updates (training.algorithm=fedavg)")
        state = updates[0].global_state
        params = {k: v for k, v in state.items() if k in names}
        buffers = {k: v for k, v in state.items() if k not in names}
        measured = round_measurements(model, params, buffers, [u.update for u in updates], x, y, device)
        t = recorded[r].index(target)
        for key, values in measured.items():
            target_m[key].append(values[t])
            other_m[key].append(np.delete(values, t, axis=0))
        del updates
    scores = {
        SCORES[0]: fedmia_scores(np.stack(target_m["cosine"]), np.stack(other_m["cosine"]), outlier=True),
        SCORES[1]: fedmia_scores(np.stack(target_m["loss"]), np.stack(other_m["loss"])),
        SCORES[2]: trajectory_scores(np.stack(target_m["cosine"])),
        SCORES[3]: trajectory_scores(np.stack(target_m["loss"])),
        SCORES[4]: target_m["cosine"][-1],
    }
    is_member = np.r_[np.ones(len(members), bool), np.zeros(len(outsiders), bool)]
    metrics = {name: roc_metrics(s, is_member) for name, s in scores.items()}
    (root / "mia").mkdir(exist_ok=True)
    plot = plot_roc(metrics, root / "mia" / f"multiround_client_{target:04d}_roc.png",
                    title=f"client {target}, rounds {rounds[0]}..{rounds[-1]} ({len(rounds)} recorded)")
    table = {name: {k: float(m[k]) for k in MIA_SUMMARY}
             for name, m in metrics.items()}
    return {"target": target, "rounds": rounds, "members": len(members), "nonmembers": len(outsiders),
            "scores": table, "roc": str(plot)}
