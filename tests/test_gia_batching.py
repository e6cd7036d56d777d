"""GIA-O: victims batched into one problem give each victim its own result; the best iterate is
returned; early stopping stops a stalled restart and reports the iterations it used."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fl_privacy.attacks.gia import GIAConfig, preset, reconstruct
from fl_privacy.attacks.gia.engine import reconstruct_victims
from fl_privacy.attacks.gia.problem import GIAProblem
from fl_privacy.attacks.gia.stopping import BestIterate
from fl_privacy.config import TrainingConfig
from tests.test_gia_engine import _data, _model, _observe


def _victims(n: int, model_name: str = "lenet", c: int = 1, batch: int = 1):
    """``n`` FedSGD updates of different images of one global model (victim v holds images v*batch...)."""
    model, data = _model(model_name, c), _data(n * batch, c)
    training = TrainingConfig(algorithm="fedsgd", batch_size=batch)
    return [_observe(model, data, [np.arange(v * batch, (v + 1) * batch)], training) for v in range(n)]


@pytest.mark.parametrize("cfg", [
    preset("inverting_gradients", labels="known", iterations=25, restarts=2, tv=1e-4),
    preset("see_through_gradients", labels="known", iterations=20, restarts=1, bn=0.0),
    GIAConfig(labels="joint", objective="l2", signed=False, iterations=15, restarts=2, lr=0.05),
])
def test_victims_batched_equal_one_at_a_time(cfg):
    victims = _victims(3)
    together = reconstruct_victims([obs for obs, _, _ in victims], cfg, device="cpu")
    for (obs, _, _), batched in zip(victims, together):
        alone = reconstruct(obs, cfg, device="cpu")
        torch.testing.assert_close(batched.images, alone.images, rtol=1e-4, atol=1e-4)
        assert batched.restart_objectives == pytest.approx(alone.restart_objectives, rel=1e-4, abs=1e-6)
        assert batched.best_restart == alone.best_restart
        assert batched.labels.tolist() == alone.labels.tolist()
        np.testing.assert_allclose(batched.trace, alone.trace, rtol=1e-4, atol=1e-6)
    # different victims get different reconstructions (the targets are not mixed up)
    assert not torch.allclose(together[0].images, together[1].images)


def test_batched_distances_match_per_victim_problems():
    victims = _victims(2, batch=2)
    cfg = GIAConfig(labels="known")
    x = torch.randn(4, 2, 1, 16, 16)  # 2 victims x 2 restarts
    y = torch.stack([victims[0][2], victims[0][2], victims[1][2], victims[1][2]])
    _, both = GIAProblem([o for o, _, _ in victims], cfg, "cpu").evaluate(x, y)
    for v, (obs, _, labels) in enumerate(victims):
        _, alone = GIAProblem(obs, cfg, "cpu").evaluate(x[2 * v:2 * v + 2], labels)
        torch.testing.assert_close(both[2 * v:2 * v + 2], alone, rtol=1e-5, atol=1e-6)


def test_victims_of_different_models_are_refused():
    (a, _, _), = _victims(1)
    (b, _, _), = _victims(1, model_name="lenet", c=1)
    b = dataclasses.replace(b, global_params={k: v + 1 for k, v in b.global_params.items()})
    with pytest.raises(ValueError, match="same global model"):
        reconstruct_victims([a, b], GIAConfig(labels="known", iterations=1), device="cpu")


def test_best_iterate_is_returned_not_the_last():
    (obs, _, y), = _victims(1)
    # lr far too large: signed Adam oscillates, so the last iterate is worse than the best one seen
    cfg = preset("inverting_gradients", labels="known", iterations=30, lr=3.0, lr_schedule="none", tv=0.0)
    best = reconstruct(obs, cfg, device="cpu")
    last = reconstruct(obs, dataclasses.replace(cfg, return_iterate="last"), device="cpu")
    losses = best.trace[:, 1]
    assert best.objective == pytest.approx(float(np.min(losses)), rel=1e-5)  # tv=0: loss = distance
    assert best.objective < last.objective
    _, again = GIAProblem(obs, cfg, "cpu").evaluate(best.images[None], y)
    assert float(again[0]) == pytest.approx(best.objective, rel=1e-5)


def test_early_stopping_stops_a_stalled_run_and_reports_iterations():
    (obs, _, _), = _victims(1)
    # lr 1e-9: the loss does not move by 1e-3 relative, so the run stops after one window
    cfg = preset("inverting_gradients", labels="known", iterations=400, lr=1e-9, early_stop_window=20)
    result = reconstruct(obs, cfg, device="cpu")
    assert result.iterations == 400 and result.iterations_used <= 21 + BestIterate([torch.zeros(1)], 20).check_every
    assert any("early stopping" in n for n in result.notes)
    full = reconstruct(obs, preset("inverting_gradients", labels="known", iterations=40, lr=1e-9), device="cpu")
    assert full.iterations_used == 40


def test_early_stopping_freezes_one_restart_while_others_continue():
    x = torch.zeros(2, 3)
    tracker = BestIterate([x], window=3, tol=0.1)
    for it in range(6):
        before = [x.clone()]
        x += 1.0
        tracker.update(it, before, torch.tensor([5.0, 5.0 - it]))  # row 0 stalls, row 1 keeps improving
        tracker.freeze([x], before)
    assert tracker.active.tolist() == [False, True]
    assert tracker.used.tolist() == [4, 6]
    assert x.tolist() == [[3.0] * 3, [6.0] * 3]  # row 0 frozen where it stopped
    assert tracker.best_value.tolist() == [5.0, 0.0]


def _image_gradient(problem, x, y):
    x = x.clone().requires_grad_(True)
    total, distance = problem.evaluate(x, y)
    total.sum().backward()
    return total.detach(), x.grad


@pytest.mark.parametrize("model_name", ["convnet", "resnet18"])
def test_vmap_loop_and_lean_convolutions_give_the_same_iteration(model_name):
    from torch.utils.flop_counter import FlopCounterMode

    victims = _victims(2, model_name=model_name, c=3)
    observations = [o for o, _, _ in victims]
    x = torch.randn(4, 1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    y = torch.stack([victims[0][2], victims[0][2], victims[1][2], victims[1][2]])
    results, flops = {}, {}
    for batching in ("vmap", "loop"):
        for lean in (False, True):
            cfg = GIAConfig(labels="known", model_mode="eval", restarts=2, batching=batching, lean_convolutions=lean)
            problem = GIAProblem(observations, cfg, "cpu")
            # oneDNN's CPU kernels give vmap's first row a wrong image gradient on ConvNet (0.5% of its max,
            # against float64 autograd; the reason "auto" loops on a CPU): vmap is checked without them
            with FlopCounterMode(display=False) as counter, torch.backends.mkldnn.flags(enabled=batching == "loop"):
                results[batching, lean] = _image_gradient(problem, x, y)
            flops[batching, lean] = counter.get_total_flops()
    total, grad = results["vmap", False]
    for key, (t, g) in results.items():
        torch.testing.assert_close(t, total, rtol=1e-5, atol=1e-6, msg=f"{key}")
        torch.testing.assert_close(g, grad, rtol=1e-4, atol=1e-5 * float(grad.abs().max()), msg=f"{key}")
    # the lean double backward skips one weight-gradient convolution per layer
    assert flops["loop", True] < 0.95 * flops["loop", False]
