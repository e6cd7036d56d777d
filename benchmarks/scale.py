"""Scale check: wall time and memory of one federated round vs the number of clients.

    python benchmarks/scale.py --clients 30 100 300 --backend ray

Runs ``fl-privacy run`` (small CNN, CIFAR-10, Dirichlet, 1 round) per client
count in a subprocess and samples /proc every 0.2 s for the resident memory of
the server process and of the whole process tree (Ray workers included).
Targets: server memory roughly flat in the number of clients (only victims are
recorded, replies are folded into a running mean).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree(root: int) -> set[int]:
    """Descendants of ``root`` plus every process of the same session (Ray daemons reparent)."""
    children: dict[int, list[int]] = {}
    sessions: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid = int(entry.name)
            children.setdefault(int(fields[1]), []).append(pid)
            sessions[pid] = int(fields[3])
    found, stack = set(), [root]
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.add(pid)
            stack += children.get(pid, [])
    sid = sessions.get(root)
    return found | {p for p, s in sessions.items() if s == sid}


def measure(clients: int, backend: str, rounds: int, extra: list[str]) -> dict[str, float]:
    out = Path(tempfile.mkdtemp(prefix=f"scale-{clients}-"))
    cmd = [sys.executable, "-m", "fl_privacy.launch.cli", "run", "--backend", backend, "--out", str(out / "run"),
           f"--set=federation.num_clients={clients}", f"--set=federation.rounds={rounds}",
           "--set=attack.rounds=1", "--set=attack.victims=2", "--set=evaluation.test_samples=2000", *extra]
    start = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    peak_server = peak_total = 0
    while proc.poll() is None:
        peak_server = max(peak_server, _rss_kib(proc.pid))
        peak_total = max(peak_total, sum(_rss_kib(p) for p in _tree(proc.pid)))
        time.sleep(0.2)
    wall = time.time() - start
    if proc.returncode:
        raise SystemExit(f"run failed ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
    return {"clients": clients, "wall_s": wall, "server_peak_mib": peak_server / 1024, "tree_peak_mib": peak_total / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[30, 100, 300])
    parser.add_argument("--backend", choices=("inprocess", "ray"), default="ray")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], help="extra config overrides")
    args = parser.parse_args()
    os.environ.setdefault("FLWR_LOG_LEVEL", "WARNING")
    print(f"| clients | wall s | server peak RSS MiB | process tree peak RSS MiB |  (backend {args.backend})")
    print("|---|---|---|---|")
    for n in args.clients:
        r = measure(n, args.backend, args.rounds, [f"--set={s}" for s in args.set])
        print(f"| {n} | {r['wall_s']:.1f} | {r['server_peak_mib']:.0f} | {r['tree_peak_mib']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
