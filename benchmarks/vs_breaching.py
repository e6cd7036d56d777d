"""Paired per-iteration time: fl-privacy's GIA-O against breaching 0.1.2 on the same work.

    python -m venv /work/peer-venv && /work/peer-venv/bin/pip install breaching==0.1.2   # separate env
    OMP_NUM_THREADS=1 python benchmarks/vs_breaching.py --peer-python /work/peer-venv/bin/python

breaching is never a dependency of fl-privacy: it runs in its own environment (which must also
be able to import torch and this checkout). Both attack the same untrained model (same weights),
the same FedSGD gradient of one image, from the same starting image, eval mode, labels known,
inverting_gradients with TV 1e-4, one thread. Each engine is timed as (attack of 1 + n
iterations - attack of 1 iteration) / n in the process's CPU seconds (set-up and final scoring
cancel; other jobs on the machine do not count); the engines run one after another, ``--repeats``
times.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def _model(key: str, case: dict):  # noqa: ANN202
    from attack_speed import MODELS

    from fl_privacy.models import build_model

    name, options = MODELS[key]
    model = build_model(name, num_classes=10, in_channels=3, image_size=32, **options)
    model.load_state_dict(case["state"])
    return model.eval()


def make_case(key: str, path: Path) -> None:
    import torch
    from attack_speed import victims

    obs = victims(key, 1, 1)[0]
    names = [n for n, _ in obs.model.named_parameters()]
    start = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # = our seed-0 start
    torch.save({"state": obs.model.state_dict(), "grads": [obs.update[n] for n in names], "labels": obs.labels,
                "start": start}, path)


def run_ours(case: dict, key: str, iterations: int, lean: bool) -> None:
    from fl_privacy.attacks.gia import preset, reconstruct
    from fl_privacy.attacks.threat import Observation

    model = _model(key, case)
    names = [n for n, _ in model.named_parameters()]
    obs = Observation(model=model, global_params={n: p.detach() for n, p in model.named_parameters()},
                      global_buffers=dict(model.named_buffers()), update=dict(zip(names, case["grads"])),
                      kind="gradient", image_shape=(3, 32, 32), num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3,
                      num_examples=1, batch_size=1, labels=case["labels"])
    reconstruct(obs, preset("inverting_gradients", labels="known", model_mode="eval", iterations=iterations,
                            lean_convolutions=lean), device="cpu")


def run_breaching(case: dict, key: str, iterations: int) -> None:
    import logging

    import breaching
    import torch

    logging.disable(logging.INFO)
    model = _model(key, case)
    cfg = breaching.get_attack_config("invertinggradients", overrides=[
        f"optim.max_iterations={iterations}", "optim.callback=1000000", "regularization.total_variation.scale=0.0001"])
    attacker = breaching.attacks.prepare_attack(model, torch.nn.CrossEntropyLoss(), cfg)
    meta = types.SimpleNamespace(shape=(3, 32, 32), mean=(0.5,) * 3, std=(0.25,) * 3, modality="vision", classes=10)
    payload = [dict(parameters=[p.detach() for p in model.parameters()], buffers=list(model.buffers()), metadata=meta)]
    shared = [dict(gradients=case["grads"], buffers=None,
                   metadata=dict(num_data_points=1, labels=case["labels"], local_hyperparams=None))]
    attacker.reconstruct(payload, shared, {}, initial_data=case["start"])


def child(args: argparse.Namespace) -> None:
    """One attack call in this process; prints its CPU seconds."""
    import torch

    torch.set_num_threads(1)
    case = torch.load(args.case)
    start = time.process_time()
    if args.engine == "breaching":
        run_breaching(case, args.model, args.iterations)
    else:
        run_ours(case, args.model, args.iterations, lean=args.engine == "lean")
    print(time.process_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer-python", default="/work/peer-venv/bin/python", help="python of breaching's env")
    parser.add_argument("--models", nargs="*", default=["convnet64", "resnet18"])
    parser.add_argument("--engines", nargs="*", default=["default", "lean", "breaching"])
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="default", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="convnet64", help=argparse.SUPPRESS)
    parser.add_argument("--case", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    work = Path(tempfile.mkdtemp(prefix="vs-breaching-"))

    def seconds(engine: str, key: str, iterations: int) -> float:
        python = args.peer_python if engine == "breaching" else sys.executable
        cmd = [python, __file__, "--child", "--engine", engine, "--model", key, "--case", str(work / f"{key}.pt"),
               "--iterations", str(iterations)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return float(out.stdout.strip().splitlines()[-1])

    print("| model | run | " + " | ".join(f"{e} CPU s/it" for e in args.engines) + " | default / breaching |")
    print("|---|---|" + "---|" * (len(args.engines) + 1))
    for key in args.models:
        make_case(key, work / f"{key}.pt")
        for run in range(1, args.repeats + 1):
            per = {e: (seconds(e, key, 1 + args.iterations) - seconds(e, key, 1)) / args.iterations
                   for e in args.engines}
            ratio = per["default"] / per["breaching"] if {"default", "breaching"} <= set(per) else float("nan")
            print(f"| {key} | {run} | " + " | ".join(f"{per[e]:.3f}" for e in args.engines) + f" | {ratio:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
