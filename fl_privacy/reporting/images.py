"""Pictures a user looks at: originals vs reconstructions, and the attack's objective trace."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_comparison_grid(
    originals: torch.Tensor, reconstructions: torch.Tensor, path: Path, captions: list[str] | None = None,
    max_images: int = 16,
) -> Path:
    """Two rows (originals above, matched reconstructions below); inputs in [0, 1], (B, C, H, W)."""
    plt = _plt()
    n = min(len(originals), max_images)
    fig, axes = plt.subplots(2, n, figsize=(1.4 * n + 0.6, 3.2), squeeze=False)
    for row, (images, title) in enumerate(((originals, "original"), (reconstructions, "reconstruction"))):
        for i in range(n):
            ax = axes[row][i]
            image = images[i].detach().cpu().float().clamp(0, 1).permute(1, 2, 0).numpy()
            ax.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(title, fontsize=8)
            if row == 1 and captions:
                ax.set_xlabel(captions[i], fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_trace(trace: np.ndarray, path: Path) -> Path:
    """Objective over iterations (one line per restart); ``trace`` columns: iteration, restarts..."""
    plt = _plt()
    np.savetxt(path.with_suffix(".csv"), trace, delimiter=",",
               header="iteration," + ",".join(f"restart_{i}" for i in range(trace.shape[1] - 1)), comments="")
    fig, ax = plt.subplots(figsize=(4.5, 3))
    for column in range(1, trace.shape[1]):
        ax.plot(trace[:, 0], trace[:, column], linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("objective")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
