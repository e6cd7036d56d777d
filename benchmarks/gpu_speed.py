"""``gpu_check.py``'s speed-engineering parts: engine variants, restarts, victims, precision vs quality.

* ``variants``: ResNet-18 B=1 ``inverting_gradients`` (labels known, eval mode, CUDA graph) iterations/s
  for each engine variant: rows by ``vmap`` or ``loop``, ``precision`` float32 / tf32 / bf16,
  ``compile`` (``torch.compile`` of the loss, inner gradient included), lean convolutions,
  ``cudnn.benchmark``. Per-iteration time = (attack of 350 iterations - attack of 50) / 300, after a
  warm-up attack that pays compilation (reported as ``first_call_s``), so set-up, capture and compile cancel.
* ``restarts``: 8 restarts vs 1 of the fastest float32 variant (target: <= 3x per iteration).
* ``quality``: 8 photographs (32x32 crops of scikit-image's bundled photos: no download), attacked as one
  batched problem in float32, tf32 and bf16 from the same start: PSNR/SSIM per precision and the paired
  difference to float32, so reduced precision's effect on the reconstruction is measured, not assumed.

The fastest variant is written to ``best_variant`` and the ``speed`` part then uses it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

VARIANTS: dict[str, dict[str, Any]] = {
    "vmap float32": {"batching": "vmap"},
    "vmap tf32": {"batching": "vmap", "precision": "tf32"},
    "vmap bf16": {"batching": "vmap", "precision": "bf16"},
    "loop float32": {"batching": "loop"},
    "loop tf32": {"batching": "loop", "precision": "tf32"},
    "vmap tf32 lean": {"batching": "vmap", "precision": "tf32", "lean_convolutions": True},
    "vmap tf32 cudnn.benchmark": {"batching": "vmap", "precision": "tf32", "cudnn_benchmark": True},
    "vmap float32 compile": {"batching": "vmap", "compile": True},  # last: the first compile takes minutes
    "vmap tf32 compile": {"batching": "vmap", "precision": "tf32", "compile": True},
    "loop tf32 compile": {"batching": "loop", "precision": "tf32", "compile": True},
}
"""Name -> GIAConfig overrides (``cudnn_benchmark`` is the global torch flag, set for that variant only)."""


def config(iterations: int, variant: dict[str, Any], **extra: Any):
    from fl_privacy.attacks.gia import preset

    overrides = {k: v for k, v in variant.items() if k != "cudnn_benchmark"}
    return preset("inverting_gradients", labels="known", model_mode="eval", iterations=iterations,
                  cuda_graph=True, **overrides, **extra)


def attack_seconds(observations, iterations: int, variant: dict[str, Any], device: str, **extra: Any):
    """(seconds, results) of one attack, synchronised on the GPU."""
    import torch

    from fl_privacy.attacks.gia.engine import reconstruct_victims

    cfg = config(iterations, variant, **extra)
    torch.backends.cudnn.benchmark = bool(variant.get("cudnn_benchmark", False))
    try:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        results = reconstruct_victims(observations, cfg, device=device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start, results
    finally:
        torch.backends.cudnn.benchmark = False


def per_iteration(observations, variant: dict[str, Any], device: str, short: int, long: int,
                  **extra: Any) -> dict[str, Any]:
    """Seconds per iteration as the difference of a ``long`` and a ``short`` attack, after a warm-up."""
    first, _ = attack_seconds(observations, 5, variant, device, **extra)
    t_short, _ = attack_seconds(observations, short, variant, device, **extra)
    t_long, results = attack_seconds(observations, long, variant, device, **extra)
    s = max(t_long - t_short, 1e-9) / (long - short)
    return {"first_call_s": first, "s_per_iteration": s, "iterations_per_s": 1 / s,
            "objective": results[0].objective, "notes": sorted({n for r in results for n in r.notes})}


def part_variants(args, victims_fn) -> dict[str, Any]:
    obs = victims_fn(1, args.device, args.model)
    short, long = (2, 4) if args.tiny else (50, 350)
    names = args.variants or [n for n in VARIANTS if not (args.tiny and "compile" in n)]  # compiling: minutes on a CPU
    out: dict[str, Any] = {"model": args.model, "short": short, "long": long, "variants": {}}
    for name in names:
        try:
            out["variants"][name] = per_iteration(obs, VARIANTS[name], args.device, short, long)
        except Exception as err:  # noqa: BLE001 - reported; the other variants go on
            out["variants"][name] = {"error": f"{type(err).__name__}: {err}"[:1500]}
        print(name, out["variants"][name].get("iterations_per_s", out["variants"][name].get("error")), flush=True)
        Path(args.result).write_text(json.dumps(out, default=str))  # kept if the part runs out of time
    ok = {n: r for n, r in out["variants"].items() if "s_per_iteration" in r and not any("failed" in m for m in r["notes"])}
    if ok:
        out["best_variant"] = min(ok, key=lambda n: ok[n]["s_per_iteration"])
        strict = {n: r for n, r in ok.items() if "float32" in n}
        out["best_float32_variant"] = min(strict, key=lambda n: strict[n]["s_per_iteration"]) if strict else None
    return out


def part_restarts(args, victims_fn, variant_name: str) -> dict[str, Any]:
    obs = victims_fn(1, args.device, args.model)
    short, long = (2, 4) if args.tiny else (50, 250)
    variant = VARIANTS[variant_name]
    one = per_iteration(obs, variant, args.device, short, long)
    eight = per_iteration(obs, variant, args.device, short, long, restarts=8)
    return {"variant": variant_name, "one": one, "eight": eight,
            "ratio": eight["s_per_iteration"] / one["s_per_iteration"]}


def photographs(n: int, size: int = 32):
    """``n`` (3, size, size) images in [0, 1]: crops of scikit-image's bundled photographs, downscaled."""
    import numpy as np
    import skimage.data
    import torch
    import torch.nn.functional as F

    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    out = []
    for i in range(n):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        side = min(h, w) // 2
        top, left = (i // len(photos)) % 2 * (h - side), (i // (2 * len(photos))) % 2 * (w - side)
        crop = torch.from_numpy(np.ascontiguousarray(img[top:top + side, left:left + side])).permute(2, 0, 1)
        out.append(F.interpolate(crop[None].float() / 255, size=(size, size), mode="area")[0])
    return torch.stack(out)


def gradient_observations(images, model_name: str):
    """FedSGD gradients of one untrained model, one normalised image (C, H, W) per victim, as the server sees them."""
    import torch
    import torch.nn.functional as F

    from fl_privacy.attacks.threat import Observation
    from fl_privacy.models import build_model

    size = images[0].shape[-1]
    torch.manual_seed(0)
    model = build_model(model_name, num_classes=10, in_channels=3, image_size=size).eval()
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    buffers = {k: b.detach().clone() for k, b in model.named_buffers()}
    out = []
    for v, x in enumerate(images):
        y = torch.tensor([v % 10])
        grads = torch.autograd.grad(F.cross_entropy(model(x[None]), y), list(model.parameters()))
        out.append(Observation(model=model, global_params=params, global_buffers=buffers,
                               update={k: g.detach() for k, g in zip(params, grads)}, kind="gradient",
                               image_shape=(3, size, size), num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3,
                               num_examples=1, batch_size=1, labels=y))
    return out


def photo_victims(n: int, model_name: str, size: int = 32):
    """(observations, truths in [0, 1]): FedSGD gradients of ``n`` photographs, one per victim."""
    truths = photographs(n, size)
    return gradient_observations([(t - 0.5) / 0.25 for t in truths], model_name), truths


def part_quality(args) -> dict[str, Any]:
    """PSNR/SSIM of float32, tf32 and bf16 on the same victims from the same start (paired)."""
    import numpy as np
    import torch
    from scipy import stats

    from fl_privacy.metrics.image import psnr, ssim

    n, iterations = (2, 4) if args.tiny else (args.quality_victims, args.quality_iterations)
    obs, truths = photo_victims(n, args.model)
    out: dict[str, Any] = {"victims": n, "iterations": iterations, "images": "scikit-image photographs, 32x32"}
    scores = {}
    for precision in ("float32", "tf32", "bf16"):
        seconds, results = attack_seconds(obs, iterations, {"batching": "vmap", "precision": precision}, args.device)
        recon = torch.stack([(r.images * 0.25 + 0.5).clamp(0, 1)[0] for r in results])
        p = psnr(recon, truths)
        s = ssim(recon, truths)
        scores[precision] = (p, s)
        out[precision] = {"seconds": seconds, "psnr_mean": float(p.mean()), "ssim_mean": float(s.mean()),
                          "psnr": p.tolist(), "ssim": s.tolist()}
    for precision in ("tf32", "bf16"):
        d = scores[precision][0] - scores["float32"][0]
        test = stats.wilcoxon(d) if n >= 6 and np.any(d != 0) else None
        out[f"{precision}_minus_float32_psnr"] = {"mean": float(d.mean()), "min": float(d.min()),
                                                  "max": float(d.max()),
                                                  "wilcoxon_p": None if test is None else float(test.pvalue)}
    return out
