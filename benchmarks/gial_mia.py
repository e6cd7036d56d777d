"""GIA-L vs GIA-O by batch size, in- vs out-of-distribution; MIA on a short FedAvg run.

    python benchmarks/gial_mia.py                          # CPU-sized defaults
    python benchmarks/gial_mia.py --epochs 50 --iterations 2000 --batch-sizes 1 4 16   # GPU

Part 1 (SoK Fig. 4 and §4.2.2): the adversary trains a conditional DCGAN on
CIFAR-10 training images of classes 0-4 (its public auxiliary data). Victims
hold CIFAR-10 test images of classes 0-4 (in distribution) or 5-9 (out of
distribution) and send one FedSGD gradient of an untrained ConvNet-32 (eval
mode). Both ``inverting_gradients`` (GIA-O) and ``gias`` (GIA-L, stage 1 +
generator fine-tuning) attack it with labels known; PSNR/SSIM per setting.

Part 2: a short FedAvg run (small CNN, 10 clients with few samples and several
local epochs, so the model overfits a little), then the global model is audited
with the threshold attacks (thresholds from a reference model) and the
calibrated LiRA/RMIA (reference models trained on held-out data).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("FLWR_LOG_LEVEL", "WARNING")  # before Flower is imported
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from clients.client_app import app as client_app
from fl_privacy.audit.auxiliary import train_generator
from fl_privacy.audit.oneshot import attack_once
from fl_privacy.config import build_config
from fl_privacy.data import load_dataset
from fl_privacy.launch.inprocess import InProcessGrid
from strategies.server_app import run_federation

PUBLIC_CLASSES = [0, 1, 2, 3, 4]


def victim_indices(labels: np.ndarray, classes: list[int], count: int, seed: int) -> list[int]:
    pool = np.flatnonzero(np.isin(labels, classes))
    return sorted(np.random.default_rng(seed).permutation(pool)[:count].tolist())


def part_one(args: argparse.Namespace, out: Path) -> None:
    generator = out / "generator-c0-4.pt"
    if not generator.exists():
        started = time.time()
        ckpt = train_generator(dataset="cifar10", classes=PUBLIC_CLASSES, epochs=args.epochs, ngf=args.ngf,
                               ndf=args.ngf, nz=args.nz, batch_size=128, seed=0, progress=False)
        ckpt.save_checkpoint(generator)
        print(f"generator: classes {PUBLIC_CLASSES}, {args.epochs} epochs, ngf {args.ngf}, nz {args.nz}: "
              f"{time.time() - started:.0f} s ({ckpt.info().get('seconds_per_epoch', float('nan')):.0f} s/epoch)\n")
    test = load_dataset("cifar10", "test")
    print("| batch | victims | attack | PSNR dB | SSIM | s/iter |")
    print("|---|---|---|---|---|---|")
    for batch in args.batch_sizes:
        for label, classes in (("in-distribution (classes 0-4)", PUBLIC_CLASSES),
                               ("out-of-distribution (classes 5-9)", [5, 6, 7, 8, 9])):
            indices = victim_indices(test.labels, classes, batch, seed=batch)
            for attack, extra in (("inverting_gradients", {}),
                                  ("gias", {"attack.generator": str(generator),
                                            "attack.gia.generator_steps": args.iterations // 2})):
                config = build_config({
                    "name": f"{attack}-b{batch}", "data": {"dataset": "cifar10"},
                    "model": {"name": "convnet", "width": 32},
                    "training": {"algorithm": "fedsgd", "batch_size": batch, "model_mode": "eval"},
                    "attack": {"name": attack, "threat": {"labels": True}, "progress": False,
                               "gia": {"iterations": args.iterations}},
                }, extra)
                _, entry = attack_once(config, str(out / f"{attack}-b{batch}-{classes[0]}"), split="test",
                                       indices=indices)
                print(f"| {batch} | {label} | {attack} | {entry['psnr_mean']:.2f} | {entry['ssim_mean']:.3f} | "
                      f"{entry['seconds_per_iteration']:.3f} |", flush=True)


def part_two(args: argparse.Namespace, out: Path) -> None:
    rounds = args.rounds
    config = build_config({
        "name": "mia-fedavg", "data": {"dataset": "cifar10", "partition": "iid", "samples_per_client": args.samples},
        "model": {"name": "small_cnn"}, "federation": {"num_clients": 10, "rounds": rounds},
        "training": {"algorithm": "fedavg", "local_epochs": args.local_epochs, "batch_size": 32, "lr": 0.05},
        "evaluation": {"test_samples": 2000},
        "mia": {"rounds": [rounds], "audit_size": args.audit_size, "reference_models": 4,
                "reference_epochs": args.local_epochs * rounds // 2, "reference_pool": 4000},
    })
    run = run_federation(InProcessGrid(client_app, 10), config, out=str(out / "mia-fedavg"))
    last = run.read_jsonl("rounds.jsonl")[-1]
    print(f"\nFedAvg: 10 clients x {args.samples} samples, {rounds} rounds x {args.local_epochs} local epochs: "
          f"test accuracy {last['test_accuracy']:.3f}; audit {last['mia']['members']} members + "
          f"{last['mia']['nonmembers']} non-members\n")
    print("| attack | AUC | TPR @ 1% FPR | TPR @ 0.1% FPR |")
    print("|---|---|---|---|")
    for name, m in last["mia"]["attacks"].items():
        print(f"| {name} | {m['auc']:.3f} | {m['tpr_at_1pct_fpr']:.3f} | {m['tpr_at_0.1pct_fpr']:.3f} |")
    for warning in last["mia"]["warnings"]:
        print(f"\nnote: {warning}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("1", "2", "both"), default="both")
    parser.add_argument("--epochs", type=int, default=5, help="generator training epochs")
    parser.add_argument("--ngf", type=int, default=32)
    parser.add_argument("--nz", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--local-epochs", type=int, default=5)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--audit-size", type=int, default=1000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="gial-mia-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"device: {'cuda' if torch.cuda.is_available() else 'cpu'}; outputs in {out}\n")
    if args.part in ("1", "both"):
        part_one(args, out)
    if args.part in ("2", "both"):
        part_two(args, out)


if __name__ == "__main__":
    main()
