"""Known-schedule FedAvg: re-run the client's local SGD on dummy data, differentiably.

At the "known batch schedule" threat level the server knows the client's lr,
momentum, weight decay and which of its samples (by position) went into every
local step, in order (``Schedule``). It re-runs exactly that local training on
the dummy batch with the client's own implementation
(``fl_privacy.sgd.sgd_steps``) and matches ``w_after - w_before`` to the
received ``delta`` (breaching's ``UserMultiStep``, Geiping et al.'s
``FedAvgReconstructor``). Because the code is the client's, the unrolled delta
equals the real one for the true data and labels (a test checks it).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from fl_privacy.attacks.threat import Schedule
from fl_privacy.sgd import sgd_steps

Tensors = dict[str, torch.Tensor]


@lru_cache(maxsize=32)
def _positions(steps: tuple[tuple[int, ...], ...], device: str) -> tuple[torch.Tensor, ...]:
    """Index tensors of every step, built once per (schedule, device): no host copies in the loop."""
    return tuple(torch.tensor(step, dtype=torch.long, device=device) for step in steps)


def step_positions(schedule: Schedule, device: torch.device | str) -> tuple[torch.Tensor, ...]:
    """The positions of every local step as index tensors on ``device``."""
    if not schedule.steps or any(len(s) == 0 for s in schedule.steps):
        raise ValueError("the schedule must have at least one step and no empty step")
    return _positions(schedule.steps, str(torch.device(device)))


def unrolled_delta(
    model: torch.nn.Module,
    params: Tensors,
    buffers: Tensors,
    x: torch.Tensor,
    y: torch.Tensor,
    schedule: Schedule,
) -> Tensors:
    """``w_after - w_before`` of the client's local SGD run on ``(x, y)``.

    ``x``: the whole dummy set ``(N, C, H, W)``, indexed by the schedule's
    positions; ``y``: class ids ``(N,)`` or soft-label probability rows
    ``(N, K)``. Same lr, momentum, weight decay, mini-batch partition and order
    as the client. Differentiable w.r.t. ``x`` (and soft ``y``) through every
    step, and vmappable over a leading restart dimension of ``x``/``y``: the
    gradients come from ``torch.func.grad`` inside ``sgd_steps``. Under vmap in
    train mode the model's BatchNorm layers must not track running statistics
    (``torch.func.replace_all_batch_norm_modules_``; BatchNorm's train-mode output
    depends only on the batch, so the delta is unchanged); outside vmap they
    update ``buffers`` in place, as on the client.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
    top = max(p for step in schedule.steps for p in step)
    if top >= x.shape[0]:
        raise ValueError(f"the schedule uses position {top} but only {x.shape[0]} samples were given")
    batches = [(x.index_select(0, idx), y.index_select(0, idx)) for idx in step_positions(schedule, x.device)]
    after, _ = sgd_steps(
        model, params, buffers, batches, schedule.lr, schedule.momentum, schedule.weight_decay, create_graph=True
    )
    return {k: after[k] - params[k] for k in params}
