"""GIA-O engine: distances and priors by hand, the unrolled client update, batched restarts,
the sign of an unknown-schedule update, and short attacks that recover planted images."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fl_privacy.attacks.gia import PRESETS, GIAConfig, preset, reconstruct
from fl_privacy.attacks.gia.objectives import cosine_distance, l2_distance, layer_weights, scaled_l2_distance
from fl_privacy.attacks.gia.priors import bn_statistics, l2_norm, total_variation
from fl_privacy.attacks.gia.problem import GIAProblem
from fl_privacy.attacks.gia.unroll import unrolled_delta
from fl_privacy.attacks.threat import Observation, Schedule
from fl_privacy.config import TrainingConfig
from fl_privacy.data import ImageData
from fl_privacy.federation.training import local_update
from fl_privacy.metrics import psnr
from fl_privacy.models import build_model
from fl_privacy.sgd import split_state


# ----------------------------------------------------------------------------- helpers
def _data(n: int, c: int = 3, size: int = 16, classes: int = 10, seed: int = 0) -> ImageData:
    """Smooth random images (bilinear upsampling of 4x4 noise), labels 0, 1, 2, ..."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(n, c, 4, 4, generator=gen)
    imgs = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return ImageData(
        name="toy", images=(imgs * 255).round().to(torch.uint8).numpy(), labels=np.arange(n) % classes,
        classes=tuple(str(i) for i in range(classes)), mean=(0.5,) * c, std=(0.25,) * c, source="test",
    )


def _model(name: str, c: int = 3, size: int = 16, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, num_classes=10, in_channels=c, image_size=size, **options)


def _observe(model, data, steps, training, *, labels=True, schedule=True, num_examples=True, bn_stats=None):
    """What the server sees of one client update (built here as the threat model prescribes)."""
    params, buffers = split_state(model)
    result = local_update(copy.deepcopy(model), data, steps, training)
    if result.kind == "gradient":
        update, kind = result.shared, "gradient"
    else:
        update, kind = {k: result.shared[k] - params[k] for k in params}, "delta"
    unique = np.unique(np.concatenate(steps))
    x, y = data.batch(unique)
    sched = None
    if kind == "delta" and schedule:
        sched = Schedule.from_indices(steps, training.lr, training.momentum, training.weight_decay)
    obs = Observation(
        model=copy.deepcopy(model), global_params=params, global_buffers=buffers, update=update, kind=kind,
        image_shape=data.shape, num_classes=data.num_classes, mean=data.mean, std=data.std,
        num_examples=len(unique) if num_examples else None,
        batch_size=training.batch_size if num_examples else None,
        labels=y if labels else None, schedule=sched, bn_statistics=bn_stats,
    )
    return obs, x, y


def _fedsgd(model_name="lenet", n=1, c=3, size=16, first=0, **kw):
    """A FedSGD gradient of samples first..first+n-1 (sample i has label i)."""
    model, data = _model(model_name, c, size), _data(first + n, c, size)
    steps = [np.arange(first, first + n)]
    return _observe(model, data, steps, TrainingConfig(algorithm="fedsgd", batch_size=n), **kw)


# ----------------------------------------------------------------------------- objectives
def test_l2_distance_by_hand():
    cand = [torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[[3.0]], [[1.0]]])]
    target = [torch.zeros(2), torch.tensor([[1.0]])]
    torch.testing.assert_close(l2_distance(cand, target), torch.tensor([1 + 4 + 4, 0.0]))
    torch.testing.assert_close(l2_distance(cand, target, weights=[1.0, 0.5]), torch.tensor([5 + 2, 0.0]))


def test_cosine_distance_parallel_antiparallel_orthogonal():
    t = [torch.tensor([1.0, 2.0]), torch.tensor([3.0])]
    cand = [torch.tensor([[2.0, 4.0], [-1.0, -2.0], [2.0, -1.0]]), torch.tensor([[6.0], [-3.0], [0.0]])]
    torch.testing.assert_close(cosine_distance(cand, t), torch.tensor([0.0, 2.0, 1.0]))
    # weights enter inner product and both norms: weight 0 on layer 2 leaves only layer 1
    g = [torch.tensor([[1.0, 0.0]]), torch.tensor([[5.0]])]
    tt = [torch.tensor([1.0, 1.0]), torch.tensor([-7.0])]
    torch.testing.assert_close(cosine_distance(g, tt, weights=[1.0, 0.0]), torch.tensor([1 - 1 / math.sqrt(2)]))


def test_scaled_l2_is_scale_free_but_keeps_the_sign():
    t = [torch.tensor([1.0, 2.0]), torch.tensor([2.0])]
    e = torch.tensor([2.0, -1.0])  # orthogonal to t's first layer, t's second layer 0 -> orthogonal to t
    cand = [torch.stack([2 * t[0], -t[0], t[0] + e]), torch.stack([2 * t[1], -t[1], t[1]])]
    out = scaled_l2_distance(cand, t)
    torch.testing.assert_close(out, torch.tensor([0.0, 1 + 4 + 4, 5.0]))  # 0; ||g||^2 (s*=0); ||e||^2


def test_layer_weights():
    torch.testing.assert_close(layer_weights(3, "uniform"), torch.ones(3))
    torch.testing.assert_close(layer_weights(4, "linear"), torch.tensor([1.0, 0.75, 0.5, 0.25]))
    with pytest.raises(ValueError, match="uniform"):
        layer_weights(3, "exp")


# ----------------------------------------------------------------------------- priors
def test_total_variation_by_hand():
    const = torch.full((1, 2, 3, 4, 4), 0.7)
    ramp = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).view(1, 1, 1, 2, 2)
    x = torch.cat([torch.zeros(1, 1, 1, 2, 2), ramp])  # two restarts
    torch.testing.assert_close(total_variation(const), torch.zeros(1))
    torch.testing.assert_close(total_variation(x), torch.tensor([0.0, 1.0 + 2.0]))  # mean|dx| + mean|dy|


def test_l2_norm_and_bn_statistics_by_hand():
    x = torch.tensor([3.0, 4.0, 0.0, 0.0]).view(1, 1, 1, 2, 2)
    torch.testing.assert_close(l2_norm(x), torch.tensor([5.0]))
    target = [(torch.zeros(2), torch.ones(2)), (torch.zeros(1), torch.ones(1))]
    feats = [(torch.tensor([[3.0, 4.0], [0.0, 0.0]]), torch.ones(2, 2)),
             (torch.zeros(2, 1), torch.tensor([[3.0], [1.0]]))]
    # restart 0: 10 * (5 + 0) + (0 + 2); restart 1: 0 + 0
    torch.testing.assert_close(bn_statistics(feats, target), torch.tensor([52.0, 0.0]))
    torch.testing.assert_close(bn_statistics(feats, target, first_layer_factor=1.0), torch.tensor([7.0, 0.0]))


# ----------------------------------------------------------------------------- unrolling
@pytest.mark.parametrize("momentum, weight_decay", [(0.0, 0.0), (0.9, 0.01)])
def test_unrolled_delta_equals_the_client_update(momentum, weight_decay):
    model, data = _model("convnet", width=4), _data(6)
    training = TrainingConfig(algorithm="fedavg", batch_size=2, lr=0.1, momentum=momentum, weight_decay=weight_decay)
    steps = [np.array([4, 0]), np.array([5, 1]), np.array([2, 3])]
    obs, x, y = _observe(model, data, steps, training)
    private = copy.deepcopy(model).train()
    torch.func.replace_all_batch_norm_modules_(private)  # stateless BN, as the engine's copy
    params = {k: v.to(torch.float32) for k, v in obs.global_params.items()}
    # vmapped over two restarts holding the true data; hard labels and one-hot soft labels
    xs = torch.stack([x, x])
    deltas = torch.func.vmap(unrolled_delta, in_dims=(None, None, None, 0, None, None))(
        private, params, {}, xs, y, obs.schedule)
    soft = torch.func.vmap(unrolled_delta, in_dims=(None, None, None, 0, 0, None))(
        private, params, {}, xs, F.one_hot(y, 10).float().expand(2, -1, -1), obs.schedule)
    assert set(deltas) == set(obs.update)
    for name, real in obs.update.items():
        assert real.abs().max() > 0
        for r in range(2):
            torch.testing.assert_close(deltas[name][r], real, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(soft[name][r], real, rtol=1e-4, atol=1e-6)


def test_unrolled_delta_is_differentiable_in_the_images():
    model, data = _model("lenet"), _data(4)
    training = TrainingConfig(algorithm="fedavg", batch_size=2, lr=0.1)
    obs, x, y = _observe(model, data, [np.array([0, 1]), np.array([2, 3])], training)
    x = x.clone().requires_grad_(True)
    delta = unrolled_delta(obs.model, obs.global_params, {}, x, y, obs.schedule)
    (grad,) = torch.autograd.grad(sum(d.pow(2).sum() for d in delta.values()), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


# ----------------------------------------------------------------------------- batched restarts
def test_vmapped_restarts_equal_one_at_a_time_and_plain_autograd():
    # BatchNorm in train mode: each restart is normalised with its own batch statistics
    obs, x, y = _observe(_model("convnet", width=4), _data(2), [np.arange(2)],
                         TrainingConfig(algorithm="fedsgd", batch_size=2))
    problem = GIAProblem(obs, GIAConfig(labels="known"), "cpu")
    xs = torch.randn(3, *x.shape, generator=torch.Generator().manual_seed(1))
    batched, _ = problem.candidates(xs, y)
    for r in range(3):
        single, _ = problem.candidates(xs[r : r + 1], y)
        reference = copy.deepcopy(obs.model).train()
        loss = F.cross_entropy(reference(xs[r]), y)
        plain = torch.autograd.grad(loss, list(reference.parameters()))
        for b, s, p in zip(batched, single, plain):
            torch.testing.assert_close(b[r], s[0], rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(b[r], p, rtol=1e-4, atol=1e-6)
    # the true data reproduces the observed gradient exactly
    truth, _ = problem.candidates(x[None], y)
    for t, name in zip(truth, problem.names):
        torch.testing.assert_close(t[0], obs.update[name], rtol=1e-4, atol=1e-6)
    assert obs.model.features.bn0.running_mean is not None  # the observation's model is untouched


# ----------------------------------------------------------------------------- unknown schedule
def test_unknown_schedule_matches_minus_delta():
    model, data = _model("lenet"), _data(6)
    training = TrainingConfig(algorithm="fedavg", batch_size=2, lr=0.001)
    steps = [np.array([0, 1]), np.array([2, 3]), np.array([4, 5])]
    obs, x, y = _observe(model, data, steps, training, schedule=False)
    problem = GIAProblem(obs, GIAConfig(labels="known"), "cpu")
    assert problem.update_model == "unknown_schedule" and problem.objective == "cosine"
    cand, _ = problem.candidates(torch.stack([x, torch.randn_like(x)]), y)
    ours = cosine_distance(cand, problem.target)
    raw = cosine_distance(cand, [obs.update[n] for n in problem.names])  # breaching: no sign correction
    assert ours[0] < 0.005, "at the true data the sign-corrected objective is near its minimum 0"
    assert raw[0] > 1.99, "the uncorrected one is anti-aligned at the truth"
    assert ours[0] < ours[1]
    # l2 on an update of unknown scale switches to the scale-free l2, and says so
    switched = GIAProblem(obs, GIAConfig(labels="known", objective="l2"), "cpu")
    assert switched.objective == "scaled_l2" and "scaled_l2" in switched.notes[0]
    norm2 = sum(c[0].pow(2).sum() for c in cand)
    assert scaled_l2_distance(cand, switched.target)[0] < 0.02 * norm2  # = ||g||^2 sin^2(angle)
    torch.testing.assert_close(scaled_l2_distance(cand, [-t for t in switched.target])[0], norm2)  # s* = 0
    # with the scale granted (schedule known but ignored on purpose): g ~ -delta / (lr * steps)
    obs_s, _, _ = _observe(model, data, steps, training)
    scaled = GIAProblem(obs_s, GIAConfig(labels="known", objective="l2", schedule="unknown"), "cpu")
    assert scaled.objective == "l2"
    cand_truth = [c[:1] for c in cand]
    assert l2_distance(cand_truth, scaled.target)[0] < 0.01 * norm2  # -delta / (lr * steps) ~ the mean gradient


# ----------------------------------------------------------------------------- attacks
def test_dlg_lbfgs_recovers_a_planted_image_on_lenet():
    obs, x, y = _fedsgd("lenet", n=1)
    result = reconstruct(obs, preset("dlg", labels="known", iterations=12), device="cpu")
    truth = obs.to_pixels(x)
    start = obs.to_pixels(torch.randn(x.shape, generator=torch.Generator().manual_seed(0)))
    mse = float((obs.to_pixels(result.images) - truth).pow(2).mean())
    assert mse < 1e-3
    assert psnr(obs.to_pixels(result.images), truth)[0] > psnr(start, truth)[0] + 10
    assert result.update_model == "gradient" and result.labels.tolist() == y.tolist()
    assert result.trace.shape[1] == 2 and result.trace[-1, 1] < result.trace[0, 1]


def test_inverting_gradients_adam_improves_psnr_and_picks_the_best_restart():
    obs, x, y = _fedsgd("lenet", n=1, c=1, size=16)
    cfg = preset("inverting_gradients", labels="known", iterations=150, restarts=3, tv=1e-6)
    result = reconstruct(obs, cfg, device="cpu")
    truth = obs.to_pixels(x)
    start = obs.to_pixels(torch.randn(x.shape, generator=torch.Generator().manual_seed(0)))
    assert psnr(obs.to_pixels(result.images), truth)[0] > psnr(start, truth)[0] + 10
    assert len(result.restart_objectives) == 3 and result.trace.shape[1] == 4
    assert result.best_restart == int(np.argmin(result.restart_objectives))
    assert result.objective == min(result.restart_objectives)
    # the returned images are the best restart's: re-scoring them gives the reported objective
    _, again = GIAProblem(obs, cfg, "cpu").evaluate(result.images[None], y)
    assert float(again[0]) == pytest.approx(result.objective, rel=1e-3, abs=1e-6)


def test_known_schedule_fedavg_attack_runs_batched_and_descends():
    model, data = _model("lenet", c=1), _data(4, c=1)
    training = TrainingConfig(algorithm="fedavg", batch_size=2, lr=0.1)
    obs, x, _y = _observe(model, data, [np.array([0, 1]), np.array([2, 3])], training)
    result = reconstruct(obs, GIAConfig(labels="known", iterations=30, restarts=2, lr_schedule="none"), device="cpu")
    assert result.update_model == "known_schedule" and result.images.shape == x.shape
    assert (result.trace[-1, 1:] < result.trace[0, 1:]).all()


def test_joint_labels_are_optimised_as_soft_labels():
    obs, _x, y = _fedsgd("lenet", n=1, first=7, labels=False)
    assert y.tolist() == [7]
    result = reconstruct(obs, preset("dlg", iterations=12), device="cpu")
    assert result.soft_labels is not None and result.soft_labels.shape == (1, 10)
    torch.testing.assert_close(result.soft_labels.sum(-1), torch.ones(1))
    assert result.labels.tolist() == y.tolist()


def test_inferred_labels_come_from_the_label_module():
    obs, _x, y = _fedsgd("lenet", n=1, first=4, labels=False)
    result = reconstruct(obs, preset("idlg", iterations=1), device="cpu")
    assert result.labels.tolist() == y.tolist()


def test_bn_prior_is_zero_at_the_victim_statistics():
    model, data = _model("convnet", width=4), _data(2)
    x, _ = data.batch(np.arange(2))
    victim, captured = copy.deepcopy(model).train(), []  # the victim batch's BN statistics
    for m in victim.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.register_forward_hook(lambda mod, inp, out: captured.append(inp[0]))
    with torch.no_grad():
        victim(x)
    stats = [(t.mean((0, 2, 3)), t.var((0, 2, 3), unbiased=False)) for t in captured]
    obs, x, y = _observe(model, data, [np.arange(2)], TrainingConfig(algorithm="fedsgd", batch_size=2), bn_stats=stats)
    problem = GIAProblem(obs, GIAConfig(labels="known", bn=0.1, tv=0.0), "cpu")
    total, distance = problem.evaluate(torch.stack([x, torch.randn_like(x)]), y)
    bn_part = (total - distance) / 0.1
    assert bn_part[0] < 1e-4 and bn_part[1] > 1.0


# ----------------------------------------------------------------------------- threat model errors
def test_known_labels_need_the_threat_level():
    obs, _, _ = _fedsgd("lenet", labels=False)
    with pytest.raises(ValueError, match="attack.threat.labels"):
        reconstruct(obs, GIAConfig(labels="known", iterations=1), device="cpu")


def test_bn_prior_needs_bn_statistics():
    obs, _, _ = _fedsgd("lenet")
    with pytest.raises(ValueError, match="attack.threat.bn_statistics"):
        reconstruct(obs, preset("see_through_gradients", labels="known", iterations=1), device="cpu")


def test_missing_batch_size_raises():
    obs, _, _ = _fedsgd("lenet", num_examples=False)
    with pytest.raises(ValueError, match="number of samples"):
        reconstruct(obs, GIAConfig(labels="known", iterations=1), device="cpu")


def test_known_schedule_needs_the_schedule():
    model, data = _model("lenet"), _data(2)
    obs, _, _ = _observe(model, data, [np.arange(2)], TrainingConfig(batch_size=2), schedule=False)
    with pytest.raises(ValueError, match="attack.threat.schedule"):
        reconstruct(obs, GIAConfig(labels="known", schedule="known", iterations=1), device="cpu")


def test_presets_and_overrides():
    assert {"dlg", "idlg", "inverting_gradients", "see_through_gradients"} <= set(PRESETS)
    dlg = preset("dlg")
    assert (dlg.objective, dlg.optimizer, dlg.lr, dlg.labels, dlg.boxed, dlg.tv) == ("l2", "lbfgs", 1.0, "joint", False, 0)
    ig = preset("inverting_gradients", restarts=4)
    assert (ig.objective, ig.signed, ig.lr_schedule, ig.restarts) == ("cosine", True, "steps", 4)
    assert PRESETS["inverting_gradients"].restarts == 1  # the preset itself is not modified
    with pytest.raises(ValueError, match="available presets"):
        preset("nope")
    with pytest.raises(ValueError, match="iteratons"):
        preset("dlg", iteratons=5)
    with pytest.raises(ValueError, match="GIAConfig.objective"):
        GIAConfig(objective="l1")


def test_matching_only_some_parameters_uses_their_gradient_alone():
    """SoK Table III: the attacker may match one block's gradient; the rest of the update is ignored."""
    obs, x, y = _fedsgd("convnet", n=1)
    every = GIAProblem(obs, GIAConfig(labels="known"), "cpu")
    first = every.names[0].rsplit(".", 1)[0]
    part = GIAProblem(obs, GIAConfig(labels="known", parameters=(first,)), "cpu")
    assert part.names and all(n.startswith(first) for n in part.names) and len(part.names) < len(every.names)
    assert any("matching" in note and "%" in note for note in part.notes)
    candidates, _ = part.candidates(x.unsqueeze(0), y)
    assert len(candidates) == len(part.names)
    # the true images match the chosen part exactly (distance 0 up to rounding)
    assert float(cosine_distance(candidates, part.target)) < 1e-5
    with pytest.raises(ValueError, match="no parameter name starts with"):
        GIAProblem(obs, GIAConfig(labels="known", parameters=("features.nothing",)), "cpu")
    with pytest.raises(ValueError, match="list of parameter-name prefixes"):
        GIAConfig(parameters="features.0")
