"""Membership inference: signals and ROC metrics by hand, threshold fitting kept off the audit set,
an overfit model is attackable (threshold, LiRA, RMIA) and an untrained one is not, and the server's
gradient-similarity MIA ranks the client's examples first (with the right sign for FedAvg deltas)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import mannwhitneyu, norm
from sklearn.metrics import roc_auc_score

import fl_privacy.attacks.mia.audit as audit_module
from fl_privacy.attacks.mia import (
    THRESHOLD_SCORES,
    AuditLeakError,
    MIAConfig,
    ThresholdAttack,
    audit_split,
    compute_score,
    dp_bound_check,
    gradient_similarity_scores,
    lira_offline_scores,
    logit_scaled_confidence,
    model_outputs,
    plot_roc,
    reference_halves,
    rmia_offline_scores,
    roc_metrics,
    run_global_mia,
    score_recorded_update,
    train_model,
)
from fl_privacy.data import ImageData, load_dataset
from fl_privacy.federation.recording import RecordedUpdate
from fl_privacy.models import build_model
from fl_privacy.sgd import loss_fn, sgd_steps, split_state
from tests.conftest import CIFAR_FILE, DATA_DIR_GIVEN, has_data, require_data


# ----------------------------------------------------------------------------- data and models
@pytest.fixture(scope="module")
def data() -> ImageData:
    """CIFAR-10 train split from the offline archive when present, else random 32x32 images."""
    if has_data(CIFAR_FILE) or DATA_DIR_GIVEN:
        require_data(CIFAR_FILE)  # with FL_PRIVACY_DATA_DIR set, a missing archive fails instead of going synthetic
        return load_dataset("cifar10", "train")
    rng = np.random.default_rng(0)
    n = 3000
    return ImageData(
        name="synthetic", images=rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8),
        labels=rng.integers(0, 10, n).astype(np.int64), classes=tuple(str(i) for i in range(10)),
        mean=(0.5,) * 3, std=(0.25,) * 3, source="test",
    )


def _factory(width: int = 4):
    return lambda: build_model("small_cnn", num_classes=10, in_channels=3, image_size=32, width=width)


EPOCHS, BATCH, LR = 40, 16, 0.05


@pytest.fixture(scope="module")
def split(data: ImageData) -> dict[str, np.ndarray]:
    """Disjoint index sets of the train split: target members, non-members, reference pool."""
    perm = np.random.default_rng(0).permutation(len(data))
    return {"members": np.sort(perm[:64]), "nonmembers": np.sort(perm[64:128]), "pool": np.sort(perm[128:288])}


@pytest.fixture(scope="module")
def overfit(data: ImageData, split: dict[str, np.ndarray]) -> torch.nn.Module:
    """small_cnn width 4 trained 40 epochs on 64 images: memorizes them."""
    torch.manual_seed(0)
    return train_model(_factory()(), data, split["members"], EPOCHS, BATCH, LR, seed=0)


@pytest.fixture(scope="module")
def audit_run(data, split, overfit):
    """``run_global_mia`` on the overfit model, with spies on threshold fitting and reference training."""
    fits, refs = [], []
    original_fit, original_train = ThresholdAttack.fit, audit_module.train_reference_models

    def spy_fit(self, member_scores, nonmember_scores, **kwargs):
        fits.append({"score": self.score_name, "member_scores": np.array(member_scores),
                     "nonmember_scores": np.array(nonmember_scores), **kwargs})
        return original_fit(self, member_scores, nonmember_scores, **kwargs)

    def spy_train(*args, **kwargs):
        out = original_train(*args, **kwargs)
        refs.extend(out)
        return out

    config = MIAConfig(n_reference_models=4, epochs=EPOCHS, batch_size=BATCH, lr=LR, seed=0, rmia_population=40)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ThresholdAttack, "fit", spy_fit)
        mp.setattr(audit_module, "train_reference_models", spy_train)
        result = run_global_mia(overfit, data, split["members"], split["nonmembers"], split["pool"], _factory(),
                                config)
    return {"result": result, "fits": fits, "refs": refs}


# ----------------------------------------------------------------------------- ROC metrics
def test_roc_metrics_hand_computed_example():
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    member = [1, 1, 0, 1, 0, 0]
    m = roc_metrics(scores, member)
    assert m["auc"] == pytest.approx(8 / 9)  # 8 of 9 (member, non-member) pairs ordered right
    assert m["tpr_at_1pct_fpr"] == pytest.approx(2 / 3)  # 0.9 and 0.8 are caught before any false positive
    assert m["tpr_at_0.1pct_fpr"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy_at_best_threshold"] == pytest.approx(5 / 6)
    assert m["advantage"] == pytest.approx(2 / 3)
    assert (m["n_members"], m["n_nonmembers"]) == (3, 3)
    assert len(m["warnings"]) == 2  # 3 non-members cannot measure TPR at 1% or 0.1% FPR

    ties = roc_metrics([1.0, 1.0, 0.0, 0.0], [1, 0, 1, 0])
    assert ties["auc"] == pytest.approx(0.5)
    assert ties["tpr_at_1pct_fpr"] == 0.0  # a tied member cannot be taken without its tied non-member

    perfect = roc_metrics([3, 2, 1, 0], [True, True, False, False])
    assert perfect["auc"] == 1.0 and perfect["tpr_at_0.1pct_fpr"] == 1.0


def test_roc_metrics_agree_with_sklearn_and_brute_force():
    rng = np.random.default_rng(1)
    n_in, n_out = 300, 2000
    scores = np.r_[rng.normal(1, 1, n_in), rng.normal(0, 1, n_out)].round(2)  # rounding makes ties
    member = np.r_[np.ones(n_in, bool), np.zeros(n_out, bool)]
    m = roc_metrics(scores, member)
    assert m["auc"] == pytest.approx(roc_auc_score(member, scores))
    u = mannwhitneyu(scores[member], scores[~member]).statistic
    assert m["auc"] == pytest.approx(u / (n_in * n_out))
    for target, key in ((0.01, "tpr_at_1pct_fpr"), (0.001, "tpr_at_0.1pct_fpr")):
        best = 0.0
        for t in np.unique(scores):
            pred = scores >= t
            if pred[~member].mean() <= target:
                best = max(best, pred[member].mean())
        assert m[key] == pytest.approx(best)
    assert len(m["warnings"]) == 1 and "0.1%" in m["warnings"][0]  # 2000 ≥ 10/1% but < 10/0.1%


def test_dp_bound_check_and_log_log_plot(tmp_path):
    eps = 1.0
    rr = (1 / (1 + math.e), math.e / (1 + math.e))  # randomized response: exactly on the ε = 1 bound
    fpr, tpr = np.array([0.0, rr[0], 1.0]), np.array([0.0, rr[1], 1.0])
    assert dp_bound_check(fpr, tpr, eps, 0.0, slack=1e-12)["ok"]
    bad = dp_bound_check(np.array([0.0, 0.1, 1.0]), np.array([0.0, 0.9, 1.0]), eps, 1e-5)
    assert not bad["ok"] and bad["at_tpr"] == 0.9
    m = roc_metrics([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [1, 1, 0, 1, 0, 0])
    path = plot_roc({"attack": m, "raw": (fpr, tpr)}, tmp_path / "roc.png")
    assert path.exists() and path.stat().st_size > 1000


# ----------------------------------------------------------------------------- signals
def test_signals_match_their_formulas_and_orientation():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 5.0], [0.5, 0.2, 0.1]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 2])
    p = torch.softmax(logits, 1).numpy()
    y = labels.numpy()
    py = p[np.arange(3), y]
    assert compute_score("confidence", logits, labels) == pytest.approx(py)
    assert compute_score("loss", logits, labels) == pytest.approx(np.log(py))
    assert compute_score("entropy", logits, labels) == pytest.approx((p * np.log(p)).sum(1))
    mentr = -(1 - py) * np.log(py) - np.array(
        [sum(p[i, j] * np.log(1 - p[i, j]) for j in range(3) if j != y[i]) for i in range(3)])
    assert compute_score("modified_entropy", logits, labels) == pytest.approx(-mentr)
    assert compute_score("logit_scaled_confidence", logits, labels) == pytest.approx(np.log(py / (1 - py)))

    # Extreme logits: finite, and ordered "confident right > unsure > confident wrong" for every label-aware signal.
    extreme = torch.tensor([[60.0, 0.0, -60.0], [0.1, 0.0, 0.0], [-60.0, 60.0, 0.0]])
    truth = torch.tensor([0, 0, 0])
    for name in ("confidence", "loss", "modified_entropy", "logit_scaled_confidence"):
        s = compute_score(name, extreme, truth)
        assert np.all(np.isfinite(s)), name
        assert s[0] > s[1] > s[2], name
    assert logit_scaled_confidence(extreme, truth)[0] == pytest.approx(60.0, abs=1e-6)  # no 1 - p cancellation
    ent = compute_score("entropy", extreme, truth)
    assert ent[0] > ent[1] and ent[2] > ent[1]  # label-free: any confident prediction looks member-like


# ----------------------------------------------------------------------------- thresholds
def test_threshold_maximizes_balanced_accuracy_on_reference_scores():
    rng = np.random.default_rng(0)
    attack = ThresholdAttack("loss").fit(rng.normal(2, 1, 4000), rng.normal(0, 1, 4000))
    assert attack.threshold_ == pytest.approx(1.0, abs=0.15)  # optimum for N(2,1) vs N(0,1)
    assert attack.reference_balanced_accuracy_ == pytest.approx(norm.cdf(1), abs=0.02)
    fresh_in, fresh_out = rng.normal(2, 1, 2000), rng.normal(0, 1, 2000)
    acc = attack.score(np.r_[fresh_in, fresh_out], np.r_[np.ones(2000), np.zeros(2000)])
    assert acc == pytest.approx(norm.cdf(1), abs=0.03)
    assert attack.predict([attack.threshold_ + 1e-9, attack.threshold_ - 1e-9]).tolist() == [True, False]
    with pytest.raises(RuntimeError):
        ThresholdAttack("loss").predict([0.0])


def test_threshold_fit_refuses_audit_examples(data, split):
    audit = np.r_[split["members"], split["nonmembers"]]
    ok = ThresholdAttack("confidence").fit([0.9, 0.8], [0.2, 0.1], member_indices=split["pool"][:2],
                                            nonmember_indices=split["pool"][2:4], audit_indices=audit)
    assert np.array_equal(ok.fitted_on_, split["pool"][:4])
    with pytest.raises(AuditLeakError):
        ThresholdAttack("confidence").fit([0.9, 0.8], [0.2, 0.1], member_indices=[split["pool"][0], audit[5]],
                                          nonmember_indices=split["pool"][2:4], audit_indices=audit)
    # A reference pool that touches the audit set is refused before any model is trained.
    leaky_pool = np.r_[split["pool"], split["nonmembers"][:1]]
    with pytest.raises(AuditLeakError):
        run_global_mia(torch.nn.Linear(1, 1), data, split["members"], split["nonmembers"], leaky_pool,
                       model_factory=lambda: pytest.fail("must not train"))


def test_run_global_mia_fits_thresholds_only_on_shadow_reference_data(audit_run, data, split):
    """Instrumented run: every threshold is fitted on the shadow model's scores of reference examples."""
    audit = np.r_[split["members"], split["nonmembers"]]
    fits, refs = audit_run["fits"], audit_run["refs"]
    assert sorted(f["score"] for f in fits) == sorted(THRESHOLD_SCORES)
    shadow, shadow_in = refs[0]
    for f in fits:
        used = np.r_[f["member_indices"], f["nonmember_indices"]]
        assert np.intersect1d(used, audit).size == 0
        assert np.setdiff1d(used, split["pool"]).size == 0
        assert np.array_equal(np.sort(f["audit_indices"]), np.sort(audit))
        assert np.array_equal(f["member_indices"], shadow_in)
        # The arrays fitted on ARE the shadow model's scores on those reference indices (provenance).
        attack = ThresholdAttack(f["score"])
        assert f["member_scores"] == pytest.approx(attack.signal_of(shadow, data, f["member_indices"]))
        assert f["nonmember_scores"] == pytest.approx(attack.signal_of(shadow, data, f["nonmember_indices"]))
    for _, in_idx in refs:
        assert np.intersect1d(in_idx, audit).size == 0


# ----------------------------------------------------------------------------- global-model attacks
def test_overfit_model_is_attackable(audit_run):
    attacks = audit_run["result"]["attacks"]
    assert attacks["loss"]["auc"] > 0.7
    assert attacks["confidence"]["auc"] > 0.7
    assert attacks["modified_entropy"]["auc"] > 0.7
    assert attacks["loss"]["balanced_accuracy_at_threshold"] > 0.6  # the threshold from shadow data transfers
    assert attacks["lira_offline"]["auc"] > 0.6  # 4 OUT reference models, global variance
    assert attacks["rmia_offline"]["auc"] > 0.6
    for name, m in attacks.items():
        assert {"auc", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr", "fpr", "tpr", "warnings"} <= set(m), name
        assert m["n_members"] == m["n_nonmembers"] == 64
        assert m["warnings"]  # 64 non-members are far too few for TPR at 1% FPR: said so
    ref = audit_run["result"]["reference"]
    assert ref["n_models"] == 4 and ref["population_size"] == 40


def test_untrained_model_gives_chance_auc(data):
    perm = np.random.default_rng(3).permutation(len(data))
    half = min(5000, len(perm) // 2)
    idx, member = audit_split(perm[:half], perm[half : 2 * half], 1000, seed=0)
    torch.manual_seed(1)
    logits = model_outputs(_factory()(), data, idx)
    for name in THRESHOLD_SCORES:
        auc = roc_metrics(compute_score(name, logits, data.labels[idx]), member)["auc"]
        assert abs(auc - 0.5) < 0.1, (name, auc)


def test_audit_split_is_balanced_and_reproducible():
    idx, member = audit_split(np.arange(100), np.arange(100, 300), 50, seed=3)
    assert member.sum() == 25 and len(idx) == 50 and len(np.unique(idx)) == 50
    assert np.all(idx[member] < 100) and np.all(idx[~member] >= 100)
    again, _ = audit_split(np.arange(100), np.arange(100, 300), 50, seed=3)
    assert np.array_equal(idx, again)
    with pytest.raises(ValueError):
        audit_split(np.arange(10), np.arange(5, 20), 4, seed=0)


def test_reference_halves_are_complementary_pairs():
    inc = reference_halves(11, 4, seed=0)
    assert inc.shape == (4, 11)
    assert np.array_equal(inc[1], ~inc[0]) and np.array_equal(inc[3], ~inc[2])
    assert np.all(inc.sum(0) == 2)  # every pool example is IN for exactly half the models


def test_lira_and_rmia_estimators():
    rng = np.random.default_rng(0)
    n = 2000
    out_phi = rng.normal(0, 1, (4, n))
    member = np.r_[np.ones(n // 2, bool), np.zeros(n // 2, bool)]
    target = np.where(member, rng.normal(2, 1, n), rng.normal(0, 1, n))
    s = lira_offline_scores(target, out_phi)
    assert roc_metrics(s, member)["auc"] > 0.85
    # one-sided: far BELOW the OUT mean is not evidence of membership (a two-sided NLL would say it is)
    low_high = lira_offline_scores(np.array([-5.0, 5.0]), np.zeros((4, 2)) + [[-1], [1], [-1], [1]])
    assert low_high[0] < low_high[1]

    # RMIA by hand: a = 0.3, reference mean 0.5 -> Pr = 0.5 * (1.3 * 0.5 + 0.7) = 0.675.
    p_x = np.array([0.9, 0.3])
    p_z = np.array([0.675, 0.4, 0.95])
    ref = np.full((2, 2), 0.5)
    ref_z = np.full((2, 3), 0.5)
    # ratios: x = (0.9, 0.3) / 0.675 = (1.33, 0.44); z = (1.0, 0.59, 1.41)
    assert rmia_offline_scores(p_x, ref, p_z, ref_z, a=0.3, gamma=1.0) == pytest.approx([2 / 3, 0.0])
    # γ = 0.5: x2 (0.44) now dominates z with ratio ≤ 0.89, i.e. only the second one.
    assert rmia_offline_scores(p_x, ref, p_z, ref_z, a=0.3, gamma=0.5) == pytest.approx([1.0, 1 / 3])


# ----------------------------------------------------------------------------- server-side gradient MIA
def test_gradient_similarity_ranks_the_clients_examples_first(data):
    rng = np.random.default_rng(1)
    perm = rng.permutation(len(data))[:64]
    members, nonmembers = perm[:8], perm[8:]
    is_member = np.r_[np.ones(8, bool), np.zeros(56, bool)]
    torch.manual_seed(0)
    model = _factory(width=8)()
    params, buffers = split_state(model)
    cx, cy = data.batch(np.r_[members, nonmembers])

    # FedSGD: the averaged gradient of the client's batch of 8.
    x, y = data.batch(members)
    live = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    batch_loss = loss_fn(torch.func.functional_call(model, (live, buffers), (x,)), y)
    grads = torch.autograd.grad(batch_loss, list(live.values()))
    gradient = {k: g.detach() for k, g in zip(live, grads)}
    sgd_auc = roc_metrics(gradient_similarity_scores(model, params, buffers, gradient, "gradient", cx, cy),
                          is_member)["auc"]
    assert sgd_auc > 0.8

    # FedAvg: 2 local epochs of mini-batches of 4 (4 SGD steps); the server sees w_client - w_global.
    order = rng.permutation(members)
    batches = [data.batch(order[i : i + 4]) for i in (0, 4)] * 2
    new_params, _ = sgd_steps(model, params, buffers, batches, lr=0.05)
    delta = {k: new_params[k] - params[k] for k in params}
    recorded = RecordedUpdate(server_round=1, partition_id=0, kind="delta", global_state={**params, **buffers},
                              update=delta, buffers=buffers, num_examples=8)
    avg_auc = roc_metrics(score_recorded_update(recorded, model, cx, cy), is_member)["auc"]
    assert avg_auc > 0.8
    # Treating the delta as if it were a gradient (no sign flip) ranks members last.
    wrong = roc_metrics(gradient_similarity_scores(model, params, buffers, delta, "gradient", cx, cy), is_member)
    assert wrong["auc"] < 0.2
    assert wrong["auc"] == pytest.approx(1 - avg_auc)


def test_gradient_similarity_matches_a_per_example_loop(data):
    torch.manual_seed(0)
    model = _factory(width=2)()
    params, buffers = split_state(model)
    update = {k: torch.randn_like(v) for k, v in params.items()}
    x, y = data.batch(np.arange(5))
    fast = gradient_similarity_scores(model, params, buffers, update, "delta", x, y, chunk_size=2)
    u = torch.cat([-update[k].flatten() for k in params])
    for i in range(5):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        g = torch.cat([p.grad.flatten() for p in model.parameters()])
        assert fast[i] == pytest.approx(float(F.cosine_similarity(g, u, dim=0)), abs=1e-5)
