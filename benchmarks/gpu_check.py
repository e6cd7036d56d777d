"""One script a GPU machine runs in under 8 minutes: attack speed, victim batching, a Ray federation.

    python benchmarks/gpu_check.py --out results/            # on a GPU machine (default --out: $OUT)
    python benchmarks/gpu_check.py --device cpu --tiny       # plumbing check on a CPU (the test runs this)

Parts, each in its own process with a hard time limit (a part that runs out is reported, not hung):

* ``speed``: ResNet-18, one 32x32 image (FedSGD batch 1), ``inverting_gradients`` with labels known,
  eval mode: iterations per second eagerly and with the iteration captured as a CUDA graph
  (``attack.gia.cuda_graph``; capture time counted). Target: 24,000 iterations in under 60 s on an
  H100/H200-class GPU. Runs ``--iterations`` when the measured rate says they fit the part's budget,
  else as many as fit, and projects the time for 24,000.
* ``victims``: the same attack on ``--victims`` victims of one global model batched into one
  problem vs one victim: seconds per iteration of each and their ratio.
* ``federation``: ``fl-privacy run --backend ray`` with ``--clients`` clients on fractional GPUs
  (``resources.client_gpus 0.1``), one round, the server attacking two victims on the GPU.

Images are synthetic (smooth random images written to an .npz), so nothing needs downloading.
Writes ``gpu_check.json`` and ``gpu_check.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_ITERATIONS = 24_000
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: import the package from this checkout
    sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def _victims(n: int, device: str, model_name: str = "resnet18", size: int = 32):
    """``n`` FedSGD gradients (one smooth random image each) of one untrained model, as the server sees them."""
    import torch
    import torch.nn.functional as F

    from fl_privacy.attacks.threat import Observation
    from fl_privacy.models import build_model

    torch.manual_seed(0)
    model = build_model(model_name, num_classes=10, in_channels=3, image_size=size).eval()
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    buffers = {k: b.detach().clone() for k, b in model.named_buffers()}
    gen = torch.Generator().manual_seed(1)
    out = []
    for v in range(n):
        x = F.interpolate(torch.rand(1, 3, 4, 4, generator=gen), size=(size, size), mode="bilinear")
        x = (x - 0.5) / 0.25
        y = torch.tensor([v % 10])
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
        out.append(Observation(model=model, global_params=params, global_buffers=buffers,
                               update={k: g.detach() for k, g in zip(params, grads)}, kind="gradient",
                               image_shape=(3, size, size), num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3,
                               num_examples=1, batch_size=1, labels=y))
    return out


def _timed_or_eager(observations, iterations: int, device: str, cuda_graph: bool, lean: bool = False) -> dict[str, Any]:
    """``_timed`` with the CUDA graph; if capturing fails, the error is kept and the eager run reported."""
    if not cuda_graph:
        return _timed(observations, iterations, device, False, lean)
    try:
        return _timed(observations, iterations, device, True, lean)
    except Exception as err:  # noqa: BLE001 - reported in the results, the check goes on eagerly
        out = _timed(observations, iterations, device, False, lean)
        out["cuda_graph_error"] = f"{type(err).__name__}: {err}"[:2000]
        return out


def _timed(observations, iterations: int, device: str, cuda_graph: bool, lean: bool = False) -> dict[str, float]:
    import torch

    from fl_privacy.attacks.gia import preset
    from fl_privacy.attacks.gia.engine import reconstruct_victims

    cfg = preset("inverting_gradients", labels="known", model_mode="eval", iterations=iterations,
                 cuda_graph=cuda_graph, lean_convolutions=lean)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    results = reconstruct_victims(observations, cfg, device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"iterations": iterations, "lean_convolutions": lean, "seconds": seconds, "s_per_iteration": seconds / iterations,
            "iterations_per_s": iterations / seconds, "objective": results[0].objective,
            "notes": sorted({n for r in results for n in r.notes})}


def part_speed(args: argparse.Namespace) -> dict[str, Any]:
    """ResNet-18 B=1 iterations/s: eager, then CUDA graph (projected and, budget allowing, measured)."""
    obs = _victims(1, args.device, args.model)
    out: dict[str, Any] = {"model": args.model, "batch": 1, "device": args.device}
    _timed(obs, 2, args.device, cuda_graph=False)  # warm-up: CUDA context, kernels, allocator
    out["eager"] = _timed(obs, args.probe_iterations, args.device, cuda_graph=False)
    graph = args.device.startswith("cuda")
    out["graph_probe"] = _timed_or_eager(obs, args.probe_iterations, args.device, cuda_graph=graph)
    graph = graph and "cuda_graph_error" not in out["graph_probe"]
    rate, lean = out["graph_probe"]["iterations_per_s"], False
    try:  # the same with convolutions that skip the unneeded weight gradient (fewer FLOPs)
        out["graph_lean_probe"] = _timed_or_eager(obs, args.probe_iterations, args.device, graph, lean=True)
        if out["graph_lean_probe"]["iterations_per_s"] > rate and "cuda_graph_error" not in out["graph_lean_probe"]:
            rate, lean = out["graph_lean_probe"]["iterations_per_s"], True
    except Exception as err:  # noqa: BLE001 - reported, the check goes on without them
        out["graph_lean_probe"] = {"error": f"{type(err).__name__}: {err}"[:2000]}
    out["projected_s_for_24000"] = TARGET_ITERATIONS / rate
    fits = int(rate * args.budget_speed * 0.5)
    n = min(args.iterations, max(args.probe_iterations, fits))
    out["graph_full"] = _timed_or_eager(obs, n, args.device, cuda_graph=graph, lean=lean)
    full = out["graph_full"]
    out["s_for_24000"] = full["seconds"] * TARGET_ITERATIONS / n  # measured when n == 24,000
    out["target_met"] = n == TARGET_ITERATIONS and full["seconds"] < 60
    return out


def part_victims(args: argparse.Namespace) -> dict[str, Any]:
    """Seconds per iteration of V victims batched vs one victim (same attack, same model)."""
    graph = args.device.startswith("cuda")
    observations = _victims(args.victims, args.device, args.model)
    _timed(observations, 2, args.device, cuda_graph=False)  # warm-up (allocations of the large problem)
    _timed(observations[:1], 2, args.device, cuda_graph=False)
    one = _timed_or_eager(observations[:1], args.victim_iterations, args.device, cuda_graph=graph)
    many = _timed_or_eager(observations, args.victim_iterations, args.device, cuda_graph=graph)
    return {"victims": args.victims, "one": one, "batched": many,
            "ratio": many["s_per_iteration"] / one["s_per_iteration"],
            "per_victim_speedup": args.victims * one["s_per_iteration"] / many["s_per_iteration"]}


def _synthetic_npz(path: Path, n_train: int, n_test: int) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    low = rng.random((n_train + n_test, 4, 4, 3))
    images = (np.kron(low, np.ones((1, 8, 8, 1))) * 255).astype(np.uint8)  # blocky 32x32 images
    labels = rng.integers(0, 10, n_train + n_test)
    np.savez(path, x_train=images[:n_train], y_train=labels[:n_train], x_test=images[n_train:],
             y_test=labels[n_train:])


def part_federation(args: argparse.Namespace) -> dict[str, Any]:
    """A Ray federation with fractional client GPUs; the server attacks two victims on the GPU."""
    work = Path(tempfile.mkdtemp(prefix="gpu-check-fed-"))
    data = work / "synthetic.npz"
    _synthetic_npz(data, n_train=args.clients * 20, n_test=200)
    gpu = args.device.startswith("cuda")
    sets = [
        "data.dataset=npz", f"data.path={data}", "data.partition=iid", f"model.name={args.model}", f"federation.num_clients={args.clients}",
        "federation.rounds=1", "training.algorithm=fedsgd", "training.batch_size=1",
        "attack.name=inverting_gradients", "attack.rounds=[1]", "attack.victims=2", "attack.threat.labels=true",
        f"attack.gia.iterations={args.fed_iterations}", "training.model_mode=eval",
        "evaluation.test_samples=200", f"resources.client_gpus={0.1 if gpu else 0}",
        f"resources.client_device={'cuda' if gpu else 'cpu'}", f"resources.device={'cuda' if gpu else 'cpu'}",
    ]
    if gpu:
        sets.append("attack.gia.cuda_graph=true")
    cmd = [sys.executable, "-m", "fl_privacy.launch.cli", "run", "--backend", args.backend, "--out", str(work / "run"),
           *[f"--set={s}" for s in sets]]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(10, args.budget_federation - 15))
    wall = time.perf_counter() - start
    out: dict[str, Any] = {"clients": args.clients, "backend": args.backend, "client_gpus": 0.1 if gpu else 0,
                           "wall_s": wall, "returncode": proc.returncode, "command": " ".join(cmd)}
    victims_file = work / "run" / "victims.jsonl"
    if victims_file.exists():
        rows = [json.loads(line) for line in victims_file.read_text().splitlines() if line.strip()]
        out["attacks"] = [{k: r.get(k) for k in ("partition_id", "psnr_mean", "ssim_mean", "seconds",
                                                  "seconds_per_iteration", "iterations")} for r in rows]
    if proc.returncode:
        out["stderr_tail"] = proc.stderr[-3000:]
    return out


PARTS = {"speed": part_speed, "victims": part_victims, "federation": part_federation}


def _run_part(name: str, args: argparse.Namespace, budget: float) -> dict[str, Any]:
    """Run one part in a child process under a hard time limit."""
    result_file = Path(tempfile.mkstemp(prefix=f"gpu-check-{name}-", suffix=".json")[1])
    cmd = [sys.executable, __file__, "--part", name, "--result", str(result_file), *sys.argv[1:]]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=budget)
        status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
        tail = proc.stderr[-2000:] if proc.returncode else ""
    except subprocess.TimeoutExpired:
        status, tail = f"stopped at its {budget:.0f} s budget", ""
    out: dict[str, Any] = {"status": status, "wall_s": time.perf_counter() - start}
    if result_file.exists() and result_file.stat().st_size:
        out.update(json.loads(result_file.read_text()))
    if tail:
        out["stderr_tail"] = tail
    return out


def _markdown(report: dict[str, Any]) -> str:
    lines = [f"# gpu_check ({report['device']}, {report['gpu_name']})", "",
             f"Command: `{report['command']}`", "", "| part | measurement | value |", "|---|---|---|"]
    speed = report["parts"].get("speed", {})
    if "graph_full" in speed:
        for key, label in (("eager", "eager"), ("graph_full", "CUDA graph" if report["gpu"] else "eager (no GPU)")):
            r = speed[key]
            label += ", lean convolutions" if r.get("lean_convolutions") else ""
            lines.append(f"| speed | {speed['model']} B=1 {label}: iterations/s ({r['iterations']} iterations) | "
                         f"{r['iterations_per_s']:.1f} |")
        lines.append(f"| speed | seconds for 24,000 iterations (target < 60) | {speed['s_for_24000']:.1f} |")
    victims = report["parts"].get("victims", {})
    if "ratio" in victims:
        lines.append(f"| victims | s/iteration, 1 victim | {victims['one']['s_per_iteration']:.4f} |")
        lines.append(f"| victims | s/iteration, {victims['victims']} victims batched | "
                     f"{victims['batched']['s_per_iteration']:.4f} |")
        lines.append(f"| victims | ratio batched / one (target <= 6 for 16) | {victims['ratio']:.2f} |")
    fed = report["parts"].get("federation", {})
    if "wall_s" in fed and "clients" in fed:
        lines.append(f"| federation | {fed['clients']} clients, {fed['backend']}, client_gpus {fed['client_gpus']}: wall s "
                     f"(exit {fed['returncode']}) | {fed['wall_s']:.1f} |")
        for a in fed.get("attacks", []):
            lines.append(f"| federation | attack on client {a['partition_id']}: PSNR dB / s per iteration | "
                         f"{a['psnr_mean']:.2f} / {a['seconds_per_iteration']:.4f} |")
    lines += ["", "| part | status | wall s |", "|---|---|---|"]
    lines += [f"| {k} | {v['status']} | {v['wall_s']:.1f} |" for k, v in report["parts"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out")
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: a plumbing check (CPU test)")
    parser.add_argument("--parts", nargs="*", default=list(PARTS), choices=list(PARTS))
    parser.add_argument("--model", default="resnet18", help="model of every part (the targets are for resnet18)")
    parser.add_argument("--iterations", type=int, default=TARGET_ITERATIONS)
    parser.add_argument("--probe-iterations", type=int, default=300)
    parser.add_argument("--victims", type=int, default=64)
    parser.add_argument("--victim-iterations", type=int, default=200)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--fed-iterations", type=int, default=200)
    parser.add_argument("--backend", choices=("ray", "inprocess"), default="ray")
    parser.add_argument("--budget-speed", type=float, default=170.0, help="hard limit of the speed part, s")
    parser.add_argument("--budget-victims", type=float, default=100.0, help="hard limit of the victims part, s")
    parser.add_argument("--budget-federation", type=float, default=170.0, help="hard limit of the federation part, s")
    parser.add_argument("--part", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.tiny:
        args.iterations, args.probe_iterations, args.victims, args.victim_iterations = 4, 2, 2, 2
        args.clients, args.fed_iterations = 3, 2
    if args.part:  # child: one part, result to a file
        Path(args.result).write_text(json.dumps(PARTS[args.part](args), default=str))
        return
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device is visible: use --device cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    budgets = {"speed": args.budget_speed, "victims": args.budget_victims, "federation": args.budget_federation}
    report: dict[str, Any] = {
        "device": args.device, "gpu": args.device.startswith("cuda"), "torch": torch.__version__,
        "gpu_name": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "none",
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "parts": {},
    }
    for name in args.parts:
        report["parts"][name] = _run_part(name, args, budgets[name])
        print(f"{name}: {report['parts'][name]['status']} in {report['parts'][name]['wall_s']:.1f} s", flush=True)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "gpu_check.md").write_text(_markdown(report))
    print(_markdown(report))


if __name__ == "__main__":
    main()
