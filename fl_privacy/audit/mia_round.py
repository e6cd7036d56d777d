"""Membership inference inside a federation run: the global model per round, and victims' updates.

Global model: members are samples the clients trained on, non-members come
from the first half of the test split (same distribution), and reference
models are trained on the second half, disjoint from both; thresholds and
LiRA/RMIA statistics come from those reference models only.
Recorded updates: the victim's own samples vs test-split non-members, scored by
the similarity of their gradients to the update (the server's own view); over
several rounds (``mia.multiround``), by FedMIA and the loss/gradient trajectories.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fl_privacy.attacks.mia import MIAConfig, audit_split, plot_roc, roc_metrics, run_global_mia
from fl_privacy.attacks.mia.gradient import score_recorded_update
from fl_privacy.attacks.mia.reference import train_reference_models
from fl_privacy.audit.mia_references import REFERENCE_FILE, reference_settings, reused_or_trained
from fl_privacy.config import ExperimentConfig
from fl_privacy.data import ImageData
from fl_privacy.errors import ConfigError
from fl_privacy.federation.recording import RecordedUpdate
from fl_privacy.metrics.catalog import MIA_SUMMARY


def combine_splits(first: ImageData, second: ImageData) -> tuple[ImageData, int]:
    """One ``ImageData`` holding both splits (e.g. train then test), and the offset of the second.

    Index sets of the audit must index one array so disjointness can be checked;
    use this when non-members or the reference pool come from the other split.
    """
    if first.shape != second.shape or first.classes != second.classes:
        raise ValueError("splits differ in image shape or classes")
    combined = ImageData(
        name=first.name, images=np.concatenate([np.asarray(first.images), np.asarray(second.images)]),
        labels=np.concatenate([first.labels, second.labels]), classes=first.classes, mean=first.mean,
        std=first.std, source=f"{first.source}+{second.source}",
    )
    return combined, len(first)


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if not isinstance(v, np.ndarray)}


class MembershipAuditor:
    """Audits the global model after configured rounds; reference models are trained once and reused."""

    def __init__(self, config: ExperimentConfig, train: ImageData, test: ImageData, partitions: tuple,
                 model_factory: Callable[[], torch.nn.Module], out_dir: Path,
                 device: torch.device | str = "cpu") -> None:
        self.config, self.out_dir, self.device = config, out_dir, device
        self.data, offset = combine_splits(train, test)
        rng = np.random.default_rng([config.seed, 11])
        order = offset + rng.permutation(len(test))
        half = len(order) // 2
        members_pool = np.unique(np.concatenate(partitions))
        self.nonmember_pool = np.sort(order[:half])
        self.reference_pool = np.sort(order[half:][: config.mia.reference_pool])
        size = config.mia.audit_size // 2
        indices, is_member = audit_split(members_pool, self.nonmember_pool, 2 * size, config.seed)
        self.members, self.nonmembers = indices[is_member], indices[~is_member]
        self.factory = model_factory
        t = config.training
        self.mia_config = MIAConfig(
            n_reference_models=config.mia.reference_models, epochs=config.mia.reference_epochs,
            batch_size=t.batch_size, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, seed=config.seed,
            attacks=tuple(config.mia.attacks), normalize=config.data.normalize,
        )
        self._reference = None

    def reference_models(self) -> list:
        """Trained once on the reference pool, less a quarter kept unseen as RMIA's population."""
        if self._reference is None:
            cfg = self.mia_config
            rng = np.random.default_rng([cfg.seed, 17])
            unseen = min(cfg.rmia_population, len(self.reference_pool) // 4) if "rmia_offline" in cfg.attacks else 0
            train_pool = np.sort(rng.permutation(self.reference_pool)[unseen:])
            self._reference = reused_or_trained(  # saved in the run: a resumed run reuses them
                self.out_dir / REFERENCE_FILE, reference_settings(self.config, cfg, train_pool), self.factory,
                self.device, lambda: train_reference_models(
                    self.factory, self.data, train_pool, cfg.n_reference_models, cfg.epochs, cfg.batch_size, cfg.lr,
                    cfg.seed, self.device, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                    normalize=cfg.normalize))
        return self._reference

    def audit(self, server_round: int, model: torch.nn.Module) -> dict[str, Any]:
        """ROC metrics per attack for the global model; writes the ROC plot and the numbers."""
        result = run_global_mia(
            model, self.data, self.members, self.nonmembers, self.reference_pool, self.factory, self.mia_config,
            self.device, reference_models=self.reference_models(),
        )
        attacks = result["attacks"]
        self.out_dir.mkdir(parents=True, exist_ok=True)
        plot = plot_roc({name: (m["fpr"], m["tpr"]) for name, m in attacks.items()},
                        self.out_dir / f"round_{server_round:03d}_roc.png")
        summary = {name: {k: m[k] for k in MIA_SUMMARY} for name, m in attacks.items()}
        warnings = sorted({w for m in attacks.values() for w in m.get("warnings", [])})
        return {"round": server_round, "members": len(self.members), "nonmembers": len(self.nonmembers),
                "attacks": summary, "warnings": warnings, "roc": str(Path(plot).relative_to(self.out_dir.parent)),
                "details": {name: _scalars(m) for name, m in attacks.items()}}


def gradient_mia(recorded: RecordedUpdate, model: torch.nn.Module, train: ImageData, test: ImageData,
                 member_indices: np.ndarray, config: ExperimentConfig, device: torch.device | str = "cpu",
                 ) -> dict[str, Any]:
    """Which candidates were in this update? The victim's samples vs ``mia.gradient_nonmembers`` test samples."""
    rng = np.random.default_rng([config.seed, recorded.server_round, recorded.partition_id, 13])
    nonmembers = np.sort(rng.permutation(len(test))[: config.mia.gradient_nonmembers])
    xm, ym = train.batch(member_indices, normalize=config.data.normalize)
    xn, yn = test.batch(nonmembers, normalize=config.data.normalize)
    scores = score_recorded_update(recorded, model, torch.cat([xm, xn]), torch.cat([ym, yn]), device)
    is_member = np.r_[np.ones(len(xm), bool), np.zeros(len(xn), bool)]
    metrics = roc_metrics(scores, is_member)
    return {"gradient_mia_auc": metrics["auc"], "gradient_mia_tpr_at_1pct_fpr": metrics["tpr_at_1pct_fpr"],
            "gradient_mia_members": len(xm), "gradient_mia_nonmembers": len(xn)}


def multiround_round(config: ExperimentConfig, run_root: Path, model: torch.nn.Module, train: ImageData,
                     test: ImageData, device: torch.device | str = "cpu") -> dict[str, Any]:
    """``mia.multiround`` on the updates recorded so far (called after its last round): the block for the records."""
    from fl_privacy.audit.multiround_mia import multiround_mia

    multi = config.mia.multiround
    return multiround_mia(run_root, model, train, test, targets=multi.clients, rounds=multi.rounds,
                          methods=multi.methods, nonmembers=multi.nonmembers, normalize=config.data.normalize,
                          seed=config.seed, device=device)


def check_multiround_nonmembers(config: ExperimentConfig, test: ImageData) -> None:
    """Fail before training when the test split cannot supply ``mia.multiround.nonmembers``."""
    multi = config.mia.multiround
    if multi.rounds and multi.nonmembers > len(test):
        raise ConfigError(f"mia.multiround.nonmembers={multi.nonmembers} but the test split has {len(test)} samples")
