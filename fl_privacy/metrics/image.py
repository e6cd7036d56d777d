"""Reconstruction-quality metrics for gradient inversion attacks.

Conventions: images are float tensors in [0, 1] pixel space (callers de-normalize
first), shape (B, C, H, W). Every per-image metric returns a float64 numpy array of
length B so callers can report per victim sample or average themselves.

Attacks recover a batch in arbitrary order, so `score_reconstruction` first finds
the optimal one-to-one assignment between reconstructions and ground truth and
scores matched pairs; otherwise a perfect but shuffled reconstruction would score
as a failure.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from skimage.metrics import structural_similarity
from torch import Tensor

if TYPE_CHECKING:
    from fl_privacy.metrics.lpips_metric import LpipsMetric

__all__ = [
    "label_accuracy",
    "match_batch",
    "mse",
    "psnr",
    "score_reconstruction",
    "ssim",
    "ssim_uniform7",
]

_MATCH_COSTS = ("mse", "ssim", "lpips")


def _as_images(x: Tensor, name: str) -> Tensor:
    """Detached float64 CPU copy, validated as (B, C, H, W); float64 keeps tiny MSEs exact."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got {tuple(x.shape)}")
    return x.detach().to("cpu", torch.float64)


def _check_pair(recon: Tensor, truth: Tensor) -> tuple[Tensor, Tensor]:
    r, t = _as_images(recon, "recon"), _as_images(truth, "truth")
    if r.shape != t.shape:
        raise ValueError(
            f"shape mismatch: recon {tuple(r.shape)} vs truth {tuple(t.shape)}"
        )
    return r, t


def mse(recon: Tensor, truth: Tensor) -> np.ndarray:
    """Per-image mean squared error over all pixels and channels."""
    r, t = _check_pair(recon, truth)
    return (r - t).pow(2).flatten(1).mean(dim=1).numpy()


def psnr(recon: Tensor, truth: Tensor, data_range: float = 1.0) -> np.ndarray:
    """Per-image PSNR in dB, 10*log10(data_range**2 / MSE).

    Identical images give `inf` (MSE 0); this is deliberately not capped so a
    perfect leak is unambiguous. Averaging code should exclude or count infinite
    values (see `score_reconstruction`). Computed from `mse` rather than
    skimage's psnr so the two metrics agree exactly and the zero case is silent.
    """
    err = mse(recon, truth)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(float(data_range) ** 2 / err)


SSIM_WINDOWS = ("gaussian11", "uniform7")
"""``gaussian11``: Wang et al. 2004's 11x11 Gaussian window (sigma 1.5, population covariance), what the
papers report and the default; ``uniform7``: skimage's default 7x7 uniform window with sample covariance."""
DEFAULT_SSIM_WINDOW = "gaussian11"


def _ssim_win_size(h: int, w: int, window: str = DEFAULT_SSIM_WINDOW) -> int:
    """The window side (11 Gaussian or 7 uniform), shrunk to the largest odd size that fits tiny images.

    For the Gaussian window skimage's filter stays 11-tap (truncate 3.5, reflected borders); only the
    border crop shrinks, so 28x28 and 32x32 images are scored exactly as skimage does."""
    if window not in SSIM_WINDOWS:
        raise ValueError(f"unknown SSIM window {window!r}; expected one of {SSIM_WINDOWS}")
    side = min(h, w, 11 if window == "gaussian11" else 7)
    if side % 2 == 0:
        side -= 1
    if side < 3:
        raise ValueError(
            f"images of {h}x{w} are too small for SSIM (need at least 3x3)"
        )
    return side


def _ssim_pair(a: np.ndarray, b: np.ndarray, win_size: int, window: str = DEFAULT_SSIM_WINDOW) -> float:
    """SSIM of two (H, W, C) float64 images in [0, 1]."""
    if window == "gaussian11":
        return float(structural_similarity(
            a, b, win_size=win_size, data_range=1.0, channel_axis=-1,
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        ))
    return float(
        structural_similarity(a, b, win_size=win_size, data_range=1.0, channel_axis=-1)
    )


def _to_hwc(x: Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def ssim(recon: Tensor, truth: Tensor, window: str = DEFAULT_SSIM_WINDOW) -> np.ndarray:
    """Per-image SSIM via skimage (data_range=1, channels averaged); 1.0 means identical.

    Default ``gaussian11``: the 11x11 Gaussian window (sigma 1.5, ``use_sample_covariance=False``) of
    Wang et al. 2004, which the gradient-inversion papers report; ``uniform7`` is skimage's default
    7x7 uniform window (see ``ssim_uniform7``).
    """
    r, t = _check_pair(recon, truth)
    win = _ssim_win_size(*r.shape[-2:], window)
    rn, tn = _to_hwc(r), _to_hwc(t)
    return np.array(
        [_ssim_pair(rn[i], tn[i], win, window) for i in range(rn.shape[0])], dtype=np.float64
    )


def ssim_uniform7(recon: Tensor, truth: Tensor) -> np.ndarray:
    """Per-image SSIM with skimage's default 7x7 uniform window (the values this tool reported before)."""
    return ssim(recon, truth, window="uniform7")


def _pairwise_mse(r: Tensor, t: Tensor) -> np.ndarray:
    """(B, B) matrix of MSE(recon[i], truth[j]) via one cdist call (float64, exact mode)."""
    rf, tf = r.flatten(1), t.flatten(1)
    d2 = torch.cdist(rf, tf, p=2.0, compute_mode="donot_use_mm_for_euclid_dist").pow(2)
    return (d2 / rf.shape[1]).numpy()


def _pairwise_ssim(r: Tensor, t: Tensor) -> np.ndarray:
    """(B, B) matrix of SSIM(recon[i], truth[j]); B^2 skimage calls, fine for attack-sized batches."""
    win = _ssim_win_size(*r.shape[-2:])
    rn, tn = _to_hwc(r), _to_hwc(t)
    out = np.empty((rn.shape[0], tn.shape[0]), dtype=np.float64)
    for i in range(rn.shape[0]):
        for j in range(tn.shape[0]):
            out[i, j] = _ssim_pair(rn[i], tn[j], win)
    return out


def match_batch(
    recon: Tensor,
    truth: Tensor,
    cost: str = "mse",
    *,
    lpips_metric: LpipsMetric | None = None,
) -> np.ndarray:
    """Optimal one-to-one matching of reconstructions to ground truth (Hungarian algorithm).

    Returns `perm` (int64, length B) such that `recon[perm[i]]` is matched to
    `truth[i]`. `cost` is "mse", "ssim" (cost 1 - SSIM) or "lpips" (uses
    `lpips_metric`, or builds the default AlexNet one, raising LpipsUnavailable
    when its weights are not cached). Batch sizes must be equal.
    """
    r, t = _as_images(recon, "recon"), _as_images(truth, "truth")
    if r.shape[0] != t.shape[0]:
        raise ValueError(
            f"batch size mismatch: recon has {r.shape[0]} images, truth has {t.shape[0]}"
        )
    if r.shape[1:] != t.shape[1:]:
        raise ValueError(
            f"image shape mismatch: recon {tuple(r.shape[1:])} vs truth {tuple(t.shape[1:])}"
        )
    if cost == "mse":
        c = _pairwise_mse(r, t)
    elif cost == "ssim":
        c = 1.0 - _pairwise_ssim(r, t)
    elif cost == "lpips":
        if lpips_metric is None:
            from fl_privacy.metrics.lpips_metric import LpipsMetric

            lpips_metric = LpipsMetric()
        c = np.asarray(lpips_metric.pairwise(recon, truth), dtype=np.float64)
    else:
        raise ValueError(
            f"unknown matching cost {cost!r}; expected one of {_MATCH_COSTS}"
        )
    # Diverged attacks can emit NaN/inf images; make them the worst possible match
    # instead of letting linear_sum_assignment reject the whole matrix.
    bad = ~np.isfinite(c)
    if bad.any():
        finite = c[~bad]
        c = np.where(bad, (finite.max() if finite.size else 0.0) + 1.0, c)
    # Rows = reconstructions, columns = truth; square, so every truth gets one recon.
    rows, cols = linear_sum_assignment(c)
    perm = np.empty(t.shape[0], dtype=np.int64)
    perm[cols] = rows
    return perm


def _labels_1d(x: Tensor | np.ndarray | list, name: str) -> list[int]:
    arr = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D class indices, got shape {arr.shape}")
    return [int(v) for v in arr]


def label_accuracy(pred: Tensor, truth: Tensor, ordered: bool = False) -> float:
    """Fraction of ground-truth labels recovered.

    ordered=False compares multisets (|pred ∩ truth| / B) because label-inference
    attacks (iDLG, LLG) recover *which* labels and how many, not their order.
    ordered=True compares element-wise (lengths must match).
    """
    p, t = _labels_1d(pred, "pred"), _labels_1d(truth, "truth")
    if not t:
        raise ValueError("truth labels are empty")
    if ordered:
        if len(p) != len(t):
            raise ValueError(
                f"ordered label accuracy needs equal lengths, got {len(p)} vs {len(t)}"
            )
        return sum(a == b for a, b in zip(p, t)) / len(t)
    overlap = Counter(p) & Counter(t)
    return sum(overlap.values()) / len(t)


def _finite_mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    if finite.size:
        return float(finite.mean())
    return float("inf") if values.size and np.all(np.isposinf(values)) else float("nan")


def score_reconstruction(
    recon: Tensor,
    truth: Tensor,
    recon_labels: Tensor | None = None,
    true_labels: Tensor | None = None,
    lpips: LpipsMetric | None = None,
    match: str = "mse",
) -> dict[str, object]:
    """Match reconstructions to ground truth, then score each matched pair.

    Returns plain Python floats/lists (json.dumps-able; note PSNR entries may be
    `inf`, which json writes as `Infinity`):
    mse/psnr/ssim/lpips per truth image (lpips None without a metric; ssim: the Gaussian 11x11
    window named by ``ssim_window``, ``ssim_uniform7``: skimage's 7x7 uniform one), label_acc
    (matched positions whose labels agree; None without both label sets), perm
    (recon[perm[i]] <-> truth[i]), and means. psnr_mean averages finite values
    only (inf when every image is exact) and psnr_num_inf counts the exact ones.
    """
    perm = match_batch(recon, truth, cost=match, lpips_metric=lpips)
    idx = torch.as_tensor(perm, dtype=torch.long, device=recon.device)
    matched = recon.index_select(0, idx)

    m, p, s = mse(matched, truth), psnr(matched, truth), ssim(matched, truth)
    s7 = ssim_uniform7(matched, truth)
    lp = None if lpips is None else np.asarray(lpips(matched, truth), dtype=np.float64)

    label_acc: float | None = None
    if recon_labels is not None and true_labels is not None:
        rl = _labels_1d(recon_labels, "recon_labels")
        if len(rl) != len(perm):
            raise ValueError(
                f"recon_labels has {len(rl)} entries for a batch of {len(perm)}"
            )
        label_acc = float(
            label_accuracy(
                torch.tensor([rl[k] for k in perm]), true_labels, ordered=True
            )
        )

    return {
        "mse": [float(v) for v in m],
        "psnr": [float(v) for v in p],
        "ssim": [float(v) for v in s],
        "ssim_uniform7": [float(v) for v in s7],
        "ssim_window": DEFAULT_SSIM_WINDOW,
        "lpips": None if lp is None else [float(v) for v in lp],
        "label_acc": label_acc,
        "perm": [int(v) for v in perm],
        "match": match,
        "mse_mean": float(m.mean()),
        "psnr_mean": _finite_mean(p),
        "psnr_num_inf": int(np.isposinf(p).sum()),
        "ssim_mean": float(s.mean()),
        "ssim_uniform7_mean": float(s7.mean()),
        "lpips_mean": None if lp is None else float(lp.mean()),
    }
