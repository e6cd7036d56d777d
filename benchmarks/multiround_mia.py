"""Multi-round update MIA vs the one-update gradient MIA on a small FedAvg federation (MNIST, offline).

Runs the federation in process (the real client and server apps), recording the
updates of all clients in the chosen rounds only (``attack.name=none``,
``attack.victim_ids`` = all clients), then scores the target client's samples
against ``--nonmembers`` test samples with FedMIA (Zhu et al. 2024), Avg-Cosine,
Loss-Series and the one-update Grad-Cosine (Li et al. 2023, the measurement of
``mia.gradient``). Prints a table (AUC, TPR at 1% and 0.1% FPR) and writes the
ROC curves on log axes into ``OUT/mia/``.

    python benchmarks/multiround_mia.py --out runs/multiround_mia [--rounds 10 --record 2,4,6,8,10]
"""

from __future__ import annotations

import argparse
import json
import time

from clients.client_app import app as client_app
from fl_privacy.audit.multiround_mia import TITLES, multiround_mia
from fl_privacy.config import build_config
from fl_privacy.federation.run_setup import build_model_for, load_split
from fl_privacy.launch.inprocess import InProcessGrid
from strategies.server_app import run_federation


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--clients", type=int, default=5)
    p.add_argument("--samples", type=int, default=64, help="training images per client")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--record", default="2,4,6,8,10", help="rounds whose updates are recorded and scored")
    p.add_argument("--epochs", type=int, default=2, help="local epochs")
    p.add_argument("--nonmembers", type=int, default=1000)
    p.add_argument("--target", type=int, default=0)
    args = p.parse_args()
    record = [int(r) for r in args.record.split(",")]
    config = build_config({}, {
        "data.dataset": "mnist", "data.partition": "iid", "data.samples_per_client": args.samples,
        "federation.num_clients": args.clients, "federation.rounds": args.rounds, "training.algorithm": "fedavg",
        "training.local_epochs": args.epochs, "training.batch_size": 16, "training.lr": 0.05,
        "model.name": "small_cnn", "model.width": 8, "attack.name": "none", "attack.rounds": record,
        "attack.victim_ids": list(range(args.clients)), "evaluation.test_samples": 200, "resources.device": "cpu",
        "resources.threads": 1,
    })
    started = time.time()
    run = run_federation(InProcessGrid(client_app, args.clients), config, out=args.out)
    train, test = load_split(config, "train"), load_split(config, "test")
    result = multiround_mia(run.root, build_model_for(config, train), train, test, [args.target],
                            nonmembers=args.nonmembers, normalize=config.data.normalize)
    result["seconds"] = round(time.time() - started, 1)
    (run.root / "mia" / "multiround.json").write_text(json.dumps(result, indent=2))
    target = result["per_target"][0]
    print(f"target client {args.target}: {target['members']} members vs {result['nonmembers']} non-members, "
          f"recorded rounds {result['rounds']}, {result['seconds']} s")
    print("| method | AUC | TPR @ 1% FPR | TPR @ 0.1% FPR |\n|---|---|---|---|")
    for method, m in target["scores"].items():
        cells = " | ".join("n/a" if m[k] is None else f"{m[k]:.3f}" for k in ("auc", "tpr_at_1pct_fpr",
                                                                             "tpr_at_0.1pct_fpr"))
        print(f"| {TITLES[method]} | {cells} |")
    print("\n".join(f"note: {n}" for n in result["notes"]))
    print(f"ROC (log axes): {run.root / target['roc']}")


if __name__ == "__main__":
    main()
