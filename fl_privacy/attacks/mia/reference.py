"""Reference (shadow) models for membership inference.

Shokri et al. 2017 train shadow models that imitate the target on data from the same
distribution; LiRA (Carlini et al. 2022, §IV) and RMIA (Zarifzadeh et al. 2024,
"Low-Cost High-Power Membership Inference Attacks", ICML) train each reference
model on a random half of a reference pool, so every pool example is IN for some
models and OUT for others. Here models come in complementary pairs (model 2k trains
on a random half H of the pool, model 2k+1 on the pool minus H, as ML Privacy Meter
pairs them): with an even number of models each example is IN for exactly half.

The pool must be disjoint from the audited examples (offline attacks): then every
reference model is OUT for every audited example.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fl_privacy.attacks.mia.samples import LabelledSamples


def train_model(
    model: torch.nn.Module,
    data: LabelledSamples,
    indices: Sequence[int] | np.ndarray,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: str | torch.device = "cpu",
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    normalize: bool = True,
) -> torch.nn.Module:
    """Plain mini-batch SGD on the mean cross-entropy over ``data[indices]`` (normalized inputs).

    Each epoch visits the examples in a fresh permutation drawn from ``seed``; the
    model is returned in eval mode, on ``device``.
    """
    idx = np.asarray(indices, dtype=np.int64)
    if len(idx) == 0:
        raise ValueError("cannot train on an empty index set")
    model = model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)  # dropout
    for _ in range(epochs):
        order = idx[rng.permutation(len(idx))]
        for start in range(0, len(order), batch_size):
            x, y = data.batch(order[start : start + batch_size], normalize=normalize, device=device)
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    return model.eval()


def reference_halves(n_pool: int, n_models: int, seed: int) -> np.ndarray:
    """Boolean (n_models, n_pool) inclusion matrix: complementary random halves, pair by pair."""
    if n_models < 1:
        raise ValueError("n_models must be ≥ 1")
    if n_pool < 2:
        raise ValueError("the reference pool needs at least 2 examples")
    rng = np.random.default_rng(seed)
    include = np.zeros((n_models, n_pool), dtype=bool)
    for k in range(0, n_models, 2):
        half = rng.permutation(n_pool)[: n_pool // 2]
        include[k, half] = True
        if k + 1 < n_models:
            include[k + 1] = ~include[k]
    return include


def train_reference_models(
    model_factory: Callable[[], torch.nn.Module],
    data: LabelledSamples,
    pool_indices: Sequence[int] | np.ndarray,
    n_models: int,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: str | torch.device = "cpu",
    include: np.ndarray | None = None,
    **train_options: object,
) -> list[tuple[torch.nn.Module, np.ndarray]]:
    """Train ``n_models`` fresh models, each on a random half of ``pool_indices``.

    ``include`` optionally fixes the inclusion matrix (bool, (n_models, len(pool)),
    row i = which pool examples model i trains on); default ``reference_halves``.
    ``model_factory()`` builds a fresh model; model i's initialization and batch order
    come from ``SeedSequence([seed, i])`` (a stream distinct from a plain
    ``torch.manual_seed(seed)``, so a reference model does not silently share the
    target's initialization when both use seed 0). ``train_options`` go to
    ``train_model`` (momentum, weight_decay, normalize). Returns
    ``[(model, sorted dataset indices it trained on)]``.
    """
    pool = np.asarray(pool_indices, dtype=np.int64)
    if len(np.unique(pool)) != len(pool):
        raise ValueError("pool_indices has duplicates")
    if include is None:
        include = reference_halves(len(pool), n_models, seed)
    include = np.asarray(include, dtype=bool)
    if include.shape != (n_models, len(pool)):
        raise ValueError(f"include must have shape {(n_models, len(pool))}, got {include.shape}")
    models = []
    for i in range(n_models):
        model_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        torch.manual_seed(model_seed)
        model = model_factory()
        in_idx = np.sort(pool[include[i]])
        train_model(model, data, in_idx, epochs, batch_size, lr, model_seed, device,
                    **train_options)  # type: ignore[arg-type]
        models.append((model, in_idx))
    return models


def save_reference_models(models: list[tuple[torch.nn.Module, np.ndarray]], path: Path, meta: dict[str, Any]) -> None:
    """Write the models' state dicts, the indices each trained on and ``meta`` (plain values), atomically."""
    payload = {"meta": meta, "models": [
        {"state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
         "indices": torch.as_tensor(np.asarray(indices, dtype=np.int64))} for model, indices in models]}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_reference_models(
    path: Path, model_factory: Callable[[], torch.nn.Module], device: str | torch.device = "cpu",
) -> tuple[list[tuple[torch.nn.Module, np.ndarray]], dict[str, Any]]:
    """The models ``save_reference_models`` wrote (eval mode, on ``device``) and their ``meta``.

    Building the empty models draws no numbers from torch's global generator (it is forked), so
    loading leaves the random state exactly as training them earlier in the run left it."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    models = []
    with torch.random.fork_rng(devices=[]):
        for entry in payload["models"]:
            model = model_factory()
            model.load_state_dict(entry["state"])
            models.append((model.to(device).eval(), entry["indices"].numpy()))
    return models, payload["meta"]
