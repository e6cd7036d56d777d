"""How fast one GIA-O iteration is, how far from the machine's compute limit, and how batching scales.

    OMP_NUM_THREADS=1 python benchmarks/attack_speed.py                  # CPU, one thread
    python benchmarks/attack_speed.py --device cuda --iterations 50      # GPU

For ConvNet-64 and ResNet-18 (CIFAR-10 shape, untrained, eval mode; FedSGD; ``inverting_gradients``,
labels known) at batch 1 and batch 8: seconds per iteration (median over ``--repeats`` timed runs of
``--iterations`` each, after a warm-up; an attack of 1 iteration is subtracted so set-up and final
scoring do not count; CPU: the process's CPU time, so other jobs on the machine do not inflate it), FLOPs per iteration counted with ``torch.utils.flop_counter``
(forward, parameter gradient with ``create_graph``, image gradient), the achieved GFLOP/s, and the
machine's own peak measured in the same run (a large matmul and a large 3x3 convolution, same threads).
Then the scaling of batched problems, every pair timed alternately so both see the same load:
8 restarts vs 1 restart, and 16 victims (different images, one global model) vs 1 victim, per
iteration. Targets (printed, not enforced): 8 restarts <= 3x one restart; 16 victims <= 6x one victim.
Images are synthetic (smooth random); speed does not depend on their content.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fl_privacy.attacks.gia import preset  # noqa: E402
from fl_privacy.attacks.gia.engine import reconstruct_victims  # noqa: E402
from fl_privacy.attacks.gia.problem import GIAProblem  # noqa: E402
from fl_privacy.attacks.threat import Observation  # noqa: E402
from fl_privacy.models import build_model  # noqa: E402

MODELS = {"convnet64": ("convnet", {"width": 64}), "resnet18": ("resnet18", {}), "lenet": ("lenet", {}),
          "convnet16": ("convnet", {"width": 16})}
ENGINES = {"vmap (before)": {"batching": "vmap"}, "default": {}, "lean convolutions": {"lean_convolutions": True},
           "compile": {"compile": True}}
"""Engine name -> GIAConfig options (``compile``: the first, warm-up call pays the compilation)."""


def victims(model_key: str, n: int, batch: int, size: int = 32) -> list[Observation]:
    """``n`` FedSGD gradients of ``batch`` smooth random images each, of one untrained model."""
    name, options = MODELS[model_key]
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, in_channels=3, image_size=size, **options).eval()
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    buffers = {k: b.detach().clone() for k, b in model.named_buffers()}
    gen = torch.Generator().manual_seed(1)
    out = []
    for v in range(n):
        x = F.interpolate(torch.rand(batch, 3, 4, 4, generator=gen), size=(size, size), mode="bilinear")
        y = torch.arange(v * batch, (v + 1) * batch) % 10
        grads = torch.autograd.grad(F.cross_entropy(model((x - 0.5) / 0.25), y), list(model.parameters()))
        out.append(Observation(model=model, global_params=params, global_buffers=buffers,
                               update={k: g.detach() for k, g in zip(params, grads)}, kind="gradient",
                               image_shape=(3, size, size), num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3,
                               num_examples=batch, batch_size=batch, labels=y))
    return out


def config(iterations: int, restarts: int = 1, cuda_graph: bool = False, **options):  # noqa: ANN201
    return preset("inverting_gradients", labels="known", model_mode="eval", iterations=iterations,
                  restarts=restarts, cuda_graph=cuda_graph, **options)


def _attack_seconds(observations, cfg, device: str) -> float:  # noqa: ANN001
    """One whole attack call: on a CPU the process's CPU time (one thread: the compute, unaffected by other
    jobs sharing the machine), on a GPU wall time."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        start = time.perf_counter()
        reconstruct_victims(observations, cfg, device=device)
        torch.cuda.synchronize()
        return time.perf_counter() - start
    start = time.process_time()
    reconstruct_victims(observations, cfg, device=device)
    return time.process_time() - start


def seconds_per_iteration(observations, cfg, device: str) -> float:  # noqa: ANN001
    """(attack of 1 + n iterations - attack of 1 iteration) / n: the set-up and final scoring cancel."""
    from dataclasses import replace

    short = _attack_seconds(observations, replace(cfg, iterations=1), device)
    long = _attack_seconds(observations, replace(cfg, iterations=1 + cfg.iterations), device)
    return max(long - short, 0.0) / cfg.iterations


def flops_per_iteration(observations, cfg, device: str) -> int:  # noqa: ANN001
    """FLOPs of one attack iteration: candidate update (forward + parameter gradient), distance, image gradient."""
    from torch.utils.flop_counter import FlopCounterMode

    problem = GIAProblem(observations, cfg, device)
    rows = len(observations) * cfg.restarts
    x = torch.randn(rows, problem.batch_size, *observations[0].image_shape, device=device, requires_grad=True)
    y = torch.stack([o.labels for o in observations]).repeat_interleave(cfg.restarts, 0).to(device)
    with FlopCounterMode(display=False) as counter:
        total, _ = problem.evaluate(x, y)
        total.sum().backward()
    return counter.get_total_flops()


def peak_gflops(device: str, seconds: float = 1.0) -> dict[str, float]:
    """This machine's throughput on a large matmul and a large 3x3 convolution (same device and threads)."""
    clock = time.perf_counter if device.startswith("cuda") else time.process_time  # as seconds_per_iteration

    def rate(fn, flops: float) -> float:  # noqa: ANN001
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start, n = clock(), 0
        while clock() - start < seconds:
            fn()
            n += 1
            if device.startswith("cuda"):
                torch.cuda.synchronize()
        return flops * n / (clock() - start) / 1e9

    size = 4096 if device.startswith("cuda") else 1024
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    img, w = torch.randn(8, 256, 32, 32, device=device), torch.randn(256, 256, 3, 3, device=device)
    conv_flops = 2 * 8 * 256 * 32 * 32 * 256 * 9
    return {"matmul": rate(lambda: a @ b, 2 * size**3), "conv3x3": rate(lambda: F.conv2d(img, w, padding=1), conv_flops)}


def paired(first, second, repeats: int) -> tuple[float, float]:  # noqa: ANN001
    """Medians of two timings measured alternately (both see the same load)."""
    a, b = [], []
    for _ in range(repeats):
        a.append(first())
        b.append(second())
    return statistics.median(a), statistics.median(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--iterations", type=int, default=3, help="iterations per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    parser.add_argument("--models", nargs="*", default=["convnet64", "resnet18"], choices=list(MODELS))
    parser.add_argument("--restarts", type=int, default=8)
    parser.add_argument("--victims", type=int, default=16)
    parser.add_argument("--cuda-graph", action="store_true", help="GPU: replay each iteration as a CUDA graph")
    parser.add_argument("--engines", nargs="*", default=list(ENGINES), choices=list(ENGINES))
    parser.add_argument("--batches", nargs="*", type=int, default=[1, 8])
    parser.add_argument("--no-scaling", action="store_true", help="skip the restarts / victims scaling table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dev = args.device
    graph = args.cuda_graph
    print(f"device {dev}, torch {torch.__version__}, threads {torch.get_num_threads()} "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}), {args.iterations} iterations x "
          f"{args.repeats} runs per timing (median)\n")
    peak = peak_gflops(dev)
    print(f"peak in this run: matmul {peak['matmul']:.1f} GFLOP/s, 3x3 conv (8x256x32x32) {peak['conv3x3']:.1f} GFLOP/s\n")
    print("| model | batch | engine | s/iteration | GFLOP/iteration | GFLOP/s | % of conv peak | % of matmul peak |")
    print("|---|---|---|---|---|---|---|---|")
    engines = {name: ENGINES[name] for name in args.engines}
    for key in args.models:
        for batch in args.batches:
            obs = victims(key, 1, batch)
            for engine, options in engines.items():
                cfg = config(args.iterations, cuda_graph=graph, **options)
                seconds_per_iteration(obs, config(1, **options), dev)  # warm-up
                t = statistics.median(seconds_per_iteration(obs, cfg, dev) for _ in range(args.repeats))
                flops = flops_per_iteration(obs, cfg, dev)
                rate = flops / t / 1e9
                print(f"| {key} | {batch} | {engine} | {t:.4f} | {flops / 1e9:.2f} | {rate:.1f} | "
                      f"{100 * rate / peak['conv3x3']:.0f}% | {100 * rate / peak['matmul']:.0f}% |", flush=True)
    if args.no_scaling:
        return
    print("\n| model | scaling (batch 1) | one s/it | batched s/it | ratio | target |")
    print("|---|---|---|---|---|---|")
    for key in args.models:
        obs = victims(key, args.victims, 1)
        one_r, many_r = paired(lambda: seconds_per_iteration(obs[:1], config(args.iterations, 1, graph), dev),
                               lambda: seconds_per_iteration(obs[:1], config(args.iterations, args.restarts, graph), dev),
                               args.repeats)
        print(f"| {key} | {args.restarts} restarts vs 1 | {one_r:.4f} | {many_r:.4f} | {many_r / one_r:.2f}x | "
              f"<= 3x: {'met' if many_r / one_r <= 3 else 'not met'} |", flush=True)
        if not dev.startswith("cuda"):  # the vmap path, for comparison (the default on a GPU)
            one_v, many_v = paired(
                lambda: seconds_per_iteration(obs[:1], config(args.iterations, 1, graph, batching="vmap"), dev),
                lambda: seconds_per_iteration(obs[:1], config(args.iterations, args.restarts, graph, batching="vmap"),
                                              dev), args.repeats)
            print(f"| {key} | {args.restarts} restarts vs 1 (vmap) | {one_v:.4f} | {many_v:.4f} | "
                  f"{many_v / one_v:.2f}x | <= 3x: {'met' if many_v / one_v <= 3 else 'not met'} |", flush=True)
        one_v, many_v = paired(lambda: seconds_per_iteration(obs[:1], config(args.iterations, 1, graph), dev),
                               lambda: seconds_per_iteration(obs, config(args.iterations, 1, graph), dev),
                               args.repeats)
        print(f"| {key} | {args.victims} victims vs 1 | {one_v:.4f} | {many_v:.4f} | {many_v / one_v:.2f}x | "
              f"<= 6x: {'met' if many_v / one_v <= 6 else 'not met'} |", flush=True)


if __name__ == "__main__":
    main()
