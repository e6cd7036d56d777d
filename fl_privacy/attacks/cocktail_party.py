"""Cocktail Party Attack: unmix the images behind an aggregated fully connected gradient.

Kariyappa, Guo, Maeng, Xiong, Suh, Qureshi, Lee, "Cocktail Party Attack: Breaking
Aggregation-Based Privacy in Federated Learning using Independent Component
Analysis", ICML 2023. For a first layer ``y = W x + b`` the weight gradient of a
batch (or of a sum of clients' batches) is ``dW = sum_i delta_i x_i^T``: each of its
rows is a linear mix of the n flattened inputs, so recovering them is blind source
separation. As the paper, we whiten the rows to n components and find the unmixing by
maximising non-Gaussianity (negentropy) of the sources: scikit-learn's FastICA with
the log-cosh negentropy approximation (Hyvaerinen and Oja 2000), without the paper's
total-variation prior.

ICA leaves each source's sign, scale and mean open. The bias gradient fixes them
without any ground truth: ``db = sum_i delta_i`` is the mixing matrix times ones, and
the row means of ``dW`` are the mixing matrix times the images' means (the relation
Phong et al. 2017 use to read one image from ``dW_j / db_j``). The evaluator still
reports the absolute correlation after optimal matching, which no sign/scale/offset
choice can change.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from fl_privacy.attacks.contract import AttackSpec
from fl_privacy.attacks.registry import register_attack
from fl_privacy.attacks.threat import Observation


@dataclass(frozen=True)
class CocktailPartyConfig:
    """What the attack does (``attack.gia.iterations`` overrides ``iterations``)."""

    iterations: int = 1000
    tolerance: float = 1e-4
    fun: str = "logcosh"
    seed: int = 0
    fit_on: str = "edges"
    """edges: learn the unmixing on the rows' pixel differences, apply it to the rows (sparser sources, a
    linear map of the same mix; our choice in place of the paper's total-variation prior); pixels: on the rows."""
    labels: str = "none"
    """The attack recovers no labels (kept so the shared pre-run checks read it like a GIA preset)."""
    label_method: str = "none"


@dataclass
class CocktailPartyResult:
    """The unmixed images (attack input space) and how FastICA ran."""

    images: torch.Tensor
    labels: torch.Tensor
    iterations: int
    seconds: float
    objective: float = float("nan")
    restart_objectives: list[float] = field(default_factory=list)
    trace: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    notes: list[str] = field(default_factory=list)

    @property
    def seconds_per_iteration(self) -> float:
        return self.seconds / max(self.iterations, 1)


def first_linear(model: torch.nn.Module) -> str:
    """Name of the first layer with parameters; ValueError unless it is fully connected."""
    for name, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            if not isinstance(module, torch.nn.Linear):
                raise ValueError(f"the Cocktail Party Attack needs a first layer that is fully connected; this "
                                 f"model's first layer {name!r} is a {type(module).__name__}: use model.name mlp")
            return name
    raise ValueError("the model has no parameters")


def cocktail_party(obs: Observation, cfg: CocktailPartyConfig) -> CocktailPartyResult:
    """Recover ``obs.num_examples`` images from the first linear layer's (aggregated) update."""
    from sklearn.decomposition import FastICA

    started = time.time()
    layer = first_linear(obs.model)
    n = obs.num_examples
    if n is None:
        raise ValueError("the Cocktail Party Attack needs the number of images: set attack.threat.num_examples=true")
    weight = obs.update[f"{layer}.weight"].detach().double().cpu().numpy()  # (units, pixels)
    if n > weight.shape[0]:
        raise ValueError(f"{n} images cannot be unmixed from a first layer of {weight.shape[0]} units (ICA needs "
                         f"at most as many sources as mixtures): raise model.width or lower the batch/clients")
    ica = FastICA(n_components=n, whiten="unit-variance", fun=cfg.fun, max_iter=cfg.iterations,
                  tol=cfg.tolerance, random_state=cfg.seed)
    fit_on = _edges(weight, obs.image_shape) if cfg.fit_on == "edges" else weight
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ica.fit(fit_on.T)
    notes = [str(w.message) for w in caught]
    centered = weight - weight.mean(axis=1, keepdims=True)
    sources = centered.T @ ica.components_.T  # (pixels, n): centered sources
    mixing = np.linalg.pinv(ica.components_)  # (units, n): centered rows of the weight update = mixing @ sources.T
    bias = obs.update.get(f"{layer}.bias")
    if bias is None:
        notes.append("no bias gradient: sign, scale and brightness of each image are left as ICA returns them")
        images = sources / np.abs(sources).max(axis=0, keepdims=True)
    else:
        images = _fix_sign_scale_mean(sources, mixing, weight, bias.detach().double().cpu().numpy())
    shape = obs.image_shape
    out = torch.as_tensor(images.T.reshape(n, *shape), dtype=torch.float32)
    return CocktailPartyResult(images=out, labels=torch.zeros(0, dtype=torch.long), iterations=int(ica.n_iter_),
                               seconds=time.time() - started, notes=notes)


def _edges(weight: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Horizontal and vertical pixel differences of every row: a linear map, so the mix is unchanged,
    but the sources become sparse (far from Gaussian), which is what ICA separates best."""
    rows = weight.reshape(weight.shape[0], *shape)
    dx = np.diff(rows, axis=3).reshape(len(rows), -1)
    dy = np.diff(rows, axis=2).reshape(len(rows), -1)
    return np.concatenate([dx, dy], axis=1)


def _fix_sign_scale_mean(sources: np.ndarray, mixing: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Undo ICA's per-source factor c: sources = c * centered images, mixing = deltas / c.

    ``db = deltas @ 1 = mixing @ c`` gives c; ``rowmean(dW) = deltas @ image_means`` gives the means.
    """
    factor, *_ = np.linalg.lstsq(mixing, bias, rcond=None)
    factor = np.where(np.abs(factor) > 1e-12, factor, 1e-12)
    deltas = mixing * factor
    means, *_ = np.linalg.lstsq(deltas, weight.mean(axis=1), rcond=None)
    return sources / factor + means


def matched_correlation(recon: torch.Tensor, truth: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """|Pearson correlation| of each truth image with its best reconstruction (Hungarian on |corr|).

    Invariant to each reconstruction's sign, scale and offset, which ICA cannot identify. Returns
    (correlations per truth image, perm with recon[perm[i]] <-> truth[i]).
    """
    from scipy.optimize import linear_sum_assignment

    a = recon.reshape(len(recon), -1).double()
    b = truth.reshape(len(truth), -1).double()
    a = (a - a.mean(1, keepdim=True)) / a.std(1, keepdim=True).clamp_min(1e-12)
    b = (b - b.mean(1, keepdim=True)) / b.std(1, keepdim=True).clamp_min(1e-12)
    corr = (b @ a.T).abs().numpy() / (a.shape[1] - 1)  # (truth, recon)
    rows, cols = linear_sum_assignment(-corr)
    perm = np.empty(len(truth), dtype=int)
    perm[rows] = cols
    return corr[rows, cols][np.argsort(rows)], perm


def cocktail_party_options(**overrides: object) -> CocktailPartyConfig:
    """The attack's options; an unknown field is a ``ValueError`` naming the allowed ones."""
    known = {f.name for f in fields(CocktailPartyConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown CocktailPartyConfig field(s) {unknown}; fields: {sorted(known)}")
    return CocktailPartyConfig(**overrides)  # type: ignore[arg-type]


def _reconstruct(obs: Observation, cfg: CocktailPartyConfig, device: torch.device | str | None,
                 progress: bool, /) -> CocktailPartyResult:
    return cocktail_party(obs, cfg)  # FastICA runs on the CPU, without a progress bar


register_attack(AttackSpec(
    name="cocktail_party", family="aggregate", options=cocktail_party_options, reconstruct=_reconstruct,
    summary="unmixes a first fully connected layer's (aggregated) gradient (Kariyappa et al. 2023)",
    options_fields=tuple(f.name for f in fields(CocktailPartyConfig)),
))
