"""Gradient inversion (GIA-O) quality and speed on real images.

    python benchmarks/gia.py                 # all settings, CPU-sized iteration counts
    python benchmarks/gia.py --only convnet_ig --images 4 --iterations 2000
    python benchmarks/gia.py --scale 10      # 10x the iterations (GPU)

Every setting builds real client updates with ``fl-privacy attack``'s code
(``attack_once``) from CIFAR-10 / MNIST test images and reports iterations,
seconds per iteration, PSNR, SSIM and MSE as a Markdown table. Targets (CPU):
ConvNet batch 1 SSIM >= 0.6 mean over 4 images; DLG/iDLG on LeNet/MNIST MSE
< 1e-3; known schedule beats unknown on FedAvg with 4 mini-batches.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("FLWR_LOG_LEVEL", "WARNING")  # before Flower is imported
import tempfile
import time
from typing import Any

import numpy as np
import torch

from fl_privacy.audit.oneshot import attack_once
from fl_privacy.config import build_config

CIFAR_TEST = [3, 10, 21, 30, 40, 50, 60, 70]  # the numbers in README.md used these; in the offline archive (test split
                                              # sorted by class) they are all airplanes
MNIST_TEST = [0, 1, 2, 3, 4, 5, 6, 7]


def _settings(iterations: float) -> dict[str, dict[str, Any]]:
    it = lambda n: max(1, int(n * iterations))  # noqa: E731
    cifar = {"data": {"dataset": "cifar10"}}
    mnist = {"data": {"dataset": "mnist", "normalize": False}}

    def fedavg(schedule: bool) -> dict[str, Any]:
        """One FedAvg update of 8 images in 4 mini-batches; the attacker knows its schedule or not."""
        return {**cifar, "model": {"name": "convnet", "width": 32},
                "training": {"algorithm": "fedavg", "batch_size": 2, "lr": 0.1, "model_mode": "eval"},
                "attack": {"name": "inverting_gradients", "threat": {"labels": True, "schedule": schedule},
                           "gia": {"iterations": it(1000)}}}

    return {
        "convnet_ig_trainbn": {
            "what": "same, but the client's model in train mode (BatchNorm on the single image's statistics)",
            "config": {**cifar, "model": {"name": "convnet", "width": 32}, "training": {"algorithm": "fedsgd", "batch_size": 1},
                       "attack": {"name": "inverting_gradients", "threat": {"labels": True}, "gia": {"iterations": it(2000)}}},
            "per_image": True, "split": "test", "indices": CIFAR_TEST,
        },
        "convnet_ig": {
            "what": "ConvNet-32 untrained, FedSGD batch 1 (model in eval mode, as Inverting Gradients' experiments), "
                    "labels known, inverting_gradients",
            "config": {**cifar, "model": {"name": "convnet", "width": 32},
                       "training": {"algorithm": "fedsgd", "batch_size": 1, "model_mode": "eval"},
                       "attack": {"name": "inverting_gradients", "threat": {"labels": True}, "gia": {"iterations": it(2000)}}},
            "per_image": True, "split": "test", "indices": CIFAR_TEST,
        },
        "lenet_dlg": {
            "what": "LeNet (sigmoid), MNIST, FedSGD batch 1, dlg (L-BFGS, joint labels)",
            "config": {**mnist, "model": {"name": "lenet"}, "training": {"algorithm": "fedsgd", "batch_size": 1},
                       "attack": {"name": "dlg", "gia": {"iterations": it(300)}}},
            "per_image": True, "split": "test", "indices": MNIST_TEST,
        },
        "lenet_idlg": {
            "what": "LeNet (sigmoid), MNIST, FedSGD batch 1, idlg (analytic label, L-BFGS)",
            "config": {**mnist, "model": {"name": "lenet"}, "training": {"algorithm": "fedsgd", "batch_size": 1},
                       "attack": {"name": "idlg", "gia": {"iterations": it(300)}}},
            "per_image": True, "split": "test", "indices": MNIST_TEST,
        },
        "resnet18_ig": {
            "what": "ResNet-18 untrained, FedSGD batch 1 (eval mode), labels known, inverting_gradients",
            "config": {**cifar, "model": {"name": "resnet18"},
                       "training": {"algorithm": "fedsgd", "batch_size": 1, "model_mode": "eval"},
                       "attack": {"name": "inverting_gradients", "threat": {"labels": True}, "gia": {"iterations": it(500)}}},
            "per_image": True, "split": "test", "indices": CIFAR_TEST,
        },
        "fedavg_known": {
            "what": "ConvNet-32 (eval mode), FedAvg 1 epoch of 4 mini-batches of 2 (8 images, lr 0.1), labels known, schedule KNOWN",
            "config": fedavg(schedule=True), "per_image": False, "split": "test", "indices": CIFAR_TEST,
        },
        "fedavg_unknown": {
            "what": "same update, schedule UNKNOWN (one gradient, sign-corrected: target -delta, cosine)",
            "config": fedavg(schedule=False), "per_image": False, "split": "test", "indices": CIFAR_TEST,
        },
    }


def run_setting(name: str, spec: dict[str, Any], images: int, out: str, restarts: int | None) -> dict[str, Any]:
    config_dict = spec["config"]
    if restarts:
        config_dict["attack"]["gia"]["restarts"] = restarts
    config = build_config({"name": name, **config_dict}, {"attack.progress": False})
    # per-image settings attack ``images`` victims; a FedAvg setting is one victim with all its images
    groups = [[i] for i in spec["indices"][:images]] if spec["per_image"] else [spec["indices"]]
    rows = []
    for k, group in enumerate(groups):
        _, entry = attack_once(config, f"{out}/{name}-{k}", split=spec["split"], indices=group)
        rows.append(entry)
    return {
        "setting": name, "what": spec["what"], "victims": len(rows), "images": sum(r["images"] for r in rows),
        "iterations": rows[0]["iterations"], "s_per_it": float(np.mean([r["seconds_per_iteration"] for r in rows])),
        "psnr": float(np.mean([r["psnr_mean"] for r in rows])), "ssim": float(np.mean([r["ssim_mean"] for r in rows])),
        "mse": float(np.mean([r["mse_mean"] for r in rows])),
        "label_acc": float(np.mean([r["label_acc"] for r in rows if r["label_acc"] is not None] or [np.nan])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="settings to run (default: all)")
    parser.add_argument("--images", type=int, default=4, help="victims (one test image each) per batch-1 setting")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every setting's iterations")
    parser.add_argument("--restarts", type=int, nargs="*", default=None,
                        help="also time convnet_ig with these restart counts (e.g. 1 8)")
    parser.add_argument("--out", default=None, help="where run directories go (default: a temp dir)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or tempfile.mkdtemp(prefix="gia-bench-")
    settings = _settings(args.scale)
    names = args.only or list(settings)
    unknown = set(names) - set(settings)
    if unknown:
        raise SystemExit(f"unknown settings {sorted(unknown)}; choose from {list(settings)}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device: {device}, torch threads {torch.get_num_threads()}, outputs in {out}\n")
    print("| setting | victims x images | iterations | s/iter | PSNR dB | SSIM | MSE | label acc |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        started = time.time()
        r = run_setting(name, settings[name], args.images, out, None)
        print(f"| {name} | {r['victims']} x {r['images'] // r['victims']} | {r['iterations']} | {r['s_per_it']:.3f} | "
              f"{r['psnr']:.2f} | {r['ssim']:.3f} | {r['mse']:.2e} | {r['label_acc']:.2f} |", flush=True)
        del started
    for restarts in args.restarts or []:
        spec = _settings(0.05)["convnet_ig"]
        r = run_setting("convnet_ig", spec, 1, out, restarts)
        print(f"| convnet_ig, {restarts} restarts (timing) | 1 x 1 | {r['iterations']} | {r['s_per_it']:.3f} | "
              f"{r['psnr']:.2f} | {r['ssim']:.3f} | {r['mse']:.2e} | – |", flush=True)
    print("\n" + "\n".join(f"- {n}: {settings[n]['what']}" for n in names))


if __name__ == "__main__":
    main()
