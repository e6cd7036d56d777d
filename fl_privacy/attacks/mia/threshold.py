"""Global-threshold membership inference (the seed paper's three MIAs, §2.3 / Table 2).

Predict "member" when a per-example signal of the target model (``scores.py``:
true-class confidence, Shokri et al. 2017 / Song & Mittal 2021; loss, Yeom et al.
2018; (modified) entropy, Song & Mittal 2021) is at least a threshold τ.

τ is chosen on REFERENCE data only (Shokri et al. 2017's shadow-model idea; Song &
Mittal 2021 §3.2 pick τ on shadow training/test data; Carlini et al. 2022 §III: never
on the evaluation set): a shadow model trained on reference examples (``IN``) and
reference examples it did not see (``OUT``), both disjoint from the audit set. τ
maximizes the balanced accuracy ``(TPR + TNR) / 2`` on that shadow data, read from
scikit-learn's ``roc_curve`` and placed midway between two consecutive reference
scores:

    τ* = midpoint(t_k, t_{k+1}),  k = argmax_k (TPR_ref(t_k) + 1 - FPR_ref(t_k)) / 2.

The separation is enforced, not only documented: ``fit`` takes nothing but two score
arrays and, when told where they came from (``member_indices``/``nonmember_indices``)
and what is being audited (``audit_indices``), raises ``AuditLeakError`` on any
overlap; ``fit_shadow`` (what ``audit.run_global_mia`` calls) always passes both.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import roc_curve

from fl_privacy.attacks.mia.samples import LabelledSamples
from fl_privacy.attacks.mia.scores import SCORES, compute_score, model_outputs

THRESHOLD_SCORES: tuple[str, ...] = ("confidence", "loss", "entropy", "modified_entropy")


class AuditLeakError(ValueError):
    """Reference (threshold-fitting) data overlaps the audit set."""


def check_disjoint(
    audit_indices: Sequence[int] | np.ndarray | None, **reference: Sequence[int] | np.ndarray | None
) -> None:
    """Raise ``AuditLeakError`` if any named reference index set meets ``audit_indices``."""
    if audit_indices is None:
        return
    audit = np.asarray(audit_indices, dtype=np.int64)
    for name, idx in reference.items():
        if idx is None:
            continue
        common = np.intersect1d(audit, np.asarray(idx, dtype=np.int64))
        if common.size:
            raise AuditLeakError(
                f"{common.size} {name} example(s) are also in the audit set (e.g. {common[:5].tolist()}): "
                "thresholds must come from reference data disjoint from the audited examples"
            )


class ThresholdAttack:
    """``member  <=>  score(x, y) ≥ τ``, τ fitted on a shadow model's reference IN/OUT scores."""

    def __init__(self, score: str = "loss") -> None:
        if score not in SCORES:
            raise ValueError(f"unknown score {score!r}; choices: {sorted(SCORES)}")
        self.score_name = score
        self.threshold_: float | None = None
        self.reference_balanced_accuracy_: float | None = None
        self.fitted_on_: np.ndarray | None = None
        """Dataset indices of the reference examples τ was fitted on (when given)."""

    def __repr__(self) -> str:
        return f"ThresholdAttack(score={self.score_name!r}, threshold={self.threshold_})"

    # ------------------------------------------------------------------ signals
    def signal(self, logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> np.ndarray:
        """Per-example score from logits and labels (higher = more member-like)."""
        return compute_score(self.score_name, logits, labels)

    def signal_of(
        self, model: torch.nn.Module, data: LabelledSamples, indices: Sequence[int] | np.ndarray,
        device: str | torch.device = "cpu", batch_size: int = 256,
    ) -> np.ndarray:
        """Per-example score of ``model`` on ``data[indices]``."""
        idx = np.asarray(indices, dtype=np.int64)
        return self.signal(model_outputs(model, data, idx, device, batch_size), data.labels[idx])

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        member_scores: Sequence[float] | np.ndarray,
        nonmember_scores: Sequence[float] | np.ndarray,
        *,
        member_indices: Sequence[int] | np.ndarray | None = None,
        nonmember_indices: Sequence[int] | np.ndarray | None = None,
        audit_indices: Sequence[int] | np.ndarray | None = None,
    ) -> ThresholdAttack:
        """Choose τ maximizing balanced accuracy on REFERENCE scores (shadow IN vs OUT).

        The indices, when given, record where the scores came from; with
        ``audit_indices`` an overlap raises ``AuditLeakError`` before anything is fitted.
        """
        check_disjoint(audit_indices, member_indices=member_indices, nonmember_indices=nonmember_indices)
        s_in = np.asarray(member_scores, dtype=np.float64).reshape(-1)
        s_out = np.asarray(nonmember_scores, dtype=np.float64).reshape(-1)
        if member_indices is not None and len(member_indices) != len(s_in):
            raise ValueError(f"{len(s_in)} member scores but {len(member_indices)} member indices")
        if nonmember_indices is not None and len(nonmember_indices) != len(s_out):
            raise ValueError(f"{len(s_out)} non-member scores but {len(nonmember_indices)} non-member indices")
        if len(s_in) == 0 or len(s_out) == 0:
            raise ValueError("need reference members and non-members to fit a threshold")
        scores = np.concatenate([s_in, s_out])
        if not np.all(np.isfinite(scores)):
            raise ValueError("reference scores contain NaN or infinity")
        labels = np.concatenate([np.ones(len(s_in), bool), np.zeros(len(s_out), bool)])
        fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
        balanced = (tpr + 1 - fpr) / 2
        k = int(np.argmax(balanced))
        if k + 1 < len(thresholds):
            tau = float(thresholds[k]) / 2 + float(thresholds[k + 1]) / 2
        else:
            tau = float(thresholds[k])
        self.threshold_ = tau
        self.reference_balanced_accuracy_ = float(balanced[k])
        if member_indices is not None and nonmember_indices is not None:
            used = [np.asarray(member_indices), np.asarray(nonmember_indices)]
            self.fitted_on_ = np.concatenate(used).astype(np.int64)
        return self

    def fit_shadow(
        self,
        shadow_model: torch.nn.Module,
        data: LabelledSamples,
        in_indices: Sequence[int] | np.ndarray,
        out_indices: Sequence[int] | np.ndarray,
        *,
        audit_indices: Sequence[int] | np.ndarray,
        device: str | torch.device = "cpu",
        batch_size: int = 256,
    ) -> ThresholdAttack:
        """Fit τ on a shadow model's scores on its training examples (IN) and unseen ones (OUT).

        ``audit_indices`` is required: the reference examples are checked against it
        before the shadow model is even queried.
        """
        check_disjoint(audit_indices, member_indices=in_indices, nonmember_indices=out_indices)
        return self.fit(
            self.signal_of(shadow_model, data, in_indices, device, batch_size),
            self.signal_of(shadow_model, data, out_indices, device, batch_size),
            member_indices=in_indices, nonmember_indices=out_indices, audit_indices=audit_indices,
        )

    # ------------------------------------------------------------------ use
    def _fitted(self) -> float:
        if self.threshold_ is None:
            raise RuntimeError("ThresholdAttack is not fitted: call fit() or fit_shadow() on reference data first")
        return self.threshold_

    def predict(self, scores: Sequence[float] | np.ndarray) -> np.ndarray:
        """Boolean membership predictions ``scores ≥ τ``."""
        return np.asarray(scores, dtype=np.float64) >= self._fitted()

    def score(self, scores: Sequence[float] | np.ndarray, is_member: Sequence[bool] | np.ndarray) -> float:
        """Balanced accuracy of the fitted threshold on labelled (e.g. audit) scores (sklearn convention)."""
        pred = self.predict(scores)
        truth = np.asarray(is_member).astype(bool)
        if truth.all() or not truth.any():
            raise ValueError("need members and non-members to compute a balanced accuracy")
        return float((pred[truth].mean() + (~pred[~truth]).mean()) / 2)
