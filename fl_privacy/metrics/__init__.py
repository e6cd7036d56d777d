"""Reconstruction-quality metrics: per-image MSE/PSNR/SSIM/LPIPS, batch matching, label accuracy."""

from fl_privacy.metrics.image import (
    label_accuracy,
    match_batch,
    mse,
    psnr,
    score_reconstruction,
    ssim,
    ssim_uniform7,
)
from fl_privacy.metrics.lpips_metric import (
    LpipsMetric,
    LpipsUnavailable,
    lpips_status,
    try_lpips,
)

__all__ = [
    "LpipsMetric",
    "LpipsUnavailable",
    "label_accuracy",
    "lpips_status",
    "match_batch",
    "mse",
    "psnr",
    "score_reconstruction",
    "ssim",
    "ssim_uniform7",
    "try_lpips",
]
