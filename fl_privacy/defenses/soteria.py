"""Soteria: prune the representation layer's gradient (Sun et al., CVPR 2021; "PLD" in Wang et al.).

Sun, Li, Wang, Zhang, Chen, Li, "Soteria: Provable Defense against Privacy Leakage in
Federated Learning from Representation Perspective", CVPR 2021. Wang et al. (GradDefense,
sec. 6.A-B) uses it as the "PLD" baseline with pruning rates 60% (DGA) and 80% (GIA).

The representation ``r = h(x)`` is the input of the first ``nn.Linear`` of
``model.classifier`` (the flattened output of ``model.features``, after whatever
classifier modules precede that Linear). The gradient of that layer's weight is
``dL/dW = sum_i delta_i r_i^T``, so column ``f`` carries feature ``r_f``. Soteria removes
the features whose removal (``r_f -> 0``) moves the input an attacker would reconstruct the
most, to first order ``|r_f| / ||d r_f / d x||`` -- i.e. the lowest values of the score
used by the reference code (REFERENCES.md: GradDefense's ``fc_perturb``)

    score_f = sum_i || d r_f(x_i) / d x_i ||_2 / (|r_f(x_i)| + 0.1)

and zeroes the columns of ``dL/dW`` with the lowest scores. The reference divides by
``r_f + 0.1``; ``|r_f|`` is identical for non-negative representations (ReLU, sigmoid,
max-pool) and avoids a sign flip or division by ~0 for signed ones (tanh, no activation).

Number pruned: ``k = floor(pruning_rate * F + 1/2)`` (round half up) of the ``F`` features,
those with the k lowest scores (ties: lower index first). The reference's
``np.percentile`` threshold with a strict ``<`` prunes ``ceil(rate * (F - 1))`` for distinct
scores -- the same up to one feature.

Scores are computed on the *global* model (``context.model``) with the client's own
samples, one sample at a time (see :func:`fl_privacy.defenses.graddefense_sensitivity.per_sample_model`:
in training mode BatchNorm uses the sample's own statistics and no running statistics are
touched; dropout off). ``d r / d x_i`` is the full ``F x D`` Jacobian row block, obtained as
F vector-Jacobian products with the one-hot basis, batched by ``jacrev`` (chunked) and
``vmap`` over samples: cost ~ B * F backward passes of the feature extractor (exact; the
same work as the reference's per-feature loop, without the Python loop), memory bounded
by chunking to ~1M Jacobian floats (rows x input size) per batched backward. ``probes=m``
trades exactness for m forward-mode products per sample (:func:`feature_scores`).

Works for ``kind`` "gradient" (FedSGD) and "delta" (FedAvg ``w_local - w_global``): the same
columns of the update are zeroed. All other tensors are returned unchanged.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import nn
from torch.func import jacrev, jvp, vmap

from fl_privacy.defenses.base import Defense, DefenseContext, Update, register_defense
from fl_privacy.defenses.graddefense_sensitivity import per_sample_model
from fl_privacy.defenses.params import DefenseParams, Number

EPS = 0.1
"""Added to |r_f| in the score's denominator (Soteria reference code)."""
_JACOBIAN_BUDGET = 1 << 20
"""Jacobian floats (rows x input size) per batched backward: bounds memory (~0.8 GB peak for a ConvNet-32)."""


def representation_layer(model: nn.Module) -> tuple[str, list[nn.Module]]:
    """Name of the weight of the first Linear in ``model.classifier`` and the modules before it."""
    classifier = getattr(model, "classifier", None)
    if not isinstance(classifier, nn.Sequential):
        raise TypeError("soteria needs a model whose 'classifier' is an nn.Sequential")
    prefix: list[nn.Module] = []
    for child_name, child in classifier.named_children():
        if isinstance(child, nn.Linear):
            return f"classifier.{child_name}.weight", prefix
        prefix.append(child)
    raise ValueError("soteria: model.classifier has no nn.Linear child")


def feature_scores(
    model: nn.Module,
    inputs: torch.Tensor,
    eps: float = EPS,
    probes: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``score_f = sum_i ||d r_f(x_i)/d x_i|| / (|r_f(x_i)| + eps)`` for every representation feature.

    ``probes=None``: exact, the ``F x D`` Jacobian of each sample by F vector-Jacobian
    products (``jacrev`` over the one-hot basis, chunked). ``probes=m``: unbiased
    estimate of each squared row norm from m forward-mode products with Gaussian
    directions, ``||J_f||^2 = E[(J v)_f^2]`` for ``v ~ N(0, I)`` (relative error ~
    ``sqrt(2/m)`` per feature), m JVPs instead of F VJPs per sample; directions drawn
    from ``generator``.
    """
    fmodel = per_sample_model(model)
    _, prefix = representation_layer(fmodel)
    head = nn.Sequential(*prefix)

    def representation(x: torch.Tensor) -> torch.Tensor:
        return head(fmodel.features(x.unsqueeze(0))).reshape(-1)

    if probes is not None:
        directions = torch.randn(
            inputs.shape[0], probes, *inputs.shape[1:], generator=generator,
            device=generator.device if generator is not None else "cpu",
        ).to(device=inputs.device, dtype=inputs.dtype)

        def estimated(x: torch.Tensor, vs: torch.Tensor) -> torch.Tensor:
            r, jv = vmap(lambda v: jvp(representation, (x,), (v,)))(vs)  # (m, F) each
            return jv.pow(2).mean(dim=0).sqrt() / (r[0].abs() + eps)

        return vmap(estimated, chunk_size=1)(inputs, directions).sum(dim=0)

    with torch.no_grad():
        num_features = representation(inputs[0]).numel()
    rows = max(1, min(num_features, _JACOBIAN_BUDGET // max(1, inputs[0].numel())))

    def exact(x: torch.Tensor) -> torch.Tensor:
        jac, r = jacrev(lambda z: (representation(z),) * 2, has_aux=True, chunk_size=rows)(x)
        return jac.reshape(num_features, -1).norm(dim=1) / (r.abs() + eps)

    return vmap(exact, chunk_size=1)(inputs).sum(dim=0)


def pruned_features(scores: torch.Tensor, pruning_rate: float) -> torch.Tensor:
    """Indices of the ``floor(rate * F + 1/2)`` lowest scores (stable: ties by index)."""
    count = math.floor(pruning_rate * scores.numel() + 0.5)
    return torch.argsort(scores, stable=True)[:count]


@register_defense
class Soteria(Defense):
    """Zero the representation layer's weight-gradient columns with the lowest Soteria scores.

    ``pruning_rate`` in [0, 1), default 0.6 (Wang et al.'s PLD setting against DGA; 0.8 against
    GIA). ``probes``: None (default) = exact scores; an integer m = estimate them with m
    random forward-mode probes per sample (much cheaper for large F, see
    :func:`feature_scores`; directions from ``context.generator``). ``max_samples`` (default 32):
    the scores sum over at most this many of the client's samples, drawn with the generator;
    a FedSGD batch up to that size uses all of it, a FedAvg client with thousands of samples
    gets the ranking from a random subset instead of hours of Jacobians (None = all).
    """

    name = "soteria"
    reads_private_data = True  # it reads the client's batch (scores / sensitivities)

    class Params(DefenseParams):
        pruning_rate: Number = Field(default=0.6, ge=0, lt=1)
        probes: int | None = Field(default=None, ge=1, description="None: exact; else Hutchinson probes.")
        max_samples: int | None = Field(default=32, ge=1, description="None: the whole batch.")

    def __init__(self, *, pruning_rate: float = 0.6, probes: int | None = None, max_samples: int | None = 32) -> None:
        p = self.validate(pruning_rate=pruning_rate, probes=probes, max_samples=max_samples)
        pruning_rate = p.pruning_rate
        super().__init__(pruning_rate=pruning_rate, probes=probes, max_samples=max_samples)
        self.pruning_rate = pruning_rate
        self.probes = probes
        self.max_samples = max_samples

    def apply(self, update: Update, context: DefenseContext) -> Update:
        if context.model is None or context.inputs is None:
            raise ValueError("soteria needs context.model (the global model) and context.inputs")
        key, _ = representation_layer(context.model)
        if key not in update:
            raise KeyError(f"soteria: the update has no '{key}' (the representation layer's weight)")
        inputs = context.inputs
        if self.max_samples is not None and len(inputs) > self.max_samples:
            chosen = torch.randperm(len(inputs), generator=context.generator)[: self.max_samples]
            inputs = inputs[chosen.to(inputs.device)]
        scores = feature_scores(context.model, inputs, probes=self.probes, generator=context.generator)
        drop = pruned_features(scores, self.pruning_rate).to(update[key].device)
        out = dict(update)
        weight = update[key].clone()
        weight[:, drop] = 0
        out[key] = weight
        return out
