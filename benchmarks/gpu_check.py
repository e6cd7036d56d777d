"""One script a GPU machine runs in under 8 minutes: attack speed, victim batching, a Ray federation.

    python benchmarks/gpu_check.py --out results/            # on a GPU machine (default --out: $OUT)
    python benchmarks/gpu_check.py --device cpu --tiny       # plumbing check on a CPU (the test runs this)

Parts, each in its own process with a hard time limit (a part that runs out is reported with what it
saved so far, not hung), in this order:

* ``variants``, ``restarts``, ``quality``: see ``benchmarks/gpu_speed.py`` (engine variants' iterations/s,
  8 restarts vs 1, PSNR/SSIM of float32 vs tf32 vs bf16 on photographs). The later parts use the fastest
  variant found (``--variant`` to choose one).
* ``victims``: the same attack on 16 and ``--victims`` victims of one global model batched into one
  problem vs one victim: seconds per iteration of each and their ratio (target: 16 <= 6x one).
* ``speed``: ResNet-18, one 32x32 image (FedSGD batch 1), ``inverting_gradients`` with labels known,
  eval mode, CUDA graph: ``--iterations`` (24,000) when the measured rate says they fit the part's
  budget, else as many as fit, everything counted (compile, capture). Target: 24,000 in under 60 s on
  an H100/H200-class GPU.
* ``federation``: ``fl-privacy run --backend ray`` with ``--clients`` clients on fractional GPUs
  (``resources.client_gpus 0.1``), one round, the server attacking two victims on the GPU.

Images are synthetic (smooth random images; an .npz for the federation) or scikit-image's bundled
photographs (``quality``), so nothing needs downloading.
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
sys.path.insert(0, str(ROOT / "benchmarks"))  # its sibling gpu_speed.py
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def _victims(n: int, device: str, model_name: str = "resnet18", size: int = 32):
    """``n`` FedSGD gradients (one smooth random image each) of one untrained model, as the server sees them."""
    import torch
    import torch.nn.functional as F
    from gpu_speed import gradient_observations

    gen = torch.Generator().manual_seed(1)
    images = [(F.interpolate(torch.rand(1, 3, 4, 4, generator=gen), size=(size, size), mode="bilinear")[0] - 0.5)
              / 0.25 for _ in range(n)]
    return gradient_observations(images, model_name)


def part_speed(args: argparse.Namespace) -> dict[str, Any]:
    """ResNet-18 B=1: up to 24,000 iterations of the fastest variant (``variants``), everything counted."""
    from gpu_speed import VARIANTS, attack_seconds

    obs = _victims(1, args.device, args.model)
    variant = VARIANTS.get(args.variant, {"batching": "vmap"})
    n = args.iterations
    if args.variant_rate:  # as many as fit in half the part's budget (compilation and capture come on top)
        n = min(n, max(args.probe_iterations, int(args.variant_rate * args.budget_speed * 0.5)))
    seconds, results = attack_seconds(obs, n, variant, args.device)
    out: dict[str, Any] = {"model": args.model, "batch": 1, "device": args.device, "variant": args.variant or "vmap",
                           "iterations": n, "seconds": seconds, "iterations_per_s": n / seconds,
                           "objective": results[0].objective, "notes": results[0].notes}
    out["s_for_24000"] = seconds * TARGET_ITERATIONS / n  # measured when n == 24,000
    out["target_met"] = n == TARGET_ITERATIONS and seconds < 60
    return out


def part_victims(args: argparse.Namespace) -> dict[str, Any]:
    """Seconds per iteration of 16 and ``--victims`` victims batched vs one victim (same attack, same model)."""
    from gpu_speed import VARIANTS, per_iteration

    variant = VARIANTS.get(args.variant, {"batching": "vmap"})
    short, long = (2, 4) if args.tiny else (20, args.victim_iterations)
    observations = _victims(args.victims, args.device, args.model)
    one = per_iteration(observations[:1], variant, args.device, short, long)
    out: dict[str, Any] = {"variant": args.variant or "vmap", "one": one}
    for n in sorted({min(16, args.victims), args.victims}):
        many = per_iteration(observations[:n], variant, args.device, short, long)
        out[str(n)] = {"batched": many, "ratio": many["s_per_iteration"] / one["s_per_iteration"]}
        Path(args.result).write_text(json.dumps(out, default=str))
    return out


def part_variants(args: argparse.Namespace) -> dict[str, Any]:
    import gpu_speed

    return gpu_speed.part_variants(args, _victims)


def part_restarts(args: argparse.Namespace) -> dict[str, Any]:
    import gpu_speed

    return gpu_speed.part_restarts(args, _victims, args.variant_float32 or "vmap float32")


def part_quality(args: argparse.Namespace) -> dict[str, Any]:
    import gpu_speed

    return gpu_speed.part_quality(args)


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
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(10, args.budget_federation - 15), check=False)
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


PARTS = {"variants": part_variants, "restarts": part_restarts, "victims": part_victims, "quality": part_quality,
         "speed": part_speed, "federation": part_federation}


def _run_part(name: str, args: argparse.Namespace, budget: float, extra: list[str]) -> dict[str, Any]:
    """Run one part in a child process under a hard time limit (what it saved so far is kept if it runs out)."""
    result_file = Path(tempfile.mkstemp(prefix=f"gpu-check-{name}-", suffix=".json")[1])
    cmd = [sys.executable, __file__, "--part", name, "--result", str(result_file), *sys.argv[1:], *extra]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=budget, check=False)
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
    parts = report["parts"]
    for name, r in parts.get("variants", {}).get("variants", {}).items():
        value = f"{r['iterations_per_s']:.1f} (first call {r['first_call_s']:.1f} s)" if "iterations_per_s" in r \
            else f"error: {r.get('error', '')[:120]}"
        lines.append(f"| variants | {report['model']} B=1 {name}, CUDA graph: iterations/s | {value} |")
    restarts = parts.get("restarts", {})
    if "ratio" in restarts:
        lines.append(f"| restarts | 8 restarts / 1 per iteration ({restarts['variant']}; target <= 3) | "
                     f"{restarts['ratio']:.2f} |")
    victims = parts.get("victims", {})
    for key, r in victims.items():
        if isinstance(r, dict) and "ratio" in r:
            lines.append(f"| victims | {key} victims batched / 1 per iteration ({victims['variant']}; target <= 6 "
                         f"for 16) | {r['ratio']:.2f} |")
    quality = parts.get("quality", {})
    for precision in ("float32", "tf32", "bf16"):
        if precision in quality:
            q = quality[precision]
            lines.append(f"| quality | {quality['victims']} photographs, {quality['iterations']} iterations, "
                         f"{precision}: PSNR / SSIM | {q['psnr_mean']:.2f} / {q['ssim_mean']:.3f} |")
    for precision in ("tf32", "bf16"):
        d = quality.get(f"{precision}_minus_float32_psnr")
        if d:
            lines.append(f"| quality | {precision} - float32 PSNR, paired: mean [min, max] (Wilcoxon p) | "
                         f"{d['mean']:+.2f} [{d['min']:+.2f}, {d['max']:+.2f}] ({d['wilcoxon_p']}) |")
    speed = parts.get("speed", {})
    if "seconds" in speed:
        lines.append(f"| speed | {speed['model']} B=1 {speed['variant']}: {speed['iterations']} iterations, s "
                     f"(compile and capture counted) | {speed['seconds']:.1f} |")
        lines.append(f"| speed | seconds for 24,000 iterations (target < 60) | {speed['s_for_24000']:.1f} |")
    fed = parts.get("federation", {})
    if "wall_s" in fed and "clients" in fed:
        lines.append(f"| federation | {fed['clients']} clients, {fed['backend']}, client_gpus {fed['client_gpus']}: wall s "
                     f"(exit {fed['returncode']}) | {fed['wall_s']:.1f} |")
        for a in fed.get("attacks", []):
            lines.append(f"| federation | attack on client {a['partition_id']}: PSNR dB / s per iteration | "
                         f"{a['psnr_mean']:.2f} / {a['seconds_per_iteration']:.4f} |")
    lines += ["", "| part | status | wall s |", "|---|---|---|"]
    lines += [f"| {k} | {v['status']} | {v['wall_s']:.1f} |" for k, v in parts.items()]
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
    parser.add_argument("--quality-victims", type=int, default=8)
    parser.add_argument("--quality-iterations", type=int, default=1000)
    parser.add_argument("--budget-variants", type=float, default=170.0, help="hard limit of the variants part, s")
    parser.add_argument("--budget-restarts", type=float, default=45.0, help="hard limit of the restarts part, s")
    parser.add_argument("--budget-victims", type=float, default=75.0, help="hard limit of the victims part, s")
    parser.add_argument("--budget-quality", type=float, default=100.0, help="hard limit of the quality part, s")
    parser.add_argument("--budget-speed", type=float, default=130.0, help="hard limit of the speed part, s")
    parser.add_argument("--budget-federation", type=float, default=170.0, help="hard limit of the federation part, s")
    parser.add_argument("--variant", default=None, help="engine variant of speed/victims (default: the fastest "
                        "the variants part found, else vmap float32)")
    parser.add_argument("--variants", nargs="*", default=None, help="variants part: only these (names in "
                        "gpu_speed.VARIANTS)")
    parser.add_argument("--variant-float32", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--variant-rate", type=float, default=None, help=argparse.SUPPRESS)
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
    budgets = {name: getattr(args, f"budget_{name}") for name in PARTS}
    report: dict[str, Any] = {
        "device": args.device, "gpu": args.device.startswith("cuda"), "torch": torch.__version__,
        "gpu_name": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "none",
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "model": args.model, "parts": {},
    }
    extra: list[str] = []
    for name in args.parts:
        report["parts"][name] = _run_part(name, args, budgets[name], extra)
        found = report["parts"][name]
        if name == "variants" and found.get("best_variant") and not args.variant:  # the later parts use the fastest
            best = found["best_variant"]
            extra = ["--variant", best, "--variant-rate", str(found["variants"][best]["iterations_per_s"])]
            if found.get("best_float32_variant"):
                extra += ["--variant-float32", found["best_float32_variant"]]
        print(f"{name}: {report['parts'][name]['status']} in {report['parts'][name]['wall_s']:.1f} s", flush=True)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "gpu_check.md").write_text(_markdown(report))
    print(_markdown(report))


if __name__ == "__main__":
    main()
