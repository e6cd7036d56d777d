"""Per-example membership signals of a model on labelled examples (x, y).

Every signal is oriented so that a HIGHER score means MORE LIKELY A MEMBER, so one
ROC convention serves all attacks. All are vectorized over a batch of logits and
computed in float64 from ``log_softmax`` (no ``log(0)`` for confident models).

Signals and where they come from:

* ``confidence``: the softmax probability of the TRUE class, ``p_y``. The seed paper
  (Li et al., "Trustworthiness of SGD in Distributed Learning", §2.3) only says its
  prediction MIA "analyzes the model's output probabilities" because models are more
  confident on training samples (citing Shokri et al. 2017); it does not say which
  probability. We follow the threshold form of Song & Mittal 2021 (Mconf, cited by
  the seed for its third attack) and Yeom et al. 2018: the true-class probability.
  ``max_confidence`` (label-free ``max_i p_i``) is offered for comparison.
* ``loss``: ``-CE(f(x), y) = log p_y`` (Yeom et al. 2018, "Privacy risk in ML:
  analyzing the connection to overfitting").
* ``entropy``: ``-H(p) = sum_i p_i log p_i`` (Song & Mittal 2021; label-free).
* ``modified_entropy``: ``-Mentr`` with Song & Mittal 2021 ("Systematic evaluation
  of privacy risks of ML models", USENIX Security), eq. for Mentr:
  ``Mentr(p, y) = -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i)``.
* ``logit_scaled_confidence``: ``phi = log(p_y / (1 - p_y))`` (Carlini et al. 2022,
  "Membership inference attacks from first principles", LiRA), computed stably as
  ``z_y - logsumexp_{i != y} z_i`` from the logits ``z``.

Note on the seed's "cross-entropy MIA": its text describes the cross-entropy between
the prediction and the true label, which for hard labels IS the loss; its citation
[11] (Song & Mittal) and the differing numbers in its Table 2 point to the
(modified) prediction entropy, so both ``entropy`` and ``modified_entropy`` exist here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from fl_privacy.attacks.mia.samples import LabelledSamples

ArrayLike = torch.Tensor | np.ndarray


def model_outputs(
    model: torch.nn.Module,
    data: LabelledSamples,
    indices: Sequence[int] | np.ndarray,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
    normalize: bool = True,
) -> torch.Tensor:
    """Logits (float32, on CPU, shape (len(indices), classes)) of ``model`` in eval mode.

    The model's train/eval mode is restored afterwards.
    """
    idx = np.asarray(indices, dtype=np.int64)
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for start in range(0, len(idx), batch_size):
                x, _ = data.batch(idx[start : start + batch_size], normalize=normalize, device=device)
                out.append(model(x).detach().float().cpu())
    finally:
        model.train(was_training)
    if not out:
        return torch.empty(0, data.num_classes)
    return torch.cat(out)


def _as_tensors(logits: ArrayLike, labels: ArrayLike | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    z = torch.as_tensor(logits).detach().to("cpu", torch.float64)
    if z.ndim != 2:
        raise ValueError(f"logits must be (N, classes), got shape {tuple(z.shape)}")
    if labels is None:
        return z, None
    y = torch.as_tensor(labels).detach().to("cpu", torch.int64).reshape(-1)
    if len(y) != len(z):
        raise ValueError(f"{len(z)} logits but {len(y)} labels")
    return z, y


def _log_rest(z: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """``log sum_{i != cls} softmax(z)_i = log(1 - p_cls)``, exact (no cancellation near p = 1)."""
    masked = z.scatter(1, cls[:, None], float("-inf"))
    return torch.logsumexp(masked, dim=1) - torch.logsumexp(z, dim=1)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.numpy().astype(np.float64, copy=False)


def confidence(logits: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """Softmax probability of the true class, ``p_y``."""
    z, y = _as_tensors(logits, labels)
    return _np(torch.log_softmax(z, 1).gather(1, y[:, None]).squeeze(1).exp())


def max_confidence(logits: ArrayLike, labels: ArrayLike | None = None) -> np.ndarray:
    """Largest softmax probability (label-free; Shokri et al. 2017's prediction vector, reduced)."""
    z, _ = _as_tensors(logits, None)
    return _np(torch.softmax(z, 1).max(1).values)


def loss(logits: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """Negative cross-entropy ``log p_y`` (Yeom et al. 2018): higher = lower loss = member-like."""
    z, y = _as_tensors(logits, labels)
    return _np(torch.log_softmax(z, 1).gather(1, y[:, None]).squeeze(1))


def entropy(logits: ArrayLike, labels: ArrayLike | None = None) -> np.ndarray:
    """Negative prediction entropy ``sum_i p_i log p_i`` (label-free; Song & Mittal 2021)."""
    z, _ = _as_tensors(logits, None)
    logp = torch.log_softmax(z, 1)
    return _np((logp.exp() * logp).sum(1))


def modified_entropy(logits: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """Negative modified entropy ``-Mentr`` (Song & Mittal 2021, §3.3).

    ``Mentr = -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i)``. ``log(1 - p_i)`` is
    exact for the arg-max class (the only one that can be close to 1) and uses
    ``log1p(-p_i)`` for the others (all ≤ 1/2, so no cancellation).
    """
    z, y = _as_tensors(logits, labels)
    logp = torch.log_softmax(z, 1)
    p = logp.exp()
    log1m = torch.log1p(-p.clamp(max=0.5))
    top = z.argmax(1)
    log1m = log1m.scatter(1, top[:, None], _log_rest(z, top)[:, None])
    log_py = logp.gather(1, y[:, None]).squeeze(1)
    p_y = p.gather(1, y[:, None]).squeeze(1)
    others = (p * log1m).scatter(1, y[:, None], 0.0).sum(1)
    mentr = -(1 - p_y) * log_py - others
    return _np(-mentr)


def logit_scaled_confidence(logits: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """LiRA's ``phi = log(p_y / (1 - p_y)) = z_y - logsumexp_{i != y} z_i`` (Carlini et al. 2022, §IV-A)."""
    z, y = _as_tensors(logits, labels)
    return _np(z.gather(1, y[:, None]).squeeze(1) - torch.logsumexp(z.scatter(1, y[:, None], float("-inf")), 1))


SCORES: dict[str, Callable[[ArrayLike, ArrayLike], np.ndarray]] = {
    "confidence": confidence,
    "max_confidence": max_confidence,
    "loss": loss,
    "entropy": entropy,
    "modified_entropy": modified_entropy,
    "logit_scaled_confidence": logit_scaled_confidence,
}
"""Signal name -> ``fn(logits, labels) -> np.ndarray`` (higher = more likely member)."""


def compute_score(name: str, logits: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """One named signal of ``SCORES``."""
    if name not in SCORES:
        raise ValueError(f"unknown score {name!r}; choices: {sorted(SCORES)}")
    return SCORES[name](logits, labels)
