"""What one ClientApp message costs before training, in a fresh process.

Flower's Deployment Engine (and `flwr run` on a real SuperLink) starts a new
`flwr-clientapp` process for every message, so this is paid per client per round:

    python benchmarks/clientapp_startup.py            # the default run config (CIFAR-10, Dirichlet, 10 clients)
    python benchmarks/clientapp_startup.py --repeat 3 # several fresh processes

Each repeat is a new interpreter; the first one may also decode the dataset into
$FL_PRIVACY_CACHE and store the partitions there (later processes read both from disk).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

_CHILD = """
import time
t0 = time.time()
import torch
t1 = time.time()
import clients.client_app
from fl_privacy.config import build_config
from fl_privacy.federation.run_setup import cached_setup, victim_steps
t2 = time.time()
config = build_config({}, {})
setup = cached_setup(config.model_dump_json())
t3 = time.time()
setup.new_model(); victim_steps(setup, 1, 0)
t4 = time.time()
print(f"import torch {t1 - t0:.2f} s | app imports {t2 - t1:.2f} s | data + partitions {t3 - t2:.2f} s | "
      f"model + schedule {t4 - t3:.2f} s | total {t4 - t0:.2f} s")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    print(f"load average {os.getloadavg()[0]:.2f}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"{os.cpu_count()} CPUs")
    for _ in range(args.repeat):
        subprocess.run([sys.executable, "-c", _CHILD], env=env, check=True, cwd=root)


if __name__ == "__main__":
    main()
