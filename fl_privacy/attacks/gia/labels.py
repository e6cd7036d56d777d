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
(``llg.calibrate_scale``, our extension, not in the paper).

The model drifts during local training (the client fits its batch, the present
classes' probabilities rise), so the pseudo-gradient of many or large steps departs
from the single-gradient model above and the counts degrade; see the tests for the
regime where they stay exact.
"""

from __future__ import annotations

import torch

from fl_privacy.attacks.gia.llg import calibrate_scale, llg_counts, llg_impact, llg_plus_statistics
from fl_privacy.attacks.gia.options import GIAConfig
from fl_privacy.attacks.gia.output_layer import output_layer_gradient, schedule_scale
from fl_privacy.attacks.threat import Observation

__all__ = ["FEDAVG_LABEL_METHODS", "LABEL_METHODS", "infer_labels", "resolve_labels"]

LABEL_METHODS: tuple[str, ...] = ("idlg", "yin", "llg", "llg+")
"""Label inference from one (pseudo-)gradient of the output layer."""
FEDAVG_LABEL_METHODS: tuple[str, ...] = (*LABEL_METHODS, "fedavg")
"""Dimitrov's FedAvg attack also counts labels by simulating the local training (``fedavg_labels``)."""


def _check_num(num: object) -> int:
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"num must be an integer >= 1, got {num!r}")
    return int(num)


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
        labels = llg_counts(row_sums, num, llg_impact(row_sums, num, num_classes), None)
    else:  # llg+
        impact, offset = llg_plus_statistics(obs, num)
        offset = offset.to(row_sums.device)
        if obs.kind == "delta" and schedule_scale(obs) is None:
            # Unknown scale of the pseudo-gradient: bring it to the dummy units.
            row_sums = row_sums / calibrate_scale(row_sums, num, impact, offset)
        labels = llg_counts(row_sums, num, impact, offset)
    return torch.sort(torch.tensor(labels, dtype=torch.int64)).values


def resolve_labels(obs: Observation, cfg: GIAConfig, batch_size: int, device: torch.device) -> torch.Tensor | None:
    """The attack's hard labels (B,) as ``cfg.labels`` asks: "known" (granted), "infer"
    (``cfg.label_method``); None for "joint" (optimised with the images)."""
    if cfg.labels == "known":
        if obs.labels is None:
            raise ValueError(
                "GIAConfig.labels='known' but the threat model does not grant the victim's labels "
                "(attack.threat.labels); use labels='infer' or 'joint'"
            )
        labels = obs.labels.detach().reshape(-1).to(device, torch.long)
    elif cfg.labels == "infer":
        labels = torch.as_tensor(infer_labels(obs, batch_size, cfg.label_method)).reshape(-1).to(device, torch.long)
    else:
        return None
    if labels.numel() != batch_size:
        raise ValueError(f"got {labels.numel()} labels for a batch of {batch_size}")
    return labels
