"""Build an attack's ``Observation`` from what the server recorded plus what the threat level grants.

Two sides meet here and stay apart: ``VictimTruth`` is the evaluator's ground
truth (images, labels, per-step indices), used for scoring and, only for the
items a threat level grants (labels, schedule, BN statistics), to derive that
knowledge. ``observe`` copies nothing else from it into the Observation.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call

from fl_privacy.attacks.threat import LocalTraining, Observation, Schedule
from fl_privacy.config import ExperimentConfig, ThreatConfig
from fl_privacy.data import ImageData
from fl_privacy.federation.recording import RecordedUpdate


@dataclass(frozen=True)
class VictimTruth:
    """Ground truth of one victim update: the evaluator's, never an attack's input."""

    images: torch.Tensor
    """(B, C, H, W) in the model's input space, ordered like ``np.unique`` of the step indices."""
    labels: torch.Tensor
    indices: np.ndarray
    """Dataset indices of the B samples (sorted)."""
    steps: list[np.ndarray]

    @classmethod
    def from_steps(cls, data: ImageData, steps: list[np.ndarray], normalize: bool) -> VictimTruth:
        indices = np.unique(np.concatenate(steps))
        images, labels = data.batch(indices, normalize=normalize)
        return cls(images=images, labels=labels, indices=indices, steps=steps)


def bn_batch_statistics(model: torch.nn.Module, params: dict, buffers: dict, x: torch.Tensor) -> list[tuple]:
    """(mean, var) of the input of every BatchNorm layer for batch ``x`` (See Through Gradients' prior)."""
    stats: list[tuple[torch.Tensor, torch.Tensor]] = []
    hooks = []
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            def hook(_m, inputs, _out):
                feature = inputs[0]
                dims = [d for d in range(feature.dim()) if d != 1]
                stats.append((feature.mean(dims).detach(), feature.var(dims, unbiased=False).detach()))
            hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            functional_call(model, ({**params}, {k: v.clone() for k, v in buffers.items()}), (x,))
    finally:
        for h in hooks:
            h.remove()
    return stats


def observe(
    recorded: RecordedUpdate,
    model: torch.nn.Module,
    data: ImageData,
    config: ExperimentConfig,
    truth: VictimTruth,
    threat: ThreatConfig | None = None,
) -> Observation:
    """The attack's view of ``recorded`` at the configured threat level."""
    threat = threat or config.attack.threat
    names = [n for n, _ in model.named_parameters()]
    params = {k: recorded.global_state[k] for k in names}
    buffers = {k: v for k, v in recorded.global_state.items() if k not in params}
    t = config.training
    schedule = None
    if threat.schedule and recorded.kind == "delta":
        schedule = Schedule.from_indices(truth.steps, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    bn = None
    if threat.bn_statistics:
        bn = bn_batch_statistics(model.train(), params, buffers, truth.images)
    batch = recorded.num_examples if recorded.kind == "gradient" else (t.batch_size if threat.schedule else None)
    return Observation(
        model=copy.deepcopy(model),
        global_params={k: v.clone() for k, v in params.items()},
        global_buffers={k: v.clone() for k, v in buffers.items()},
        update={k: v.clone() for k, v in recorded.update.items()},
        kind=recorded.kind,
        image_shape=data.shape,
        num_classes=data.num_classes,
        mean=data.mean,
        std=data.std,
        normalized=config.data.normalize,
        num_examples=recorded.num_examples if threat.num_examples else None,
        batch_size=batch if threat.num_examples else None,
        labels=truth.labels.clone() if threat.labels else None,
        schedule=schedule,
        bn_statistics=bn,
        aggregated_clients=_aggregated_clients(recorded),
        training=_sent_hyperparameters(config) if recorded.kind == "delta" else None,
    )


def _aggregated_clients(recorded: RecordedUpdate) -> int | None:
    """How many clients' updates ``recorded`` sums (secure-aggregation level), None for one client's update."""
    parts = recorded.metadata.get("aggregated_partitions")
    return None if parts is None else len(parts)


def _sent_hyperparameters(config: ExperimentConfig) -> LocalTraining:
    """What the server configured for FedAvg clients (it knows these; the batch order it does not)."""
    t = config.training
    return LocalTraining(lr=t.lr, epochs=t.local_epochs, batch_size=t.batch_size, local_steps=t.local_steps,
                         drop_last=t.drop_last, momentum=t.momentum, weight_decay=t.weight_decay)
