"""Each defense at its papers' settings: leakage under the default GIA-O attack, accuracy, bytes.

    python benchmarks/defenses.py                      # CPU-sized: 2 images, 500 iterations, 3 rounds
    python benchmarks/defenses.py --only none topk_0.1 --images 4 --iterations 4000 --rounds 10

For every defense setting: (1) ``fl-privacy attack``'s code on CIFAR-10 test
images (ConvNet-32 untrained, FedSGD batch 1, labels known,
``inverting_gradients``) gives PSNR/SSIM of the reconstruction; (2) a short
FedAvg federation (small CNN, 10 clients with 500 samples each, Dirichlet 0.5) with the same defense
gives test accuracy and the bytes a client sends. The table is the first
draft of the privacy-utility frontier.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("FLWR_LOG_LEVEL", "WARNING")  # before Flower is imported
import tempfile

import numpy as np
import torch

from clients.client_app import app as client_app
from fl_privacy.audit.oneshot import attack_once
from fl_privacy.config import build_config
from fl_privacy.launch.inprocess import InProcessGrid
from strategies.server_app import run_federation

SETTINGS: dict[str, list[dict]] = {
    "none": [],
    # SoK §6 / Wang et al. DP-G: Gaussian noise (std on the update; FedSGD gradient scale)
    "gaussian_1e-3": [{"name": "gaussian", "std": 1e-3}],
    "gaussian_1e-2": [{"name": "gaussian", "std": 1e-2}],
    # client-level DP-FedAvg: clip 1, noise calibrated to (8, 1e-5) over 3 rounds with all clients sampled
    "dp_eps8": [{"name": "gaussian", "clip": 1.0, "epsilon": 8.0, "delta": 1e-5, "rounds": 3, "sample_rate": 1.0}],
    # Wang et al. DP-L: Laplace noise without clipping
    "laplace_1e-2": [{"name": "laplace", "scale": 1e-2}],
    # clipping (SoK §6)
    "clip_0.1": [{"name": "clip", "max_norm": 0.1}],
    # Menon et al.: uniform quantization by levels, stochastic rounding
    "quantize_240": [{"name": "quantize", "levels": 240}],
    "quantize_16": [{"name": "quantize", "levels": 16}],
    "stochastic_16": [{"name": "quantize", "levels": 16, "stochastic": True}],
    "sign": [{"name": "sign"}],
    # Menon et al. sparsity 0.2 / 0.4; Wang et al. GC 90%; Top-K 10%
    "prune_20": [{"name": "prune", "percent": 20}],
    "prune_40": [{"name": "prune", "percent": 40}],
    "prune_90": [{"name": "prune", "percent": 90}],
    "topk_0.1": [{"name": "topk", "ratio": 0.1}],
    # Li et al.: PowerSGD ranks and Top-K at the matched compression of rank r
    "powersgd_1": [{"name": "powersgd", "rank": 1}],
    "powersgd_4": [{"name": "powersgd", "rank": 4}],
    "topk_level_1": [{"name": "topk", "match_powersgd_rank": 1}],
    # Wang et al.: PLD (Soteria) 80% and GradDefense (10 slices, 5 perturbed)
    "soteria_80": [{"name": "soteria", "pruning_rate": 0.8, "probes": 16}],  # exact scores: B x F backward passes
    "graddefense": [{"name": "graddefense"}],
}


def leakage(name: str, defenses: list[dict], images: list[int], iterations: int, out: str) -> dict[str, float]:
    config = build_config({
        "name": f"attack-{name}", "data": {"dataset": "cifar10"}, "model": {"name": "convnet", "width": 32},
        "training": {"algorithm": "fedsgd", "batch_size": 1, "model_mode": "eval"}, "defenses": defenses,
        "attack": {"name": "inverting_gradients", "threat": {"labels": True}, "progress": False,
                   "gia": {"iterations": iterations}},
    })
    rows = [attack_once(config, f"{out}/{name}-attack-{i}", split="test", indices=[i])[1] for i in images]
    return {"psnr": float(np.mean([r["psnr_mean"] for r in rows])), "ssim": float(np.mean([r["ssim_mean"] for r in rows]))}


def utility(name: str, defenses: list[dict], rounds: int, samples: int, out: str) -> dict[str, float]:
    config = build_config({
        "name": f"fedavg-{name}",
        "data": {"dataset": "cifar10", "partition": "dirichlet", "alpha": 0.5, "samples_per_client": samples},
        "model": {"name": "small_cnn"}, "federation": {"num_clients": 10, "rounds": rounds},
        "training": {"algorithm": "fedavg", "local_epochs": 1, "batch_size": 32, "lr": 0.05},
        "defenses": defenses, "evaluation": {"every": rounds, "test_samples": 2000},
    })
    run = run_federation(InProcessGrid(client_app, 10), config, out=f"{out}/{name}-fedavg")
    last = run.read_jsonl("rounds.jsonl")[-1]
    return {"accuracy": last["test_accuracy"], "kib": last["payload_kib"], "compression": last["compression"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help=f"settings (default: all): {', '.join(SETTINGS)}")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--samples", type=int, default=500, help="training samples per client (0 = all)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="defense-bench-")
    names = args.only or list(SETTINGS)
    images = [3, 10, 21, 30, 40, 50, 60, 70][: args.images]
    print(f"device: {'cuda' if torch.cuda.is_available() else 'cpu'}; attack: inverting_gradients, "
          f"{args.iterations} iterations, {len(images)} CIFAR-10 test images; FedAvg: {args.rounds} rounds; "
          f"outputs in {out}\n")
    print("| defense | parameters | attack PSNR dB | attack SSIM | test accuracy | KiB sent/client | compression x |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        defenses = SETTINGS[name]
        leak = leakage(name, defenses, images, args.iterations, out)
        use = utility(name, defenses, args.rounds, args.samples, out)
        params = "; ".join(", ".join(f"{k}={v}" for k, v in d.items()) for d in defenses) or "–"
        print(f"| {name} | {params} | {leak['psnr']:.2f} | {leak['ssim']:.3f} | {use['accuracy']:.4f} | "
              f"{use['kib']:.0f} | {use['compression']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
