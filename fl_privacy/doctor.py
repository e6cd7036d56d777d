"""``fl-privacy doctor``: what this machine offers (datasets, devices, optional weights)."""

from __future__ import annotations

import os
from pathlib import Path

from fl_privacy.data.datasets import LOCAL_FILES, cache_root, data_root

_TORCHVISION_MARKERS = {
    "cifar10": "cifar-10-batches-py",
    "cifar100": "cifar-100-python",
    "mnist": "MNIST/raw",
    "fashion_mnist": "FashionMNIST/raw",
}


def dataset_lines(root: Path) -> list[str]:
    lines = []
    for name, marker in _TORCHVISION_MARKERS.items():
        found = []
        if name in LOCAL_FILES and (root / LOCAL_FILES[name]).exists():
            found.append(f"offline copy {LOCAL_FILES[name]}")
        if (root / marker).exists():
            found.append("torchvision files")
        status = ", ".join(found) if found else "not on disk (downloaded on first use when data.download=true)"
        lines.append(f"  {name:<14} {status}")
    return lines


def device_lines() -> list[str]:
    import torch

    lines = [f"  torch {torch.__version__}, {torch.get_num_threads()} CPU threads"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            lines.append(f"  cuda:{i} {props.name}, {props.total_memory / 2**30:.0f} GiB")
    else:
        lines.append("  no CUDA device: attacks and training run on the CPU")
    return lines


def report() -> str:
    from fl_privacy.metrics import lpips_status

    root = data_root()
    available, reason = lpips_status("alex")
    flwr_flag = os.environ.get("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION")
    parts = [
        f"data directory: {root}" + ("" if root.exists() else " (missing)"),
        "  (set FL_PRIVACY_DATA_DIR or data.data_dir to change it)",
        *dataset_lines(root),
        f"array cache: {cache_root()}",
        "devices:",
        *device_lines(),
        "optional weights:",
        f"  LPIPS (AlexNet backbone): {'available' if available else 'unavailable'} - {reason}",
        "flower:",
        "  FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="
        + (flwr_flag or "unset (set it to 1 before the first `flwr run` so the installed environment is used)"),
    ]
    return "\n".join(parts)
