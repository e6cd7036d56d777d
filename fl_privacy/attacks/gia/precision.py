"""The attack's arithmetic: strict float32 (default), TF32 tensor cores, or bf16 autocast (opt-in).

PyTorch lets cuDNN convolutions use TF32 by default, so an unmanaged "float32" run on
an NVIDIA GPU is really TF32. The attack sets the flags itself for its own duration
(and puts them back), so ``precision`` says what ran. Reduced precision changes the
reconstruction; ``benchmarks/gpu_check.py`` measures its PSNR/SSIM next to its speed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["PRECISIONS", "attack_precision", "precision_note"]

PRECISIONS = ("float32", "tf32", "bf16")


@contextmanager
def attack_precision(precision: str, device: torch.device) -> Iterator[None]:
    """Within the block: TF32 on or off for matmuls and cuDNN, and bf16 autocast for "bf16"."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        # cache_enabled=False: cached casts would outlive a CUDA graph capture
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16", cache_enabled=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def precision_note(precision: str, device: torch.device) -> str | None:
    """The caveat a result carries when it did not run in strict float32."""
    if precision == "tf32":
        if device.type != "cuda":
            return "precision tf32 has no effect off a CUDA device: ran in float32"
        return "ran with TF32 tensor cores (10-bit mantissa products) for convolutions and matmuls"
    if precision == "bf16":
        return f"ran under bf16 autocast on {device.type} (convolutions and matmuls in bfloat16)"
    return None
