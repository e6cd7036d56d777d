"""Membership inference attacks (MIA) of the honest-but-curious server.

* ``scores``: per-example signals of a model (confidence, loss, entropy, modified
  entropy, LiRA's logit-scaled confidence), higher = more likely member;
* ``threshold``: the seed paper's global-threshold MIAs, τ fitted on shadow data only;
* ``reference``: reference/shadow models trained on halves of a reference pool;
* ``offline``: the LiRA and RMIA offline estimators;
* ``audit``: balanced audit sets and ``run_global_mia`` (threshold attacks, LiRA
  offline, RMIA offline) on a global model;
* ``samples``: the ``LabelledSamples`` protocol the attacks read examples through
  (the evaluator passes its dataset split; attacks load no data);
* ``gradient``: the server's view of one update: gradient-similarity MIA (Li et al. 2023);
* ``evaluation``: ROC, TPR at low FPR, log-log plots, the DP sanity bound.
"""

from fl_privacy.attacks.mia.audit import (
    ATTACKS,
    MIAConfig,
    audit_split,
    run_global_mia,
)
from fl_privacy.attacks.mia.evaluation import dp_bound_check, plot_roc, roc_metrics, summary, tpr_at_fpr
from fl_privacy.attacks.mia.gradient import gradient_similarity_scores, score_recorded_update, update_direction
from fl_privacy.attacks.mia.offline import lira_offline_scores, rmia_offline_scores
from fl_privacy.attacks.mia.reference import reference_halves, train_model, train_reference_models
from fl_privacy.attacks.mia.scores import (
    SCORES,
    compute_score,
    confidence,
    entropy,
    logit_scaled_confidence,
    loss,
    max_confidence,
    model_outputs,
    modified_entropy,
)
from fl_privacy.attacks.mia.threshold import THRESHOLD_SCORES, AuditLeakError, ThresholdAttack, check_disjoint

__all__ = [
    "ATTACKS", "SCORES", "THRESHOLD_SCORES", "AuditLeakError", "MIAConfig", "ThresholdAttack", "audit_split",
    "check_disjoint", "compute_score", "confidence", "dp_bound_check", "entropy",
    "gradient_similarity_scores", "lira_offline_scores", "logit_scaled_confidence", "loss", "max_confidence",
    "model_outputs", "modified_entropy", "plot_roc", "reference_halves", "rmia_offline_scores", "roc_metrics",
    "run_global_mia", "score_recorded_update", "summary", "tpr_at_fpr", "train_model", "train_reference_models",
    "update_direction",
]
