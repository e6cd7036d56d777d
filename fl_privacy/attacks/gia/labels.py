"""Label inference from a client update (the output layer's gradient).

Everything here reads one matrix: the gradient of the mean cross-entropy with
respect to the weight ``W`` (C x F) of the output ``nn.Linear``. For a batch of B
samples with penultimate features ``h_k`` and softmax outputs ``p_k``

    dL/dW = (1/B) sum_k (p_k - onehot(y_k)) h_k^T,
    row sum g_c = (1/B) sum_k (p_kc - [y_k = c]) S_k,      S_k = sum_f h_kf.

With non-negative features (after ReLU / sigmoid) ``S_k >= 0``, so a class gets a
negative contribution exactly from the samples that carry it. The methods:

* ``idlg`` - Zhao, Mopuri, Bilen, "iDLG: Improved Deep Leakage from Gradients",
  arXiv:2001.02610, 2020. One sample: the true class is the only row with a negative
  sum; label = argmin_c g_c.
* ``yin`` - Yin, Mallya, Vahdat, Alvarez, Kautz, Molchanov, "See Through Gradients:
  Image Batch Recovery via GradInversion", CVPR 2021, section 3.2. The ``num``
  classes with the smallest row-wise minimum of dL/dW. **Assumes no repeated
  labels** in the batch (it returns ``num`` distinct classes; for num > C, which
  cannot be unique, the ranking is repeated - a fallback, not part of the method).
* ``llg`` / ``llg+`` - Wainakh, Ventola, Müßig, Keim, Garcia Cordero, Zimmer, Grube,
  Kersting, Mühlhäuser, "User-Level Label Leakage from Gradients in Federated
  Learning", PoPETs 2022 (arXiv:2105.09369), Algorithm 1 and its LLG+ variant, as in
  the authors' code (github.com/tklab-tud/LLG, ``Predictor.v1_prediction`` /
  ``v2_prediction``). Both use the row sums of the *weight* gradient (not the bias
  gradient; counting on the bias gradient is Geng et al. 2021's alternative). They
  return label *counts* (a multiset, repeats allowed):

  1. every class with g_c < 0 is present: add it once;
  2. (LLG+ only) subtract a per-class offset: g <- g - s;
  3. subtract the impact m (< 0) from the row of each class added in step 1;
  4. until ``num`` labels: add c = argmin g and set g_c <- g_c - m.

  LLG:  m = (sum_{c: g_c < 0} g_c / num) * (1 + 1/C), s = 0 - estimated from the
  observed gradient itself, hence scale-free (any positive rescaling of g rescales m
  alike and leaves the result unchanged).

  LLG+: m and s from the *current global model*. The paper feeds auxiliary batches
  of each class (``num`` samples, all labelled i); our server has no auxiliary data,
  so we feed dummy inputs drawn uniformly from the normalized pixel box (the authors'
  code has the same with zero / one / random dummy images, ``v3_prediction``). With
  ``G^(i)`` the row sums of the mean-CE output-weight gradient of the dummy set all
  labelled ``i``:

      m   = (1/C) sum_i G^(i)_i / num * (1 + 1/C)
      s_j = 1/(C-1) sum_{i != j} G^(i)_j

  (averaged over ``LLG_PLUS_BATCHES`` dummy batches, as the reference averages over
  n = 10 repetitions). Since the label does not change the forward pass, the labelled
  gradients ``G^(i)`` for all classes are taken on the same dummy inputs.

Multi-step FedAvg (``obs.kind == "delta"``): all methods run on the pseudo-gradient
``-delta / (lr * steps)`` (see ``output_layer_gradient``; REFERENCES.md, "FedAvg updates
and the batch schedule"). Its sign is what matters for iDLG / Yin / LLG: they are
scale-free (LLG estimates its impact from the same gradient, so a positive rescaling
of g rescales m alike and leaves the counts unchanged). LLG+ is not: its impact and
offsets are absolute magnitudes of a mean gradient. When the schedule (lr, steps) is
unknown the pseudo-gradient is ``-delta`` (unit divisor) and LLG+ first estimates the
unknown scale by fitting its own model ``g ~= alpha * (s + m * counts)``
(``_calibrate_scale``, our extension, not in the paper).

The model drifts during local training (the client fits its batch, the present
classes' probabilities rise), so the pseudo-gradient of many or large steps departs
from the single-gradient model above and the counts degrade; see the tests for the
regime where they stay exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from fl_privacy.attacks.threat import Observation

__all__ = ["LABEL_METHODS", "infer_labels", "output_layer_gradient"]

LABEL_METHODS: tuple[str, ...] = ("idlg", "yin", "llg", "llg+")

LLG_PLUS_BATCHES = 10
"""Dummy batches (each of the client's batch size) LLG+ averages over (the reference's n = 10)."""
LLG_PLUS_SEED = 0
"""Seed of the dummy inputs (and of dropout in the dummy pass): LLG+ is deterministic."""
CALIBRATION_GRID = 161
"""Grid points of LLG+'s scale search for deltas of unknown schedule (``_calibrate_scale``)."""


def _output_layer(obs: Observation) -> tuple[str, nn.Linear]:
    """(qualified name, module) of the last ``nn.Linear`` with ``out_features == num_classes``."""
    found: tuple[str, nn.Linear] | None = None
    for name, module in obs.model.named_modules():
        if isinstance(module, nn.Linear) and module.out_features == obs.num_classes:
            found = (name, module)
    if found is None:
        raise ValueError(
            f"the model has no nn.Linear with out_features == num_classes ({obs.num_classes}); "
            "label inference needs the output layer"
        )
    return found


def _key(prefix: str, leaf: str) -> str:
    return f"{prefix}.{leaf}" if prefix else leaf


def _schedule_scale(obs: Observation) -> float | None:
    """``lr * effective number of steps`` of the known schedule, or None when unknown.

    Plain SGD: ``delta = -lr * sum_t g_t``, so ``-delta / (lr * T)`` is the mean step
    gradient. With momentum mu (torch.optim.SGD: v_t = mu v_{t-1} + g_t) step ``s`` of
    ``T`` weighs ``(1 - mu^(T-s+1)) / (1 - mu)``; the divisor uses the sum of these weights.
    """
    schedule = obs.schedule
    if schedule is None or not schedule.steps or schedule.lr <= 0:
        return None
    steps = len(schedule.steps)
    mu = float(schedule.momentum)
    if mu:
        effective = sum((1 - mu**j) / (1 - mu) for j in range(1, steps + 1))
    else:
        effective = float(steps)
    return float(schedule.lr) * effective


def output_layer_gradient(obs: Observation) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pseudo-gradient of the output layer: (weight (C, F), bias (C,) or None).

    The output layer is the last ``nn.Linear`` of ``obs.model`` whose ``out_features``
    equals ``obs.num_classes``; its entries in ``obs.update`` are found by name.

    * ``kind == "gradient"``: the shared gradient itself.
    * ``kind == "delta"`` with a known schedule: ``g = -delta / (lr * steps)`` (momentum:
      the effective step count, see ``_schedule_scale``), minus ``weight_decay * w_global``
      (the decay term, approximated at the global weights), i.e. the mean gradient
      over the local steps for plain SGD.
    * ``kind == "delta"`` without a schedule: ``g = -delta`` (divisor 1). The sign is
      right (``g`` is a positive multiple of the mean step gradient for plain SGD),
      the scale is not: only scale-free methods (iDLG, Yin, LLG) are unaffected;
      LLG+ first estimates the missing scale (``_calibrate_scale``).

    Returned as float tensors, detached, on the update's device.
    """
    prefix, layer = _output_layer(obs)
    w_key, b_key = _key(prefix, "weight"), _key(prefix, "bias")
    if w_key not in obs.update:
        raise ValueError(
            f"the update has no entry {w_key!r} (the output layer's weight); "
            f"got keys such as {list(obs.update)[-4:]}"
        )
    weight = obs.update[w_key].detach().float()
    bias = obs.update[b_key].detach().float() if layer.bias is not None and b_key in obs.update else None
    if obs.kind == "gradient":
        return weight, bias
    if obs.kind != "delta":
        raise ValueError(f"unknown update kind {obs.kind!r}; expected 'gradient' or 'delta'")
    scale = _schedule_scale(obs)
    weight, bias = -weight, (-bias if bias is not None else None)
    if scale is None:
        return weight, bias
    weight, bias = weight / scale, (bias / scale if bias is not None else None)
    decay = float(obs.schedule.weight_decay) if obs.schedule is not None else 0.0
    if decay:
        if w_key in obs.global_params:
            weight = weight - decay * obs.global_params[w_key].detach().float().to(weight.device)
        if bias is not None and b_key in obs.global_params:
            bias = bias - decay * obs.global_params[b_key].detach().float().to(bias.device)
    return weight, bias


def _check_num(num: object) -> int:
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"num must be an integer >= 1, got {num!r}")
    return int(num)


def _llg_counts(row_sums: torch.Tensor, num: int, impact: float, offset: torch.Tensor | None) -> list[int]:
    """Wainakh et al., Algorithm 1 (stages 1 and 2) on ``row_sums`` with a given impact/offset."""
    g = row_sums.detach().double().clone()
    present = [int(c) for c in torch.nonzero(g < 0).flatten()]
    if len(present) > num:  # noise / multi-step drift: keep the most negative rows
        present = sorted(present, key=lambda c: float(g[c]))[:num]
    if offset is not None:
        g = g - offset.detach().double().to(g.device)
    labels = list(present)
    for c in present:
        g[c] -= impact
    while len(labels) < num:
        c = int(torch.argmin(g))
        labels.append(c)
        g[c] -= impact
    return labels


def _llg_impact(row_sums: torch.Tensor, num: int, num_classes: int) -> float:
    """LLG: m = (sum of negative row sums / num) * (1 + 1/C)."""
    negative = row_sums[row_sums < 0].double().sum()
    return float(negative / num * (1 + 1 / num_classes))


def _llg_plus_statistics(obs: Observation, num: int) -> tuple[float, torch.Tensor]:
    """LLG+ impact m and offsets s (C,) from dummy inputs through the current global model.

    The dummy pass mirrors the client: train mode (BatchNorm uses batch statistics, on
    copies of the buffers), batches of the client's batch size (``obs.batch_size``,
    else ``num``), ``LLG_PLUS_BATCHES`` of them, inputs uniform in ``obs.pixel_box``.
    Only the output weight requires a gradient, so each per-class gradient is a cheap
    backward through the last layer. Global RNG state is left untouched.
    """
    prefix, _ = _output_layer(obs)
    w_key = _key(prefix, "weight")
    num_classes = obs.num_classes
    some = next(iter(obs.global_params.values()))
    device = some.device
    params = {k: v.detach() for k, v in obs.global_params.items()}
    params[w_key] = params[w_key].clone().requires_grad_(True)
    chunk = obs.batch_size if obs.batch_size else num
    low, high = obs.pixel_box(device)
    generator = torch.Generator(device="cpu").manual_seed(LLG_PLUS_SEED)

    model = obs.model
    was_training = model.training
    model.train()
    logits = []
    try:
        cuda = device.type == "cuda"
        with torch.random.fork_rng(devices=[device] if cuda else []):
            # dropout, if any, in the dummy pass; only the forked generators are seeded
            torch.random.default_generator.manual_seed(LLG_PLUS_SEED)
            if cuda:
                with torch.cuda.device(device):
                    torch.cuda.manual_seed(LLG_PLUS_SEED)
            for _ in range(LLG_PLUS_BATCHES):
                u = torch.rand((chunk, *obs.image_shape), generator=generator).to(device)
                x = low + (high - low) * u
                buffers = {k: v.detach().clone() for k, v in obs.global_buffers.items()}
                logits.append(functional_call(model, (params, buffers), (x,)))
    finally:
        model.train(was_training)
    out = torch.cat(logits).float()
    total = len(out)

    # G[i] = row sums of the output-weight gradient of the dummy set, all labelled i.
    rows = []
    for i in range(num_classes):
        target = torch.full((total,), i, dtype=torch.long, device=device)
        (grad,) = torch.autograd.grad(F.cross_entropy(out, target), params[w_key], retain_graph=True)
        rows.append(grad.sum(dim=1).detach().double())
    G = torch.stack(rows)  # (C labelled, C rows)
    impact = float(torch.diagonal(G).mean() / num * (1 + 1 / num_classes))
    if num_classes > 1:
        offset = (G.sum(dim=0) - torch.diagonal(G)) / (num_classes - 1)
    else:
        offset = torch.zeros(1, dtype=torch.float64, device=device)
    return impact, offset


def _counts(labels: list[int], num_classes: int, device: torch.device) -> torch.Tensor:
    counts = torch.bincount(torch.tensor(labels, dtype=torch.long), minlength=num_classes)
    return counts.to(device=device, dtype=torch.float64)


def _calibrate_scale(row_sums: torch.Tensor, num: int, impact: float, offset: torch.Tensor) -> float:
    """Scale alpha > 0 of an update whose units are unknown, for LLG+ (our extension).

    LLG+ models the row sums as ``g ~= alpha * (s + m * n)`` with label counts ``n``.
    For each alpha on a log grid over [0.1, 10] x alpha_0 (``CALIBRATION_GRID`` points)
    the LLG+ counts ``n(alpha)`` of ``g / alpha`` are found, and the alpha with the
    smallest L1 residual ``|g - alpha * (s + m * n(alpha))|_1`` wins (L1: a few rows
    off the model, e.g. a present class hidden by a large offset, must not drag the
    fit). ``alpha_0`` = sum of the positive rows of ``g`` over the offsets of those rows
    (rows with g_c > 0 are mostly absent classes, where g_c = alpha * s_c), else the
    ratio of the LLG impact to the LLG+ impact.
    """
    g = row_sums.double()
    offset = offset.double()
    num_classes = len(g)
    llg = _llg_impact(g, num, num_classes)
    positive = g > 0
    denom = float(offset[positive].sum())
    alpha0 = float(g[positive].sum()) / denom if denom > 0 else (llg / impact if impact < 0 else 0.0)
    if not alpha0 > 0:
        alpha0 = llg / impact if impact < 0 and llg < 0 else 1.0
    best_err, best_alpha = float("inf"), alpha0
    for factor in torch.logspace(-1, 1, CALIBRATION_GRID, dtype=torch.float64).tolist():
        alpha = alpha0 * factor
        counts = _counts(_llg_counts(g / alpha, num, impact, offset), num_classes, g.device)
        fit = offset + impact * counts
        err = float((g - alpha * fit).abs().sum())
        if err < best_err:
            best_err, best_alpha = err, alpha
    return best_alpha


def infer_labels(obs: Observation, num: int, method: str = "llg+") -> torch.Tensor:
    """Infer the labels of the ``num`` samples behind ``obs.update``.

    Returns an int64 tensor of shape (num,), sorted ascending: the order carries no
    meaning, the result is a multiset of labels. ``method`` is one of ``LABEL_METHODS``
    (module docstring for formulas and papers):

    * ``idlg``: one sample (``num`` must be 1, else ValueError);
    * ``yin``: assumes no repeated labels, returns distinct classes while num <= C;
    * ``llg``, ``llg+`` (default): label counts, repeats allowed. LLG+ runs the global
      model on dummy inputs (deterministic, seeded; the global RNG is left untouched).

    For ``obs.kind == "delta"`` all methods work on the pseudo-gradient of
    ``output_layer_gradient``. Unknown ``method``: ValueError listing ``LABEL_METHODS``.
    """
    key = method.strip().lower() if isinstance(method, str) else method
    if key not in LABEL_METHODS:
        raise ValueError(f"unknown label inference method {method!r}; allowed methods: {list(LABEL_METHODS)}")
    num = _check_num(num)
    weight, _ = output_layer_gradient(obs)
    num_classes = weight.shape[0]
    row_sums = weight.double().sum(dim=1)

    if key == "idlg":
        if num != 1:
            raise ValueError(f"idlg infers the label of a single sample (num == 1), got num={num}; "
                             "use 'yin', 'llg' or 'llg+' for batches")
        labels = [int(torch.argmin(row_sums))]
    elif key == "yin":
        # Distinct classes by ascending row minimum; num > C cannot be unique labels, so
        # the ranking is repeated (a fallback, not part of the method).
        row_min = weight.double().min(dim=1).values
        order = [int(c) for c in torch.argsort(row_min, stable=True)]
        labels = [order[i % num_classes] for i in range(num)]
    elif key == "llg":
        labels = _llg_counts(row_sums, num, _llg_impact(row_sums, num, num_classes), None)
    else:  # llg+
        impact, offset = _llg_plus_statistics(obs, num)
        offset = offset.to(row_sums.device)
        if obs.kind == "delta" and _schedule_scale(obs) is None:
            # Unknown scale of the pseudo-gradient: bring it to the dummy units.
            row_sums = row_sums / _calibrate_scale(row_sums, num, impact, offset)
        labels = _llg_counts(row_sums, num, impact, offset)
    return torch.sort(torch.tensor(labels, dtype=torch.int64)).values
