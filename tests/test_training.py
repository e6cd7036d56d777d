"""Local training matches hand computations; schedules are deterministic and complete."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fl_privacy.config import TrainingConfig
from fl_privacy.data import ImageData
from fl_privacy.federation.training import batch_schedule, local_update
from fl_privacy.sgd import sgd_steps, split_state


def _data(n: int = 6) -> ImageData:
    rng = np.random.default_rng(0)
    return ImageData(
        name="toy", images=rng.integers(0, 256, (n, 1, 2, 2), dtype=np.uint8), labels=np.arange(n) % 3,
        classes=("a", "b", "c"), mean=(0.5,), std=(0.25,), source="test",
    )


def _linear() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))


def _hand_gradient(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
    """d mean-CE / d(W, b) for a linear softmax classifier: (softmax - onehot)^T x / B."""
    flat = x.reshape(len(x), -1)
    p = torch.softmax(flat @ w.T + b, dim=1)
    err = (p - torch.nn.functional.one_hot(y, 3).float()) / len(x)
    return err.T @ flat, err.sum(0)


def test_fedsgd_shares_the_batch_gradient():
    data, model = _data(), _linear()
    w, b = model[1].weight.detach().clone(), model[1].bias.detach().clone()
    cfg = TrainingConfig(algorithm="fedsgd", batch_size=4)
    steps = [np.array([0, 2, 3, 5])]
    result = local_update(model, data, steps, cfg)
    x, y = data.batch(steps[0])
    gw, gb = _hand_gradient(w, b, x, y)
    assert result.kind == "gradient" and result.num_examples == 4
    torch.testing.assert_close(result.shared["1.weight"], gw)
    torch.testing.assert_close(result.shared["1.bias"], gb)


def test_fedavg_runs_plain_sgd_steps():
    data, model = _data(), _linear()
    w, b = model[1].weight.detach().clone(), model[1].bias.detach().clone()
    cfg = TrainingConfig(algorithm="fedavg", batch_size=3, lr=0.5)
    steps = [np.array([0, 1, 2]), np.array([3, 4, 5])]
    result = local_update(model, data, steps, cfg)
    for idx in steps:
        x, y = data.batch(idx)
        gw, gb = _hand_gradient(w, b, x, y)
        w, b = w - 0.5 * gw, b - 0.5 * gb
    assert result.kind == "weights" and result.num_examples == 6
    torch.testing.assert_close(result.shared["1.weight"], w)
    torch.testing.assert_close(result.shared["1.bias"], b)


def test_sgd_steps_matches_torch_optim_with_momentum_and_weight_decay():
    data, model = _data(), _linear()
    params, buffers = split_state(model)
    batches = [data.batch([0, 1, 2]), data.batch([3, 4, 5]), data.batch([1, 4])]
    mine, _ = sgd_steps(model, params, buffers, batches, lr=0.1, momentum=0.9, weight_decay=0.01)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    for x, y in batches:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    for name, value in model.named_parameters():
        torch.testing.assert_close(mine[name], value.detach())


def test_unrolled_steps_are_differentiable_in_the_inputs():
    data, model = _data(), _linear()
    params, buffers = split_state(model)
    x, y = data.batch([0, 1, 2])
    x = x.clone().requires_grad_(True)
    out, _ = sgd_steps(model, params, buffers, [(x, y), (x, y)], lr=0.1, create_graph=True)
    (grad,) = torch.autograd.grad(out["1.weight"].sum(), x)
    assert grad.abs().sum() > 0


def test_schedule_fedavg_covers_each_epoch_and_is_deterministic():
    partition = np.arange(10, 30)
    cfg = TrainingConfig(algorithm="fedavg", batch_size=6, local_epochs=2)
    steps = batch_schedule(partition, cfg, seed=0, server_round=1, partition_id=4)
    assert [len(s) for s in steps] == [6, 6, 6, 2] * 2
    assert sorted(np.concatenate(steps[:4]).tolist()) == partition.tolist()
    again = batch_schedule(partition, cfg, seed=0, server_round=1, partition_id=4)
    assert all(np.array_equal(a, b) for a, b in zip(steps, again))
    other_round = batch_schedule(partition, cfg, seed=0, server_round=2, partition_id=4)
    assert not np.array_equal(steps[0], other_round[0])


def test_schedule_local_steps_and_drop_last():
    partition = np.arange(20)
    cfg = TrainingConfig(batch_size=6, local_epochs=3, drop_last=True, local_steps=4)
    steps = batch_schedule(partition, cfg, 0, 1, 0)
    assert [len(s) for s in steps] == [6, 6, 6, 6]
    fedsgd = batch_schedule(partition, TrainingConfig(algorithm="fedsgd", batch_size=5), 0, 1, 0)
    assert len(fedsgd) == 1 and len(np.unique(fedsgd[0])) == 5


def test_batch_larger_than_client_data_names_the_fix():
    with pytest.raises(ValueError, match="fewer than training.batch_size=64: lower the batch size"):
        batch_schedule(np.arange(10), TrainingConfig(batch_size=64), 0, 1, 3)
